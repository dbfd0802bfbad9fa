"""Memory planner for exact re-ranking: the peak host (and device) bytes one rank will hold, predicted from the
algorithm's own arrays before any work, and a refusal, with the fix, when that will not fit.

What a rank holds at its peak (N = q + g, K = max(k1 + 1, k2) + 1 kept neighbours, R ranks, W worker threads,
s = bytes per feature value; V_nnz and V_qe_nnz = non-zeros of V and of V after local query expansion):
- the features: the caller's query and gallery arrays and their concatenation, 2·N·d·s (every rank holds all of
  them: any tile needs any rows), and the query rows once more, scaled for the blend's GEMM (q·d·s);
- the graph: the top-K state for all N rows, N·K·(s + 8), one distance tile per thread (B²·s), and, while a tile
  is merged, its candidate table; after the graph, the lists of this rank's rows from every rank,
  R·(N/R)·K·(s + 8), and all rank lists, N·K·8;
- the sparse steps: V for all rows (12·V_nnz: index and value), V_qe (the same for all rows, gathered) and its
  inverted index (16·V_qe_nnz with the row numbers), and each thread's reciprocal-set chunk;
- the blend: per thread in flight (W + 1 blocks), a (b, g) block of distances, its float64 Jaccard sums and the
  expansion of its pairs.

V_nnz and V_qe_nnz depend on the features; the planner uses the sizes measured on clustered features of several
difficulties (xfd's benchmark: |R*| <= 2·k1 per row on average, V_qe <= 4·k2·k1 / 2 per row), an upper end, so
that a plan that fits is not refused late. Measured against the benchmark's peak resident set, the prediction is
within 25 % at N = 20k and 200k (README, bench/rerank.py prints both).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

# Planning sizes per row, upper ends of what the benchmark's features give (see the module docstring).
SETS_PER_K1 = 1.3  # |R*(i)| ≈ 1.3·k1 on hard features (29-38 at k1 = 28)
QE_PER_SET = 3.5  # |V_qe row| ≈ 3.5·|R*| for k2 = 6 (the union of k2 overlapping sets)
BLEND_BYTES = 256 << 20  # (rows, g) working arrays per blend block on CPU
BLEND_MAX_ROWS = 256
RUNTIME_BYTES = 350 << 20  # Python, NumPy, torch and the process itself, measured before the features exist


@dataclass(frozen=True)
class MemoryPlan:
    """Predicted peak bytes of one rank, by part, and the settings they were predicted for."""

    q: int
    g: int
    d: int
    k1: int
    k2: int
    itemsize: int
    ranks: int
    workers: int
    graph_block: int
    blend_rows: int
    parts: dict
    device_parts: dict | None = None  # on a GPU: what the device holds (unmeasured: no GPU was at hand)

    @property
    def host_bytes(self) -> int:
        return int(sum(self.parts.values()))

    @property
    def device_bytes(self) -> int:
        return int(sum(self.device_parts.values())) if self.device_parts else 0

    def describe(self) -> str:
        gib = 2**30
        items = ", ".join(f"{name} {value / gib:.2f}" for name, value in self.parts.items())
        return (f"predicted peak per rank {self.host_bytes / gib:.2f} GiB ({items} GiB) for q={self.q}, g={self.g}, "
                f"d={self.d}, {8 * self.itemsize}-bit, {self.ranks} rank(s) x {self.workers} thread(s), graph tile "
                f"{self.graph_block}, blend block {self.blend_rows} rows")


def blend_rows(n_gallery: int, itemsize: int) -> int:
    """Query rows per blend block: a function of the gallery size and dtype only, so that every split of the
    blocks over ranks and threads computes the same GEMMs."""
    per_row = n_gallery * (3 * itemsize + 8)
    return int(max(1, min(BLEND_MAX_ROWS, BLEND_BYTES // per_row)))


def plan(q: int, g: int, d: int, k1: int, k2: int, dtype, ranks: int = 1, workers: int = 1,
         graph_block: int = 1024, blend_block: int | None = None, device: str = "cpu") -> MemoryPlan:
    """The peak host bytes one rank will hold (see the module docstring for the terms)."""
    s = np.dtype(dtype).itemsize
    n = q + g
    kept = min(max(k1 + 1, k2) + 1, n)
    own = -(-n // ranks)
    sets = SETS_PER_K1 * k1
    expanded = sets * (QE_PER_SET if k2 > 1 else 1.0)
    b = blend_block or blend_rows(g, s)
    tile = min(graph_block, n)
    parts = {
        "runtime": RUNTIME_BYTES,
        "features": 2 * n * d * s + q * d * s,
        "graph": n * kept * (s + 8) * 2 + workers * (tile * tile * s + tile * (kept + 4 * kept) * 16),
        "lists": ranks * own * kept * (s + 8) + n * kept * 8,
        "sparse": n * sets * 12 + n * expanded * 28 + own * kept * 16,
        "blend": (workers + 1) * b * g * (2 * s + 8 + 8),
    }
    device_parts = None
    if device == "cuda":  # the arrays move to the device; the host keeps the inputs and the gathered lists
        device_parts = {
            "features": n * d * s + q * d * s,
            "graph": n * kept * (s + 8) * 2 + 2 * tile * tile * s,
            "sparse": n * sets * 12 + n * expanded * 28,
            "blend": 2 * b * g * (3 * s + 8),
        }
        parts = {"runtime": RUNTIME_BYTES, "features": n * d * s, "lists": parts["lists"]}
    return MemoryPlan(q, g, d, k1, k2, s, ranks, workers, graph_block, b, {k: float(v) for k, v in parts.items()},
                      None if device_parts is None else {k: float(v) for k, v in device_parts.items()})


def available_host_bytes(local_ranks: int = 1) -> int:
    """Memory this rank may use: what the machine has available now, shared by the ranks on this node."""
    import psutil

    return int(psutil.virtual_memory().available // max(1, local_ranks))


def local_ranks() -> int:
    """Ranks on this node (the launcher's LOCAL_WORLD_SIZE / LOCAL_SIZE), 1 in a plain run."""
    for key in ("LOCAL_WORLD_SIZE", "LOCAL_SIZE"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 1


def available_device_bytes() -> int:
    """Free memory of the current CUDA device (CuPy)."""
    import cupy

    free, _ = cupy.cuda.runtime.memGetInfo()
    return int(free)


def refuse_unless_it_fits(memory: MemoryPlan, limit_bytes: int, device_limit: int | None = None) -> None:
    """ValueError with the numbers and the settings that would fit when the plan exceeds `limit_bytes` (host) or
    `device_limit` (GPU)."""
    if device_limit is not None and memory.device_bytes > device_limit:
        gib = 2**30
        items = ", ".join(f"{name} {value / gib:.2f}" for name, value in memory.device_parts.items())
        raise ValueError(f"re-ranking will not fit in GPU memory: predicted {memory.device_bytes / gib:.2f} GiB "
                         f"({items} GiB) but the device has {device_limit / gib:.2f} GiB free; smaller blend "
                         f"blocks (block_rows) or float32 features would need less")
    if memory.host_bytes <= limit_bytes:
        return
    gib = 2**30
    fixes = []
    replan = dict(q=memory.q, g=memory.g, d=memory.d, k1=memory.k1, k2=memory.k2, graph_block=memory.graph_block,
                  blend_block=memory.blend_rows)
    dtype = {4: np.float32, 8: np.float64}[memory.itemsize]
    if memory.itemsize == 8:
        smaller = plan(**replan, dtype=np.float32, ranks=memory.ranks, workers=memory.workers)
        fixes.append(f"float32 features ({smaller.host_bytes / gib:.2f} GiB)")
    if memory.workers > 1:
        fewer = plan(**replan, dtype=dtype, ranks=memory.ranks, workers=1)
        fixes.append(f"one thread per rank ({fewer.host_bytes / gib:.2f} GiB)")
    if memory.blend_rows > 1:
        rows = max(1, memory.blend_rows // 4)
        smaller = plan(**{**replan, "blend_block": rows}, dtype=dtype, ranks=memory.ranks, workers=memory.workers)
        fixes.append(f"blend blocks of {rows} rows ({smaller.host_bytes / gib:.2f} GiB)")
    for ranks in (2 * memory.ranks, 4 * memory.ranks):
        more = plan(**replan, dtype=dtype, ranks=ranks, workers=memory.workers)
        fixes.append(f"{ranks} ranks on as many machines ({more.host_bytes / gib:.2f} GiB each)")
    fitting = [fix for fix in fixes if float(fix.rsplit("(", 1)[1].split()[0]) * gib <= limit_bytes]
    advice = ("; would fit: " + ", or ".join(fitting)) if fitting else (
        "; none of float32, one thread, smaller blend blocks or 2-4x the ranks fits either: " + ", ".join(fixes))
    raise ValueError(f"re-ranking will not fit in memory: {memory.describe()}, but this rank may use "
                     f"{limit_bytes / gib:.2f} GiB{advice}")
