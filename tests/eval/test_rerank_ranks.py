"""Exact re-ranking and metrics across ranks (torch.distributed, gloo on CPU): 1, 2 and 3 ranks give the same
distances bit for bit in float64, and the evaluation API (`score(..., team=RankTeam())`) gives every rank the
results of one process, plain and re-ranked, identically; a rank that dies or stalls is named with the step; ranks
given different inputs are refused before any work; a bad input or a memory refusal on one rank stops all.

Each test spawns small worker processes (spawn start method, a free port) that write what they got to files.
"""

from __future__ import annotations

import os
import pickle
import socket
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch.multiprocessing as mp

from xfd.eval.metrics import evaluate_distances
from xfd.eval.protocol import ProtocolData
from xfd.eval.rerank import k_reciprocal

Q, G, DIM = 45, 315, 24


def _data(dtype=np.float64, seed=3) -> ProtocolData:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((30, DIM))
    pids = rng.integers(0, 30, Q + G)
    x = centres[pids] / np.sqrt(DIM) + 0.6 * rng.standard_normal((Q + G, DIM)) / np.sqrt(DIM)
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)
    cams = rng.integers(0, 3, Q + G)
    return ProtocolData("ranks", x[:Q], x[Q:], pids[:Q], pids[Q:], cams[:Q], cams[Q:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, folder: str, scenario: str, timeout_s: float) -> None:
    """One rank: start gloo, re-rank and score its share, write the outcome (or the error) to folder/rank.pkl."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    import datetime

    import torch.distributed as dist

    from xfd.eval.rerank import RerankParams, k_reciprocal_stream
    from xfd.eval.rerank_team import RankTeam
    from xfd.eval.score import EvalTimes, ScoreOptions, score

    outcome: dict = {}
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
        team = RankTeam(timeout_s=timeout_s)
        data = _data()
        params = RerankParams(20, 6, 0.3)
        # threads per rank vary too; tiles of 64 rows: a grid of 21 tiles to share (the query rows in the first)
        kwargs = dict(device="cpu", block_rows=7, workers=1 + rank % 2, graph_block=64,
                      keep_distances=scenario != "no keep")
        if scenario == "dies" and rank == world - 1:
            import xfd.eval.rerank as rerank

            rerank.expanded_reciprocal_sets = lambda *a, **k: os._exit(17)  # dies in the step 'R* and V'
        if scenario == "stalls" and rank == 1:
            import xfd.eval.rerank as rerank

            original = rerank.local_query_expansion
            rerank.local_query_expansion = lambda *a, **k: (time.sleep(4 * timeout_s), original(*a, **k))[1]
        if scenario == "other features" and rank == 1:
            data = _data(seed=4)
        if scenario == "other params" and rank == 2:
            params = RerankParams(20, 5, 0.3)
        if scenario == "bad input" and rank == 1:
            q = data.q_feats.copy()
            q[5, 3] = np.nan
            data = ProtocolData("ranks", q, data.g_feats, data.q_pids, data.g_pids, data.q_camids, data.g_camids)
        if scenario == "memory" and rank == 0:
            kwargs["memory_limit"] = 1 << 20
        blocks = {int(i[0]): b for i, b in k_reciprocal_stream(data.q_feats, data.g_feats, params.k1, params.k2,
                                                               params.lam, team=team, **kwargs)}
        times = EvalTimes()
        results = {rerank is not None: score([data], ScoreOptions(rerank, device="cpu", block_rows=7), team=team,
                                             times=times) for rerank in (None, params)}
        outcome = {"blocks": blocks, "results": {reranked: _comparable(r) for reranked, r in results.items()},
                   "seconds": team.gather_objects(times.steps.steps)}
    except BaseException as error:  # noqa: BLE001 - the test reads it
        outcome = {"error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()}
    with open(Path(folder) / f"{rank}.pkl", "wb") as handle:
        pickle.dump(outcome, handle)
    sys.stdout.flush()
    os._exit(0)  # no process-group teardown: a dead peer must not make the exit hang


def _run_ranks(tmp_path, world: int, scenario: str = "", timeout_s: float = 20.0, wait_s: float = 120.0) -> list:
    context = mp.get_context("spawn")
    port = _free_port()
    processes = [context.Process(target=_rank_main, args=(r, world, port, str(tmp_path), scenario, timeout_s))
                 for r in range(world)]
    for process in processes:
        process.start()
    deadline = time.monotonic() + wait_s
    for process in processes:
        process.join(max(1.0, deadline - time.monotonic()))
    stuck = [r for r, p in enumerate(processes) if p.is_alive()]
    for process in processes:
        if process.is_alive():
            process.kill()
    assert not stuck, f"ranks {stuck} were still running after {wait_s} s (a hang)"
    outcomes = []
    for r in range(world):
        path = tmp_path / f"{r}.pkl"
        outcomes.append(pickle.loads(path.read_bytes()) if path.exists() else None)
    return outcomes


def _comparable(results) -> dict:
    """Everything score() found for the protocol, as plain values to compare with ==."""
    (protocol,) = results.protocols.values()
    queries = protocol.queries
    return {"metrics": protocol.metrics.to_dict(), "intervals": protocol.intervals, "mean": results.mean,
            "pooled": results.pooled, "conditions": results.conditions, "warnings": results.warnings,
            "per_query": [getattr(queries, key).tolist() for key in ("ap", "inp", "first_match", "top", "seen")],
            "matches": [(rows.tolist(), ranks.tolist())
                        for rows, ranks in zip(queries.match_rows, queries.match_ranks)]}


def _single_process(keep: bool):
    from xfd.eval.rerank import RerankParams
    from xfd.eval.score import ScoreOptions, score

    data = _data()
    dist = k_reciprocal(data.q_feats, data.g_feats, 20, 6, 0.3, device="cpu", block_rows=7, workers=2, graph_block=64,
                        keep_distances=keep)
    results = {rerank is not None: _comparable(score([data], ScoreOptions(rerank, device="cpu", block_rows=7)))
               for rerank in (None, RerankParams(20, 6, 0.3))}
    return dist, results


@pytest.mark.parametrize("keep", [True, False], ids=["kept distances", "blend GEMM"])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_one_two_and_three_ranks_give_the_same_bits_and_metrics(tmp_path, world, keep):
    expected, results = _single_process(keep)
    outcomes = _run_ranks(tmp_path, world, "" if keep else "no keep")
    assert all("error" not in o for o in outcomes), [o.get("trace") for o in outcomes if "error" in o]
    got = np.full_like(expected, np.nan)
    starts = sorted(start for o in outcomes for start in o["blocks"])
    assert starts == list(range(0, Q, 7)), "every query block exactly once over the ranks"
    for outcome in outcomes:
        for start, block in outcome["blocks"].items():
            got[start : start + block.shape[0]] = block
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, expected)  # to the last bit
    metrics = evaluate_distances(expected, *(getattr(_data(), k) for k in ("q_pids", "q_camids", "g_pids",
                                                                           "g_camids")))
    assert results[True]["metrics"] == metrics.to_dict()
    for outcome in outcomes:
        assert outcome["results"] == results  # plain and re-ranked: identical on every rank, and to one process's
        assert len(outcome["seconds"]) == world and all(s["graph"] > 0 for s in outcome["seconds"])


def test_a_rank_that_dies_is_named_with_its_step(tmp_path):
    outcomes = _run_ranks(tmp_path, 3, "dies")
    assert outcomes[2] is None  # it died without writing
    for outcome in outcomes[:2]:
        assert "rank(s) 2 did not finish the step" in outcome["error"] and "'R* and V'" in outcome["error"]


def test_a_rank_that_stalls_is_named_after_the_timeout(tmp_path):
    outcomes = _run_ranks(tmp_path, 3, "stalls", timeout_s=3.0, wait_s=90.0)
    for rank in (0, 2):
        assert "rank(s) 1 did not finish the step" in outcomes[rank]["error"]
        assert "'query expansion'" in outcomes[rank]["error"] and "within 3 s" in outcomes[rank]["error"]


@pytest.mark.parametrize("scenario, world", [("other features", 2), ("other params", 3)])
def test_ranks_with_different_inputs_are_refused_up_front(tmp_path, scenario, world):
    outcomes = _run_ranks(tmp_path, world, scenario)
    for outcome in outcomes:
        assert "ranks were given different features, dtypes or parameters" in outcome["error"]
        assert "seconds" not in outcome


def test_bad_input_on_one_rank_stops_every_rank_with_its_message(tmp_path):
    outcomes = _run_ranks(tmp_path, 2, "bad input")
    for outcome in outcomes:
        assert "ValueError: query features has NaN or inf in 1 row(s), first at row 5" in outcome["error"]


def test_a_memory_refusal_on_one_rank_stops_every_rank(tmp_path):
    outcomes = _run_ranks(tmp_path, 2, "memory")
    for outcome in outcomes:
        assert "re-ranking will not fit in memory" in outcome["error"]
