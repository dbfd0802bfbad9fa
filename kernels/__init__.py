"""GPU kernels with NumPy twins, installed as `xfd.kernels`.

Importing this package never needs a GPU: CuPy is imported lazily by the functions that run on one.
"""
