"""Memory planner for exact re-ranking: the peak host (and device) bytes one rank will hold, predicted from the
algorithm's own arrays before any work, and a refusal, with the fix, when that will not fit.

Peak = what the process holds when re-ranking starts (its resident set: the interpreter, libraries, the caller's
features) + what re-ranking adds: the features concatenated (N·d·s; every rank holds all of them, any tile needs any
rows) and the query rows scaled for the blend (q·d·s), plus the largest of its three phases (N = q + g,
K = max(k1 + 1, k2) + 1 kept neighbours, own = N / R rows of this rank, W worker threads, s = bytes per value):
- graph: the top-K state of all N rows, N·K·(s + 8), a tile per thread (B²·s) and its merge keys;
- sparse steps: the merged lists (R·own·K·(s + 8) gathered, or the state itself on one rank), all rank lists
  (N·K·8), R* of this rank's rows, V and V_qe of all rows (8 + s bytes per non-zero) and V_qe's inverted index;
- blend: the index it keeps (V_qe of the queries, the inverted index), 2W + 1 blocks of (b, g) distances in
  flight, and per thread the float64 scratch of the Jaccard sums and the expanded pairs.
When the graph pass keeps the query distances (`xfd.eval.rerank_split`), this rank's kept rows (up to
ceil(q / B / R)·B of them, times g) are held through all three phases, its blend blocks are views of them, and the
scaled query rows are not needed.

The sizes of R* and V_qe depend on the features; the planner uses what the benchmark's features of three
difficulties give (|R*| ≈ 1.0-1.04·k1, planned at 1.1·k1; |V_qe row| ≈ 1.8-3.6·|R*| for k2 = 6, planned at 2.7).
bench/rerank.py prints the prediction next to the measured peak (README: within 25 % at N = 20k and 200k).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from xfd.eval.rerank_split import kept_rows_of

# Planning sizes per row, upper ends of what the benchmark's features give (see the module docstring).
SETS_PER_K1 = 1.1
QE_PER_SET = 2.7
BLEND_BYTES = 256 << 20  # (rows, g) working arrays per blend block on CPU
BLEND_MAX_ROWS = 256
PAIR_BYTES = 80  # the expansion of one (query entry, gallery row) pair in kernels.jaccard.shared_pairs, at its peak


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
    parts: dict  # resident (before re-ranking), features, and the largest phase ("graph", "sparse" or "blend")
    device_parts: dict | None = None  # on a GPU: what the device holds (unmeasured: no GPU was at hand)
    keep: bool = False  # the graph pass keeps the query distances

    @property
    def host_bytes(self) -> int:
        return int(sum(self.parts.values()))

    @property
    def added_bytes(self) -> int:
        """What re-ranking adds to the resident set: the part that must fit in the memory still available."""
        return self.host_bytes - int(self.parts["resident"])

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


def jaccard_scratch(q: int, g: int, expanded: float) -> float:
    """Bytes one thread holds while it sums a chunk of query rows' Jaccard terms: the float64 sums of the chunk's
    rows against the gallery, and the pairs expanded (about expanded² · g / N per row, at most PAIRS_PER_CHUNK)."""
    from xfd.kernels.jaccard import PAIRS_PER_CHUNK, SCRATCH_BYTES

    rows = max(1, SCRATCH_BYTES // (8 * g))
    pairs = min(PAIRS_PER_CHUNK, rows * expanded * expanded * g / (q + g))
    return SCRATCH_BYTES + pairs * PAIR_BYTES


def resident_bytes() -> int:
    """This process's resident set now."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def plan(q: int, g: int, d: int, k1: int, k2: int, dtype, ranks: int = 1, workers: int = 1,
         graph_block: int = 1024, blend_block: int | None = None, device: str = "cpu",
         resident: int | None = None, keep: bool = False) -> MemoryPlan:
    """The peak host bytes one rank will hold (see the module docstring); `resident`: what the process holds
    before re-ranking (default: its resident set now); `keep`: the graph pass keeps the query distances."""
    s = np.dtype(dtype).itemsize
    n = q + g
    kept = kept_rows_of(q, graph_block, ranks) * g * s if keep else 0
    listed = min(max(k1 + 1, k2) + 1, n)  # neighbours kept per row
    own = -(-n // ranks)
    sets = SETS_PER_K1 * k1
    expanded = sets * (QE_PER_SET if k2 > 1 else 1.0)
    b = blend_block or blend_rows(g, s)
    tile = min(graph_block, n)
    state = n * listed * (s + 8)
    # `workers` blocks computed or waiting, and the one the consumer holds (kept: views of the kept distances)
    in_flight = 0 if keep else (workers + 1) * b * g * s
    phases = {
        "graph": state + workers * (tile * tile * s + tile * listed * 3 * 8),
        "sparse": (ranks * own * listed * (s + 8) if ranks > 1 else state) + n * listed * 8 + own * sets * 8
        + n * (sets + expanded) * (8 + s) + g * expanded * (8 + s),
        "blend": (q + g) * expanded * (8 + s) + in_flight + workers * jaccard_scratch(q, g, expanded),
    }
    largest = max(phases, key=phases.get)
    parts = {
        "resident": resident_bytes() if resident is None else resident,
        "features": n * d * s + (0 if keep else q * d * s),
        **({"kept distances": kept} if keep else {}),
        largest: phases[largest],
    }
    device_parts = None
    if device == "cuda":  # the arrays move to the device; the host keeps the inputs and the gathered lists
        device_parts = {
            "features": n * d * s + q * d * s,
            "graph": 2 * state + 2 * tile * tile * s,
            "sparse": n * (sets + expanded) * (8 + s) + g * expanded * (8 + s),
            "blend": 2 * b * g * ((2 if keep else 3) * s + 8),
            **({"kept distances": kept} if keep else {}),
        }
        parts = {"resident": parts["resident"], "lists": ranks * own * listed * (s + 8) + n * listed * 8}
    return MemoryPlan(q, g, d, k1, k2, s, ranks, workers, graph_block, b, {k: float(v) for k, v in parts.items()},
                      None if device_parts is None else {k: float(v) for k, v in device_parts.items()}, keep)


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
    """ValueError with the numbers and the settings that would fit when what re-ranking adds exceeds `limit_bytes`
    (the host memory still available to this rank) or the plan exceeds `device_limit` (GPU)."""
    if device_limit is not None and memory.device_bytes > device_limit:
        gib = 2**30
        items = ", ".join(f"{name} {value / gib:.2f}" for name, value in memory.device_parts.items())
        raise ValueError(f"re-ranking will not fit in GPU memory: predicted {memory.device_bytes / gib:.2f} GiB "
                         f"({items} GiB) but the device has {device_limit / gib:.2f} GiB free; smaller blend "
                         f"blocks (block_rows) or float32 features would need less")
    if memory.added_bytes <= limit_bytes:
        return
    gib = 2**30
    same = dict(q=memory.q, g=memory.g, d=memory.d, k1=memory.k1, k2=memory.k2, graph_block=memory.graph_block,
                blend_block=memory.blend_rows, ranks=memory.ranks, workers=memory.workers,
                dtype={4: np.float32, 8: np.float64}[memory.itemsize], resident=int(memory.parts["resident"]),
                keep=memory.keep)
    options = []
    if memory.itemsize == 8:
        options.append(("float32 features", plan(**{**same, "dtype": np.float32})))
    if memory.workers > 1:
        options.append(("one thread per rank", plan(**{**same, "workers": 1})))
    if memory.blend_rows > 1:
        rows = max(1, memory.blend_rows // 4)
        options.append((f"blend blocks of {rows} rows", plan(**{**same, "blend_block": rows})))
    for ranks in (2 * memory.ranks, 4 * memory.ranks):
        options.append((f"{ranks} ranks on as many machines", plan(**{**same, "ranks": ranks})))
    described = [(f"{name} ({option.added_bytes / gib:.2f} GiB more)", option.added_bytes <= limit_bytes)
                 for name, option in options]
    fitting = [text for text, fits in described if fits]
    advice = ("; would fit: " + ", or ".join(fitting)) if fitting else (
        "; none of float32, one thread, smaller blend blocks or 2-4x the ranks fits either: "
        + ", ".join(text for text, _ in described))
    raise ValueError(f"re-ranking will not fit in memory: it needs {memory.added_bytes / gib:.2f} GiB more than "
                     f"this rank holds now ({memory.describe()}), but this rank may use {limit_bytes / gib:.2f} GiB "
                     f"more{advice}")
