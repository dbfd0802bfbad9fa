"""GPU kernels with NumPy twins, installed as `xfd.kernels`.

Importing this package never needs a GPU: CuPy is imported lazily by the functions that run on one.

Modules (each written once over an array module `xp`, NumPy or CuPy, unless it says otherwise):
- backend:    numpy/cupy selection, device resolution, host copies.
- distance:   distance blocks (squared Euclidean, cosine) from one GEMM plus an in-place epilogue.
- topk:       exact, order-free per-row top-k merge; CUDA kernel in topk.cu, NumPy twin `merge_block_numpy`;
              exact merge of partial states.
- graph:      tiled distance fused with top-k and column maxima (symmetric all-vs-all over a fixed tile grid that
              ranks and threads share, and query-vs-columns).
- reciprocal: k-reciprocal sets R(i) and their expansion R*(i) from top-k lists.
- vmatrix:    the sparse V matrix, local query expansion, the inverted index.
- jaccard:    min-intersection over inverted-index candidates (CUDA kernel in jaccard.cu, NumPy twin) and the
              final blend.
- csr, cuda_source: sparse-row container and segment helpers; NVRTC compilation of the .cu sources.
- cpu_source: the C versions of the CPU hot loops (cpu_kernels.c: tile epilogue with maxima, top-k merges, R*,
              query expansion, Jaccard blend), compiled on first use and cached; the NumPy twins run without them.
- workers:    CPU worker threads, each with a single-threaded BLAS (NumPy side only).
"""
