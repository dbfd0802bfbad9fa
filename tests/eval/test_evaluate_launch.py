"""launcher/evaluate.py as users run it, on a small synthetic shard set with the untrained tiny model:
`deepspeed --num_gpus 2` on CPU (two gloo ranks, each extracting its own shards and re-ranking its share) gives
exactly the features, metrics, intervals and submission CSV of a plain one-process `python launcher/evaluate.py`,
both ranks report their re-ranking seconds, its saved features re-scored through xfd-eval's path give the same
numbers (one API), and the report files are sane. One launch of each (~30-60 s together on 2 cores), shared by the tests."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xfd.cli import shard, synth
from xfd.cli.demo import free_port
from xfd.eval.protocol import REQUIRED_KEYS, load_npz
from xfd.eval.ranklist import RankListLayout
from xfd.eval.rerank import RerankParams
from xfd.eval.score import ScoreOptions, score

sys.path.insert(0, str(Path(__file__).parents[1] / "engine"))  # the engine tests' launch helpers

from launching import DEEPSPEED, run_launch  # noqa: E402

pytestmark = pytest.mark.slow  # deepspeed launches of 2 CPU ranks (`make test-quick` leaves them out)

PROTOCOLS = ("A2G", "G2A", "A2A")
QUERIES = 8  # test identities: one query and one gallery tracklet each per protocol
# batches of 5 span the 3-tracklet shards in one process but not in the same way on two ranks
ARGS = ["--untrained", "--config", "tiny.yaml", "--rerank", "--k1", "6", "--k2", "3"]
OVERRIDES = ["data.num_frames=4", "eval.batch_size=5", "model.backbone.image_size=[64,32]"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """xfd-synth (4 train + 8 test identities, 6-12 frames) sharded 3 tracklets a shard: 3 shards a split."""
    root = tmp_path_factory.mktemp("evaluate-data")
    assert synth.main([str(root / "raw"), "--ids", "4", "--test-ids", str(QUERIES), "--min-frames", "6",
                       "--max-frames", "12", "--workers", "1", "--no-progress"]) == 0
    assert shard.main([str(root / "raw"), str(root / "shards"), "--shard-samples", "3", "--workers", "1",
                       "--no-progress"]) == 0
    shutil.rmtree(root / "raw")
    return root / "shards"


@pytest.fixture(scope="module")
def runs(shards, tmp_path_factory) -> dict:
    """The same evaluation as one plain process and as a 2-rank deepspeed launch."""
    out = tmp_path_factory.mktemp("evaluate-runs")
    common = ["--data", str(shards), *ARGS]
    one = run_launch([sys.executable, "launcher/evaluate.py", *common, "--device", "cpu", "--output",
                      str(out / "one"), *OVERRIDES], out / "one")
    two = run_launch([str(DEEPSPEED), "--num_gpus", "2", "--master_port", str(free_port()), "launcher/evaluate.py",
                      *common, "--output", str(out / "two"), *OVERRIDES], out / "two")
    return {"one": one.check(), "two": two.check()}


def _report(run) -> dict:
    return json.loads((run.output / "report.json").read_text())


def test_two_ranks_give_exactly_the_features_metrics_and_csv_of_one_process(runs):
    one, two = runs["one"], runs["two"]
    assert two.command[1:3] == ["--num_gpus", "2"] and "launcher/evaluate.py" in two.command
    for protocol in PROTOCOLS:
        with np.load(one.output / "features" / f"{protocol}.npz") as a, \
                np.load(two.output / "features" / f"{protocol}.npz") as b:
            assert sorted(a.files) == sorted(b.files) and set(REQUIRED_KEYS) <= set(a.files)
            assert a["q_feats"].shape[0] == QUERIES and a["q_names"].shape == (QUERIES,)
            for key in a.files:
                same = np.array_equal(a[key], b[key], equal_nan=a[key].dtype.kind == "f")  # NaN: ground's height
                assert same, f"{protocol}: {key} differs between 1 and 2 ranks"
    first, second = _report(one), _report(two)
    assert first["plain"] == second["plain"] and first["reranked"] == second["reranked"]
    assert first["reranked"] is not None and first["final"] == "reranked"
    assert (one.output / "submission.csv").read_bytes() == (two.output / "submission.csv").read_bytes()
    assert (one.output / "per_query.npz").read_bytes() == (two.output / "per_query.npz").read_bytes()
    # the work really was split: each rank extracted some of the 48 tracklets, none twice
    per_rank = second["extraction"]["per_rank"]
    assert [r["rank"] for r in per_rank] == [0, 1] and all(r["tracklets"] > 0 for r in per_rank)
    assert sum(r["tracklets"] for r in per_rank) == 2 * QUERIES * len(PROTOCOLS) == first["extraction"]["tracklets"]
    assert second["settings"]["world_size"] == 2 and first["settings"]["world_size"] == 1


def test_every_rank_reranks_and_reports_its_seconds(runs):
    for run, world in ((runs["one"], 1), (runs["two"], 2)):
        seconds = _report(run)["seconds"]
        each, steps = seconds["reranking_per_rank"], seconds["reranking_steps_per_rank"]
        assert len(each) == len(steps) == world and all(s > 0 for s in each) and seconds["reranking"] == max(each)
        for rank_steps in steps:  # every rank did its share of every step
            assert set(rank_steps) == {"graph", "lists", "R* and V", "query expansion", "blend"}
            assert rank_steps["graph"] > 0
        assert steps[0]["blend"] > 0  # 8 queries: one query block, rank 0's
    two = runs["two"]
    shown = " / ".join(f"{s:.3f}" for s in _report(two)["seconds"]["reranking_per_rank"])
    assert f"(ranks: {shown})" in _report(two)["timing"] and _report(two)["timing"] in two.text  # printed
    assert two.text.count("## With exact k-reciprocal re-ranking") == 1  # rank 0 alone printed the tables


def test_saved_features_rescore_to_the_reported_metrics(runs):
    """xfd-eval's path (a features file through `score`) gives the launcher's numbers: one API."""
    report = _report(runs["one"])
    protocols = {p: load_npz(runs["one"].output / report["features"][p], p) for p in PROTOCOLS}
    for ranking, rerank in (("plain", None), ("reranked", RerankParams(6, 3, 0.28))):
        results = score(protocols, ScoreOptions(rerank=rerank))
        for protocol in PROTOCOLS:
            entry = report[ranking]["protocols"][protocol]
            assert {k: v for k, v in entry.items() if k in ("mAP", "mINP", "cmc", "num_valid")} == {
                k: v for k, v in results.protocols[protocol].metrics.to_dict().items()
                if k in ("mAP", "mINP", "cmc", "num_valid")}
            assert entry["ci"]["mAP"] == results.protocols[protocol].intervals["mAP"].to_list()
        assert report[ranking]["mean"]["mAP"] == results.mean.values["mAP"]
        assert report[ranking]["pooled"]["mAP"] == results.pooled.values["mAP"]


def test_report_files_are_sane(runs):
    out = runs["one"].output
    report = _report(runs["one"])
    for protocol in PROTOCOLS:
        entry = report["plain"]["protocols"][protocol]
        assert entry["num_queries"] == QUERIES and entry["num_gallery"] == QUERIES and entry["scored"]
        assert 0.0 < entry["mAP"] <= 1.0 and len(entry["cmc"]) == 50
        assert len(entry["per_query"]["ap"]) == QUERIES and entry["ci"]["mAP"][0] <= entry["mAP"]
    assert report["warnings"] == [] and report["settings"]["rerank"] == {"k1": 6, "k2": 3, "lambda": 0.28}
    seconds = report["seconds"]
    parts = [seconds[part] for part in ("startup", "load_model", "extraction", "distances", "reranking", "metrics",
                                        "statistics", "report")]
    assert min(parts) >= 0.0 and sum(parts) <= seconds["total"] + 1e-6, seconds  # disjoint phases of the total
    assert seconds["extraction"] > 0 and seconds["total"] >= seconds["extraction"] + seconds["load_model"]
    assert report["timing"].startswith("timing: ") and report["timing"] in runs["one"].text  # printed

    table = (out / "table.md").read_text()
    assert table.count("| protocol | queries | gallery | mAP (95% CI) | R1 (95% CI) | R5 | R10 | mINP |") == 2
    assert all(table.count(f"| {p} | {QUERIES} | {QUERIES} |") == 2 for p in PROTOCOLS)
    assert table.count("**mean of 3 protocols**") == 2 and table.count(f"**pooled over {3 * QUERIES} queries**") == 2
    assert "re-ranking (k1 6, k2 3" in table
    a2g = report["reranked"]["protocols"]["A2G"]
    assert f"| A2G | 8 | 8 | {100 * a2g['mAP']:.2f} ({100 * a2g['ci']['mAP'][0]:.2f}–" in table
    # per-condition table and picture of the final (re-ranked) results
    assert "## Per condition (re-ranked)" in table and "| altitude |" in table and "| match session |" in table
    assert "![mAP by query distance and altitude](conditions.png)" in table
    conditions = report["reranked"]["conditions"]
    platform = {row["value"]: row["cells"]["all"]["queries"] for row in conditions if row["condition"] == "platform"}
    assert platform == {"aerial": 2 * QUERIES, "ground": QUERIES}  # A2G and A2A queries fly, G2A's stand

    with open(out / "submission.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == QUERIES * len(PROTOCOLS)
    assert [r["row_id"] for r in rows] == [str(i) for i in range(1, len(rows) + 1)]
    assert all(len(r["gallery_tracklets"].split()) == QUERIES for r in rows)  # 10 best, of a gallery of 8

    for picture in ("cmc.png", "conditions.png"):
        with Image.open(out / picture) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 200
    with Image.open(out / "ranklist.png") as ranklist:
        layout = RankListLayout()
        assert ranklist.format == "PNG"
        assert ranklist.height == layout.margin + layout.header_height + 6 * layout.row_height()  # 6 queries
        assert ranklist.width == max(layout.gallery_box(0, QUERIES - 1, 4)[2] + layout.margin, layout.legend_width)
    chosen = report["settings"]["ranklist"]["queries"]
    assert len(chosen) == 6 and {name for name, _ in chosen} == set(PROTOCOLS)
