"""xfd.model.summary: parameter table per component and FLOP counts, on tiny and on ViT-L/14."""

import pytest

from xfd.config import load_config
from xfd.model import build_model
from xfd.model.summary import format_summary, forward_flops, main, parameter_table, train_step_flops


def test_tiny_summary_command(capsys):
    assert main(["--config", "tiny.yaml", "--frames", "4"]) == 0
    text = capsys.readouterr().out
    for row in ("backbone (open_clip visual)", "PBP prompts", "metadata embeddings", "IFA adapters",
                "CFAA adapters", "temporal pooling", "necks", "ID classifiers", "text encoder", "total"):
        assert row in text
    assert "(matches the backbone row)" in text and "forward FLOPs per tracklet of 4 frames" in text


def test_parameter_table_adds_up_and_follows_the_stage(make_model):
    model = make_model()
    rows = parameter_table(model)
    assert sum(r["params"] for r in rows.values()) == sum(p.numel() for p in model.parameters())
    for row in rows.values():
        assert row["params"] == row["trainable"] + row["frozen"]
    assert rows["text encoder"]["trainable"] == 0 and rows["IFA adapters"]["frozen"] == 0
    model.set_stage(1)
    rows = parameter_table(model)
    assert rows["text prompt learner"]["frozen"] == 0 and rows["IFA adapters"]["trainable"] == 0


def test_flops_grow_with_frames_and_training_costs_more(make_model):
    model = make_model("adapters.cfaa=false", "temporal.pooling=mean")  # every op is per frame here
    f2, f4 = forward_flops(model, 2), forward_flops(model, 4)
    assert f2 > 0 and f4 == pytest.approx(2 * f2, rel=0.01)
    assert 1.5 * f4 < train_step_flops(model, 4) < 3.5 * f4


def _vit_l14_backbone_flops_per_frame() -> float:
    """Analytic ViT-L/14 forward at 256x128: 163 tokens, width 1024, 24 blocks (2 FLOPs per multiply-add)."""
    s, d, blocks = 1 + 18 * 9, 1024, 24
    per_block = 2 * (4 * s * d * d + 2 * s * d * 4 * d) + 2 * 2 * s * s * d  # qkv+out, MLP, QK^T and AV
    return blocks * per_block + 2 * (18 * 9) * (3 * 14 * 14) * d + 2 * d * 768  # + patch conv, projection


@pytest.mark.slow  # a full ViT-L/14
def test_vit_l14_summary_counts_open_clip_plus_ours():
    model = build_model(load_config("xfd_vitl14.yaml", ["model.backbone.pretrained=null"]))
    assert model.encoder.visual.grid_size == (18, 9)
    rows = parameter_table(model)
    assert rows["backbone (open_clip visual)"]["params"] == 303_869_952
    blocks = rows["backbone (open_clip visual)"]["trainable"]
    assert blocks == 2 * sum(p.numel() for p in model.encoder.visual.transformer.resblocks[23].parameters())
    text = format_summary(model, num_frames=16)  # counts FLOPs on the meta device
    assert "open_clip ViT-L-14 visual tower alone: 303.870M params (matches the backbone row)" in text
    forward = float(text.split("forward FLOPs per tracklet of 16 frames: ")[1].split(" GFLOP")[0]) * 1e9
    backbone = 16 * _vit_l14_backbone_flops_per_frame()
    assert backbone == pytest.approx(1.62e12, rel=0.01)  # docs/model.md, Compute: ~101 GFLOP per frame
    assert backbone < forward < 1.15 * backbone  # prompts, adapters and pooling on top
