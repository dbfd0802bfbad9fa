"""Benchmark: blocked distance + exact top-k as a fraction of this machine's plain matrix-multiply rate.

Baselines measured in the same run on the same shapes: (a) the same blocked GEMM with nothing else, (b) one
unblocked matmul of the whole (q, d) × (d, g) product. The fused kernel's rate counts the 2·q·g·d flops of the
distances it covers. The symmetric all-vs-all graph is reported as an effective rate (it computes half the
blocks, so it can exceed 100%).

    python bench/distance.py                         # q = 4096, g = 32768, d = 1024, k = 30, CPU
    python bench/distance.py --device cuda --queries 16384 --gallery 262144
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from xfd.kernels.backend import module_for_device
from xfd.kernels.graph import default_block_size, knn_graph, knn_rows


def best_times(variants: dict, xp, repeat: int) -> dict:
    """Best-of-`repeat` wall time of each variant, the variants interleaved so that load from other processes
    on a shared machine affects them alike."""
    best = {name: np.inf for name in variants}
    for _ in range(repeat):
        for name, fn in variants.items():
            _sync(xp)
            start = time.perf_counter()
            fn()
            _sync(xp)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def _sync(xp) -> None:
    if xp is not np:
        xp.cuda.Device().synchronize()


def blocked_gemm(a, b, block: int, xp) -> None:
    """The same row/column blocking as the fused pass, GEMM only."""
    buffer = xp.empty(min(block, a.shape[0]) * min(block, b.shape[0]), dtype=a.dtype)
    for r in range(0, a.shape[0], block):
        for c in range(0, b.shape[0], block):
            rows, cols = a[r : r + block], b[c : c + block]
            out = buffer[: rows.shape[0] * cols.shape[0]].reshape(rows.shape[0], -1)  # contiguous, like the fused pass
            xp.matmul(rows, cols.T, out=out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--queries", type=int, default=4096)
    p.add_argument("--gallery", type=int, default=32768)
    p.add_argument("--graph", type=int, default=16384, help="N of the symmetric all-vs-all graph (0: skip)")
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--k", type=int, default=30)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    xp = module_for_device(args.device)
    rng = np.random.default_rng(0)

    def unit(n):
        x = rng.standard_normal((n, args.dim), dtype=np.float32)
        return xp.asarray(x / np.linalg.norm(x, axis=1, keepdims=True))

    query, gallery = unit(args.queries), unit(args.gallery)
    block = default_block_size(xp)
    flops = 2.0 * args.queries * args.gallery * args.dim
    times = best_times({"blocked": lambda: blocked_gemm(query, gallery, block, xp),
                        "whole": lambda: xp.matmul(query, gallery.T),
                        "topk": lambda: knn_rows(query, gallery, args.k, "sqeuclidean")}, xp, args.repeat)
    t_blocked, t_whole, t_topk = times["blocked"], times["whole"], times["topk"]
    plain = flops / t_blocked
    print(f"{args.device}: q={args.queries} g={args.gallery} d={args.dim} k={args.k} float32, block {block}")
    print(f"  plain GEMM, blocked     {t_blocked:7.3f} s  {plain / 1e9:8.1f} GFLOP/s (baseline)")
    print(f"  plain GEMM, one matmul  {t_whole:7.3f} s  {flops / t_whole / 1e9:8.1f} GFLOP/s")
    print(f"  distance + top-{args.k}       {t_topk:7.3f} s  {flops / t_topk / 1e9:8.1f} GFLOP/s = "
          f"{100 * t_blocked / t_topk:5.1f}% of blocked GEMM, {100 * t_whole / t_topk:5.1f}% of one matmul")
    if args.graph:
        x = unit(args.graph)
        t_graph = best_times({"graph": lambda: knn_graph(x, args.k, "sqeuclidean")}, xp, args.repeat)["graph"]
        graph_flops = 2.0 * args.graph * args.graph * args.dim
        print(f"  all-vs-all graph N={args.graph}: {t_graph:7.3f} s, effective {graph_flops / t_graph / 1e9:8.1f} "
              f"GFLOP/s = {100 * graph_flops / t_graph / plain:5.1f}% of blocked GEMM (symmetry: half the blocks)")


if __name__ == "__main__":
    main()
