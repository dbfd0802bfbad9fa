"""Benchmark: streaming exact k-reciprocal re-ranking vs the dense docs/reranking.md implementation.

Each implementation runs in its own subprocess on the same synthetic features (regenerated from the seed), so
peak memory is that process's own: the peak resident set after the features exist (VmHWM, reset after generating
them where the kernel allows) and the growth above that baseline. Printed per N: time and peak-memory ratios
(dense / streaming) and agreement (max |difference|, identical top-10 rankings).

    python bench/rerank.py                                  # N = 5k, 10k, 20k with q = N/10, d = 1024
    python bench/rerank.py --sizes 2000 --dim 128           # quick
    python bench/rerank.py --sizes --large 200000 --large-query 10000   # streaming only, metrics consumer
    python bench/rerank.py --sizes --large 1010000 --large-query 10000 --device cuda --consumer none   # H200 goal
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

IDS_PER_ROW = 1 / 20  # synthetic identities: one per 20 feature rows


def _features(n: int, q: int, dim: int, noise: float, seed: int):
    from xfd.eval.synthetic import reid_features

    return reid_features(q, n - q, dim, max(2, int(n * IDS_PER_ROW)), noise=noise, seed=seed)


def _reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM); False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def worker(args) -> None:
    """One measured run; prints a JSON line."""
    data = _features(args.n, args.q, args.dim, args.noise, args.seed)
    reset = _reset_peak()
    base = _status_kib("VmRSS")
    start = time.perf_counter()
    extra = {}
    if args.worker == "dense":
        from xfd.eval.reference import dense_k_reciprocal

        out = dense_k_reciprocal(data.q_feats, data.g_feats, args.k1, args.k2, args.lam)
        elapsed = time.perf_counter() - start
        np.save(args.out, out)
    elif args.out:  # streaming, blocks appended to an .npy file (never all in memory)
        from xfd.eval.rerank import k_reciprocal_stream

        with open(args.out, "wb") as handle:
            np.lib.format.write_array_header_1_0(
                handle, {"descr": np.lib.format.dtype_to_descr(data.q_feats.dtype), "fortran_order": False,
                         "shape": (args.q, args.n - args.q)})
            for _, block in k_reciprocal_stream(data.q_feats, data.g_feats, args.k1, args.k2, args.lam,
                                                device=args.device, progress=args.progress):
                handle.write(np.ascontiguousarray(block).tobytes())
        elapsed = time.perf_counter() - start
    elif args.consumer == "none":  # re-ranking alone: blocks stay where they were computed
        from xfd.eval.rerank import k_reciprocal_stream

        last = None
        for _, block in k_reciprocal_stream(data.q_feats, data.g_feats, args.k1, args.k2, args.lam,
                                            device=args.device, progress=args.progress, to_host=False):
            last = block
        float(last[-1, -1])  # waits for the device to finish
        elapsed = time.perf_counter() - start
    else:  # streaming into the metrics, as evaluation uses it
        from xfd.eval.metrics import RankingAccumulator
        from xfd.eval.rerank import k_reciprocal_stream

        acc = RankingAccumulator(data.q_pids, data.q_camids, data.g_pids, data.g_camids)
        for indices, block in k_reciprocal_stream(data.q_feats, data.g_feats, args.k1, args.k2, args.lam,
                                                  device=args.device, progress=args.progress):
            acc.update(indices, block)
        elapsed = time.perf_counter() - start
        metrics = acc.result()
        extra = {"mAP": metrics.mAP, "rank1": metrics.rank(1)}
    peak = _status_kib("VmHWM")
    print(json.dumps({"time_s": elapsed, "peak_rss_mib": peak / 1024, "base_rss_mib": base / 1024,
                      "peak_reset": reset, **extra}))


def _run_worker(kind: str, n: int, q: int, args, out: Path | None) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--n", str(n), "--q", str(q), "--dim", str(args.dim),
           "--seed", str(args.seed), "--noise", str(args.noise), "--k1", str(args.k1), "--k2", str(args.k2), "--lambda", str(args.lam),
           "--device", args.device, "--consumer", args.consumer] + (["--out", str(out)] if out else []) + (["--progress"] if args.progress else [])
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{kind} worker failed (N={n}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _agreement(dense_path: Path, stream_path: Path) -> dict:
    dense = np.load(dense_path, mmap_mode="r")
    stream = np.load(stream_path, mmap_mode="r")
    max_diff, same_top10 = 0.0, 0
    for start in range(0, dense.shape[0], 256):
        a, b = np.asarray(dense[start : start + 256]), np.asarray(stream[start : start + 256])
        max_diff = max(max_diff, float(np.abs(a - b).max()))
        top_a = np.argsort(a, axis=1, kind="stable")[:, :10]
        top_b = np.argsort(b, axis=1, kind="stable")[:, :10]
        same_top10 += int((top_a == top_b).all(axis=1).sum())
    return {"max_abs_diff": max_diff, "identical_top10": same_top10 / dense.shape[0]}


def compare(n: int, args) -> None:
    q = max(1, int(round(n * args.query_fraction)))
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        dense_out, stream_out = Path(tmp) / "dense.npy", Path(tmp) / "stream.npy"
        dense = _run_worker("dense", n, q, args, dense_out)
        stream = _run_worker("stream", n, q, args, stream_out)
        agree = _agreement(dense_out, stream_out)
    growth_dense = dense["peak_rss_mib"] - dense["base_rss_mib"]
    growth_stream = stream["peak_rss_mib"] - stream["base_rss_mib"]
    print(f"N={n:>7} (q={q}, g={n - q}, d={args.dim}) | time dense {dense['time_s']:8.2f} s  streaming "
          f"{stream['time_s']:7.2f} s  speed-up {dense['time_s'] / stream['time_s']:6.1f}x | peak RSS dense "
          f"{dense['peak_rss_mib']:8.0f} MiB  streaming {stream['peak_rss_mib']:7.0f} MiB  ratio "
          f"{stream['peak_rss_mib'] / dense['peak_rss_mib']:.3f} (growth above features {growth_dense:.0f} vs "
          f"{growth_stream:.0f} MiB, ratio {growth_stream / max(growth_dense, 1e-9):.3f}) | max|diff| "
          f"{agree['max_abs_diff']:.2e}, identical top-10 {100 * agree['identical_top10']:.1f}%", flush=True)


def large(args) -> None:
    n, q = args.large, args.large_query
    run = _run_worker("stream", n, q, args, None)
    dense_gib = 4 * n * n * 4 / 2**30  # about four N×N float32 matrices (docs/reranking.md)
    scores = f" | mAP {100 * run['mAP']:.2f}%  R1 {100 * run['rank1']:.2f}%" if "mAP" in run else ""
    print(f"N={n:>7} (q={q}, g={n - q}, d={args.dim}, {args.device}, consumer {args.consumer}) | streaming "
          f"{run['time_s']:8.1f} s | peak RSS {run['peak_rss_mib'] / 1024:.2f} GiB (features alone "
          f"{run['base_rss_mib'] / 1024:.2f} GiB) | dense form would need ~{dense_gib:,.0f} GiB{scores}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="*", default=[5000, 10000, 20000], help="N = q + g per comparison")
    p.add_argument("--query-fraction", type=float, default=0.1)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--k1", type=int, default=28)
    p.add_argument("--k2", type=int, default=6)
    p.add_argument("--lambda", dest="lam", type=float, default=0.28)
    p.add_argument("--large", type=int, default=0, help="also run the streaming form alone at this N")
    p.add_argument("--large-query", type=int, default=10000)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--consumer", choices=["metrics", "none"], default="metrics",
                   help="--large run: feed the blocks to the metrics (default) or drop them (re-ranking alone)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", type=float, default=2.7,
                   help="synthetic feature noise; 2.7 gives plain-cosine mAP of about 45%% at d = 1024")
    p.add_argument("--tmp", default=None, help="folder for the compared outputs (default: system temp)")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--worker", choices=["dense", "stream"], help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--q", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    print(f"re-ranking benchmark: k1={args.k1} k2={args.k2} lambda={args.lam}, float32, {os.cpu_count()} CPU(s)")
    for n in args.sizes:
        compare(n, args)
    if args.large:
        large(args)


if __name__ == "__main__":
    main()
