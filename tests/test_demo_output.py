"""xfd-demo and xfd-ablate replace only a folder that is absent, empty or their own earlier output; `--out .` in a
clone, a thesis folder or a trained run of something else is refused by name and left untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from xfd.cli import ablate, demo


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def foreign(tmp_path) -> Path:
    """A folder the user owns: what `--out .` in a clone of the repository would be."""
    folder = tmp_path / "clone"
    (folder / "xfd").mkdir(parents=True)
    (folder / "README.md").write_text("# xfd")
    (folder / "xfd" / "__init__.py").write_text("")
    (folder / "shards").mkdir()  # even folders named like the demo's are not the demo's
    return folder


@pytest.mark.parametrize("main, tool", [(demo.main, "xfd-demo"), (ablate.main, "xfd-ablate")])
def test_a_folder_that_is_not_an_earlier_output_is_refused_by_name(foreign, main, tool):
    before = _tree(foreign)
    with pytest.raises(SystemExit) as caught:
        main(["--out", str(foreign), "--skip-training"] if tool == "xfd-demo" else ["--out", str(foreign)])
    assert str(foreign) in str(caught.value) and "refusing" in str(caught.value) and tool in str(caught.value)
    assert _tree(foreign) == before


def test_skip_training_replaces_the_data_of_an_earlier_demo_and_keeps_its_trained_run(tmp_path):
    out = tmp_path / "demo"
    args = ["--out", str(out), "--skip-training", "--ids", "4", "--test-ids", "2", "--val-ids", "1",
            "--max-frames", "4", "--workers", "1"]
    assert demo.main(args) == 0
    assert (out / ".xfd-demo").is_file() and (out / "shards" / "dataset.json").is_file()
    trained = out / "run" / "checkpoints" / "s2-e0008-g0000400"
    trained.mkdir(parents=True)
    (trained / "mp_rank_00_model_states.pt").write_bytes(b"hours of training")
    (out / "run" / "model.safetensors").write_bytes(b"the trained model")
    run_before = _tree(out / "run")
    assert demo.main(args[:-2] + ["--workers", "2"]) == 0  # again: synthetic/ and shards/ are replaced
    assert _tree(out / "run") == run_before
    assert (out / "shards" / "dataset.json").is_file()


def test_the_demo_reads_stage_2_id_accuracy_of_the_last_epoch_against_its_classes(tmp_path):
    from xfd.config import dump_config, load_config
    from xfd.plots import CsvScalarLog

    (tmp_path / "config.yaml").write_text(dump_config(load_config("tiny.yaml", ["model.num_classes=40"])))
    log = CsvScalarLog(tmp_path / "scalars.csv")
    log.log(1, 3, 0, 1, {"acc": 0.9})  # stage 1's image-text accuracy is not the ID accuracy
    for epoch, values in [(0, [0.0, 0.1]), (1, [0.5, 0.7])]:
        for step, value in enumerate(values):
            log.log(2, epoch, step, 10 + step, {"acc": value, "loss": 1.0})
    accuracy, classes = demo.stage2_id_accuracy(tmp_path)
    assert accuracy == pytest.approx(0.6) and classes == 40
