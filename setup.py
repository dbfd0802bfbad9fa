"""Package discovery for xfd.

`kernels/` is installed as `xfd.kernels` (ARCHITECTURE: no top-level `kernels` module that could collide with
other packages). pyproject.toml cannot combine automatic discovery with that mapping, so it lives here.
"""

from setuptools import find_packages, setup

library_packages = find_packages(include=["xfd", "xfd.*"])
kernel_packages = ["xfd.kernels"] + ["xfd.kernels." + name for name in find_packages("kernels")]

setup(
    packages=library_packages + kernel_packages,
    package_dir={"xfd": "xfd", "xfd.kernels": "kernels"},
)
