"""Benchmark: exact k-reciprocal re-ranking into the metrics — torchreid-style dense form, xfd on 1 rank, xfd on R
ranks and the GEMM floor side by side, with predicted against measured peak memory.

    python bench/rerank.py                  # everything below, in one run (about 13 minutes on 2 quiet cores)
    python bench/rerank.py --only floor     # N = 20k, d = 1024 (q = 2k): xfd vs the GEMM floor, 3 difficulties
    python bench/rerank.py --only dense     # N = 20k, d = 256: xfd vs the dense form (about 9 GB, 1-2 minutes)
    python bench/rerank.py --only large     # N = 200k, d = 1024 (q = 10k): 1 rank and R ranks
    python bench/rerank.py --only large --large 1010000 --device cuda --ranks 1   # the H200 goal (q=10k, g=1M)

Every run is its own subprocess on features regenerated from the seed; peak memory is that process's peak
resident set (VmHWM, reset once the features exist, so it includes them), next to the planner's prediction
(`xfd.eval.rerank_memory`). Every process holds torch (as xfd's evaluation and torchreid's re_ranking run), and the
dense comparison also prints each peak above its process's resident set at the start. R ranks are R processes of a gloo process group (as `torchrun` starts them), each
timed from a barrier to its metrics; the slowest rank's time is reported. Distances of R ranks are compared with
the 1-rank run block by block (a CRC-32 per block) and their metrics must be identical; the benchmark's own checks
(those CRCs, the copy written for the dense comparison) are timed apart and left out of the reported time.

The floor: half of one N×N GEMM plus one q×g GEMM, at this machine's BLAS rate — measured with
every BLAS thread on a warm (4096 × d)·(d × 8192) product, the fastest of 4, before and after the runs (the faster
rate is used, so the ratio errs high). Against it, xfd on 1 rank runs `--repeat` times (default 3), each in a fresh
process, and the fastest is compared: both sides are then the best of their repetitions (this machine's speed
swings by ±20 % within minutes); every run's time is printed, with a check that all gave the same distances. On a shared machine the wall-clock ratio follows the other jobs, so each run also prints its
CPU seconds (all threads, all ranks) against the floor GEMMs' CPU seconds: the ratio a quiet machine would give when
every thread keeps a core busy. Difficulties: `tidy` (xfd.eval.synthetic's clustered features), `families` (look-alike
identities: 10 identities share a family centre), `hard` (families, six camera shifts, heavy-tailed noise, uneven
identity sizes).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

KINDS = ("tidy", "families", "hard")
IDS_PER_ROW = 1 / 20  # identities: one per 20 feature rows


# --- features -------------------------------------------------------------------------------------------------

def features(kind: str, n: int, q: int, dim: int, seed: int):
    """(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids) of one difficulty, float32, L2-normalised."""
    n_ids = max(2, int(n * IDS_PER_ROW))
    if kind == "tidy":
        from xfd.eval.synthetic import reid_features

        data = reid_features(q, n - q, dim, n_ids, noise=2.7, seed=seed)
        return data.q_feats, data.g_feats, data.q_pids, data.g_pids, data.q_camids, data.g_camids
    hard = kind == "hard"
    rng = np.random.default_rng(seed)
    families = _unit(rng.standard_normal((max(1, n_ids // 10), dim)))
    ids = _unit(families[rng.integers(0, families.shape[0], n_ids)]
                + 0.6 * rng.standard_normal((n_ids, dim)) / np.sqrt(dim))
    cameras = rng.standard_normal((6 if hard else 3, dim)) * ((0.7 if hard else 0.4) / np.sqrt(dim))
    weights = rng.pareto(1.5, n_ids) + 1 if hard else np.ones(n_ids)
    weights /= weights.sum()

    def draw(count: int):
        pids = rng.choice(n_ids, count, p=weights)
        camids = rng.integers(0, cameras.shape[0], count)
        x = np.empty((count, dim), dtype=np.float32)
        for start in range(0, count, 16384):
            rows = slice(start, min(start + 16384, count))
            size = rows.stop - rows.start
            scale = 1.5 * (np.where(rng.random(size) < 0.05, 3.0, 1.0)[:, None] if hard else 1.0) / np.sqrt(dim)
            chunk = ids[pids[rows]] + cameras[camids[rows]] + scale * rng.standard_normal((size, dim))
            x[rows] = _unit(chunk)
        return x, pids, camids

    (qf, qp, qc), (gf, gp, gc) = draw(q), draw(n - q)
    return qf, gf, qp, gp, qc, gc


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# --- measured runs (subprocesses) -----------------------------------------------------------------------------

def _reset_peak() -> float:
    """Reset the peak resident set (VmHWM) to the current one; returns that, GiB."""
    with open("/proc/self/clear_refs", "w") as handle:  # resets VmHWM to the current RSS
        handle.write("5")
    return _status_gib("VmRSS:")


def _peak_gib() -> float:
    return _status_gib("VmHWM:")


def _status_gib(field: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field):
                return int(line.split()[1]) / 2**20
    raise RuntimeError(f"{field} not in /proc/self/status")


def run_floor(args) -> dict:
    """This machine's BLAS rate (all threads, warm, preallocated output) and the floor at (n, q, d)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4096, args.dim), dtype=np.float32)
    b = rng.standard_normal((8192, args.dim), dtype=np.float32)
    out = np.empty((4096, 8192), dtype=np.float32)
    best, best_cpu = np.inf, np.inf
    for _ in range(4):
        start, cpu = time.perf_counter(), time.process_time()
        np.matmul(a, b.T, out=out)
        best, best_cpu = min(best, time.perf_counter() - start), min(best_cpu, time.process_time() - cpu)
    work = 2 * 4096 * 8192 * args.dim
    flops = 2 * args.dim * (args.n * args.n / 2 + args.q * (args.n - args.q))
    return {"rate_gflops": work / best / 1e9, "floor_s": flops * best / work, "floor_cpu_s": flops * best_cpu / work}


def run_dense(args) -> dict:
    """The dense form (xfd.eval.reference, the N×N arrays as torchreid's re_ranking holds it) into the metrics."""
    from xfd.eval.metrics import evaluate_distances
    from xfd.eval.reference import dense_k_reciprocal

    import torch  # noqa: F401 - torchreid's re_ranking runs in a torch program, as xfd's evaluation does: both
    # processes hold torch (about 0.6 GiB resident), so their peaks compare like for like

    qf, gf, qp, gp, qc, gc = features(args.kind, args.n, args.q, args.dim, args.seed)
    start_gib = _reset_peak()
    start, cpu = time.perf_counter(), time.process_time()
    dist = dense_k_reciprocal(qf, gf, args.k1, args.k2, args.lam)
    metrics = evaluate_distances(dist, qp, qc, gp, gc)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    np.save(args.out, dist)
    return {"time_s": elapsed, "cpu_s": cpu, "peak_gib": _peak_gib(), "start_gib": start_gib, "mAP": metrics.mAP}


def run_xfd(args) -> dict:
    """xfd's streaming re-ranking into the metrics, as one process or as this rank of a gloo group."""
    from xfd.eval.metrics import QueryScores, RankingAccumulator
    from xfd.eval.rerank import RerankTimes, k_reciprocal_stream
    from xfd.eval.rerank_memory import blend_rows, plan
    from xfd.eval.rerank_split import keep_query_distances
    from xfd.eval.rerank_team import RankTeam, Solo
    from xfd.kernels.graph import default_block_size
    from xfd.kernels.workers import available_cpus

    import torch  # noqa: F401 - loaded as in xfd-eval and launcher/evaluate.py (and the R-rank runs' gloo group),
    # so that 1 and R ranks start from the same resident set, the one the planner counts

    world = int(os.environ.get("WORLD_SIZE", "1"))
    team = Solo()
    if world > 1:
        import datetime

        import torch.distributed as dist

        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=1))
        team = RankTeam()
    qf, gf, qp, gp, qc, gc = features(args.kind, args.n, args.q, args.dim, args.seed)
    if world > 1:
        team.gather_objects(None)  # everyone has its features: start together
    workers = max(1, available_cpus() // world)
    memory = plan(args.q, args.n - args.q, args.dim, args.k1, args.k2, qf.dtype, world, workers,
                  default_block_size(np if args.device == "cpu" else None, args.n),
                  blend_rows(args.n - args.q, qf.itemsize),
                  keep=keep_query_distances(args.q, args.n - args.q, args.dim))
    start_gib = _reset_peak()
    start, cpu = time.perf_counter(), time.process_time()
    times = RerankTimes()
    accumulator = RankingAccumulator(qp, qc, gp, gc)
    digests = {}
    checking, checking_cpu = 0.0, 0.0  # the benchmark's own checks (digests, copies): not re-ranking, subtracted
    for indices, block in k_reciprocal_stream(qf, gf, args.k1, args.k2, args.lam, device=args.device, team=team,
                                              times=times, workers=workers, to_host=args.device == "cpu"):
        if args.device == "cpu":
            accumulator.update(indices, block)
        check_start, check_cpu = time.perf_counter(), time.process_time()
        if args.device == "cpu":
            digests[int(indices[0])] = zlib.crc32(np.ascontiguousarray(block).data)  # a checksum per block
        if args.out and world == 1:
            with open(args.out, "ab") as handle:
                handle.write(np.ascontiguousarray(block).tobytes())
        checking += time.perf_counter() - check_start
        checking_cpu += time.process_time() - check_cpu
    metrics = QueryScores.merge(team.gather_objects(accumulator.queries())).metrics().to_dict() \
        if args.device == "cpu" else {}
    elapsed, cpu = time.perf_counter() - start - checking, time.process_time() - cpu - checking_cpu
    return {"rank": team.rank, "world": world, "time_s": elapsed, "cpu_s": cpu, "peak_gib": _peak_gib(),
            "start_gib": start_gib,
            "predicted_gib": memory.host_bytes / 2**30, "steps": times.steps, "digests": digests,
            "metrics": {k: v for k, v in metrics.items() if k != "cmc"}, "cmc": metrics.get("cmc")}


def _worker_main(args) -> None:
    result = {"floor": run_floor, "dense": run_dense, "xfd": run_xfd}[args.worker](args)
    print("RESULT " + json.dumps(result), flush=True)


def _spawn(kind: str, args, n: int, q: int, dim: int, difficulty: str, ranks: int = 1, out: Path | None = None):
    """Run one measured worker (or `ranks` of them as a gloo group); the list of their results."""
    cmd = [sys.executable, __file__, "--worker", kind, "--n", str(n), "--q", str(q), "--dim", str(dim),
           "--kind", difficulty, "--seed", str(args.seed), "--k1", str(args.k1), "--k2", str(args.k2),
           "--lambda", str(args.lam), "--device", args.device] + (["--out", str(out)] if out else [])
    env = dict(os.environ)
    port = _free_port()
    processes = []
    for rank in range(ranks):
        if ranks > 1:
            env = {**env, "RANK": str(rank), "WORLD_SIZE": str(ranks), "LOCAL_RANK": str(rank),
                   "LOCAL_WORLD_SIZE": str(ranks), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        processes.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for process in processes:
        stdout, stderr = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{kind} worker failed (N={n}, {ranks} rank(s)):\n{stderr[-3000:]}")
        results.append(json.loads([l for l in stdout.splitlines() if l.startswith("RESULT ")][-1][7:]))
    return results


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the report -----------------------------------------------------------------------------------------------

def floor_seconds(args, n: int, q: int, dim: int) -> tuple[float, float, float]:
    """(floor wall seconds, BLAS GFLOP/s, floor CPU seconds: the same GEMMs' CPU time over all threads)."""
    (result,) = _spawn("floor", args, n, q, dim, "tidy")
    return result["floor_s"], result["rate_gflops"], result["floor_cpu_s"]


def xfd_line(label: str, runs: list[dict], floor: float | None, floor_cpu: float | None = None) -> str:
    slowest = max(r["time_s"] for r in runs)
    cpu = sum(r["cpu_s"] for r in runs)
    cpu_ratio = f", CPU {cpu:.1f} s = {cpu / floor_cpu:.2f}x the floor's" if floor_cpu else ""
    steps = " ".join(f"{k} {v:.2f}" for k, v in runs[0]["steps"].items())
    per_rank = ", ".join(f"{r['time_s']:.2f}" for r in runs)
    memory = ", ".join(f"{r['peak_gib']:.2f}/{r['predicted_gib']:.2f}" for r in runs)
    errors = ", ".join(f"{100 * (r['predicted_gib'] / r['peak_gib'] - 1):+.0f}%" for r in runs)
    ratio = f" = {slowest / floor:.2f}x floor" if floor else ""
    score = 100 * runs[0]["metrics"].get("mAP", float("nan"))
    return (f"  {label:<12} {slowest:8.2f} s{ratio}{cpu_ratio} (per rank {per_rank}; rank 0 steps: {steps}) | peak RSS "
            f"measured/predicted {memory} GiB ({errors}) | mAP {score:.2f}%")


def same_results(one: list[dict], many: list[dict]) -> str:
    digests = {}
    for run in many:
        digests.update(run["digests"])
    same_bits = digests == one[0]["digests"]
    same_metrics = all(r["metrics"] == one[0]["metrics"] and r["cmc"] == one[0]["cmc"] for r in many)
    return f"distances identical to 1 rank: {same_bits}; metrics identical: {same_metrics}"


def _kept(q: int, g: int, dim: int) -> str:
    from xfd.eval.rerank_split import keep_query_distances

    return "kept by the graph pass" if keep_query_distances(q, g, dim) else "recomputed by the blend"


def section_floor(args) -> None:
    n, q, dim = args.n, args.q, args.dim
    print(f"\n== N={n} (q={q}, g={n - q}), d={dim}: xfd against the GEMM floor (half N×N + q×g at the BLAS rate); "
          f"query distances {_kept(q, n - q, dim)}")
    for kind in args.kinds:
        before, rate, cpu_before = floor_seconds(args, n, q, dim)
        tries = [_spawn("xfd", args, n, q, dim, kind) for _ in range(args.repeat)]
        many = _spawn("xfd", args, n, q, dim, kind, ranks=args.ranks) if args.ranks > 1 else None
        after, rate_after, cpu_after = floor_seconds(args, n, q, dim)
        floor, floor_cpu = min(before, after), min(cpu_before, cpu_after)
        one = min(tries, key=lambda runs: runs[0]["time_s"])
        print(f" {kind}: floor {floor:.2f} s, {floor_cpu:.2f} CPU-s (BLAS {max(rate, rate_after):.0f} GFLOP/s; before "
              f"{before:.2f}, after {after:.2f}); load average {os.getloadavg()[0]:.1f}")
        print(xfd_line("xfd 1 rank", one, floor, floor_cpu))
        if len(tries) > 1:
            times = ", ".join(f"{runs[0]['time_s']:.2f}" for runs in tries)
            ratios = ", ".join(f"{runs[0]['time_s'] / floor:.2f}x" for runs in tries)
            same = all(runs[0]["digests"] == tries[0][0]["digests"] for runs in tries)
            print(f"  {len(tries)} fresh runs: {times} s = {ratios} floor (the fastest above, as the floor is the fastest "
                  f"of its repetitions); distances identical in every run: {same}")
        if many:
            print(xfd_line(f"xfd {args.ranks} ranks", many, floor, floor_cpu))
            print(f"  {same_results(one, many)}")


def section_dense(args) -> None:
    n, q, dim, kind = args.n, args.q, args.dense_dim, args.dense_kind
    print(f"\n== N={n} (q={q}), d={dim}, {kind}: torchreid-style dense form against xfd (1 rank); query distances "
          f"{_kept(q, n - q, dim)}")
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        dense_out, xfd_out = Path(tmp) / "dense.npy", Path(tmp) / "xfd.bin"
        (dense,) = _spawn("dense", args, n, q, dim, kind, out=dense_out)
        one = _spawn("xfd", args, n, q, dim, kind, out=xfd_out)
        floor, _, floor_cpu = floor_seconds(args, n, q, dim)
        agree = _agreement(dense_out, xfd_out, q, n - q)
    run = one[0]
    print(f"  dense        {dense['time_s']:8.2f} s, CPU {dense['cpu_s']:.1f} s | peak RSS {dense['peak_gib']:.2f} GiB | "
          f"mAP {100 * dense['mAP']:.2f}%")
    print(xfd_line("xfd 1 rank", one, floor, floor_cpu))
    above = (run["peak_gib"] - run["start_gib"]) / (dense["peak_gib"] - dense["start_gib"])
    print(f"  speed-up {dense['time_s'] / run['time_s']:.1f}x (CPU seconds: {dense['cpu_s'] / run['cpu_s']:.1f}x), peak memory {run['peak_gib'] / dense['peak_gib']:.3f} "
          f"of dense ({above:.3f} of it above each process's start: {run['peak_gib'] - run['start_gib']:.2f} vs "
          f"{dense['peak_gib'] - dense['start_gib']:.2f} GiB; both hold torch and the features); max|diff| "
          f"{agree['max_abs_diff']:.2e}, identical top-10 {100 * agree['top10']:.1f}%; load average "
          f"{os.getloadavg()[0]:.1f}")


def _agreement(dense_path: Path, xfd_path: Path, q: int, g: int) -> dict:
    dense = np.load(dense_path, mmap_mode="r")
    ours = np.memmap(xfd_path, dtype=dense.dtype, mode="r", shape=(q, g))
    max_diff, same = 0.0, 0
    for start in range(0, q, 256):
        a, b = np.asarray(dense[start : start + 256]), np.asarray(ours[start : start + 256])
        max_diff = max(max_diff, float(np.abs(a - b).max()))
        same += int((np.argsort(a, axis=1, kind="stable")[:, :10]
                     == np.argsort(b, axis=1, kind="stable")[:, :10]).all(axis=1).sum())
    return {"max_abs_diff": max_diff, "top10": same / q}


def section_large(args) -> None:
    n, q, dim = args.large, args.large_query, args.dim
    print(f"\n== N={n} (q={q}, g={n - q}), d={dim}, {args.large_kind}, {args.device}: into the metrics; query "
          f"distances {_kept(q, n - q, dim)}")
    floor, rate, floor_cpu = floor_seconds(args, n, q, dim)
    one = _spawn("xfd", args, n, q, dim, args.large_kind)
    print(f"  floor {floor:.1f} s, {floor_cpu:.1f} CPU-s (BLAS {rate:.0f} GFLOP/s); dense form would need "
          f"~{4 * n * n * 4 / 2**30:,.0f} GiB; load average {os.getloadavg()[0]:.1f}")
    print(xfd_line("xfd 1 rank", one, floor, floor_cpu))
    if args.ranks > 1:
        many = _spawn("xfd", args, n, q, dim, args.large_kind, ranks=args.ranks)
        print(xfd_line(f"xfd {args.ranks} ranks", many, floor, floor_cpu))
        if args.device == "cpu":
            print(f"  {same_results(one, many)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=["floor", "dense", "large"], action="append",
                   help="run only these sections (repeatable; default all)")
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--q", type=int, default=2000)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    p.add_argument("--ranks", type=int, default=2, help="R for the 'xfd on R ranks' runs")
    p.add_argument("--repeat", type=int, default=3,
                   help="fresh 1-rank runs per difficulty at N = 20k; the fastest is compared with the floor")
    p.add_argument("--dense-dim", type=int, default=256)
    p.add_argument("--dense-kind", choices=KINDS, default="hard")
    p.add_argument("--large", type=int, default=200000)
    p.add_argument("--large-query", type=int, default=10000)
    p.add_argument("--large-kind", choices=KINDS, default="hard")
    p.add_argument("--k1", type=int, default=28)
    p.add_argument("--k2", type=int, default=6)
    p.add_argument("--lambda", dest="lam", type=float, default=0.28)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tmp", default=None, help="folder for the compared outputs (default: system temp)")
    p.add_argument("--worker", choices=["floor", "dense", "xfd"], help=argparse.SUPPRESS)
    p.add_argument("--kind", choices=KINDS, default="tidy", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        _worker_main(args)
        return
    sections = args.only or ["floor", "dense", "large"]
    print(f"re-ranking benchmark: k1={args.k1} k2={args.k2} lambda={args.lam}, float32, {os.cpu_count()} CPU(s), "
          f"load average {os.getloadavg()[0]:.1f}")
    if "floor" in sections:
        section_floor(args)
    if "dense" in sections:
        section_dense(args)
    if "large" in sections:
        section_large(args)


if __name__ == "__main__":
    main()
