"""xfd.model.backbone: random-weight CLIP checkpoints in every supported format load through the same path real
weights use, with the positional embedding interpolated to the ReID grid; bad files give clear errors."""

import open_clip
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from xfd.config import BackboneConfig, load_config
from xfd.model import build_model
from xfd.model.backbone import CheckpointMismatchError, build_clip, resolve_model_name


def _interpolated(pos: torch.Tensor, old: int, new: tuple) -> torch.Tensor:
    """CLS row + the square old x old grid resized bicubically (antialiased) to `new`."""
    grid = pos[1:].reshape(1, old, old, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=new, mode="bicubic", antialias=True, align_corners=False)
    return torch.cat([pos[:1].float(), grid.permute(0, 2, 3, 1).reshape(new[0] * new[1], -1)])


def _save_openai_style(clip, path):
    """An OpenAI-style TorchScript archive: fp16 weights, traced encode_image / encode_text."""
    half = clip.half().eval()
    image = torch.randn(1, 3, *half.visual.image_size).half()
    text = torch.zeros(1, half.context_length, dtype=torch.long)
    traced = torch.jit.trace_module(half, {"encode_image": (image,), "encode_text": (text,)}, check_trace=False)
    torch.jit.save(traced, str(path))


@pytest.mark.parametrize("fmt", ["openai_torchscript", "open_clip_pt", "wrapped_pth", "safetensors"])
def test_checkpoint_formats_load_through_build_clip(fmt, tmp_path):
    torch.manual_seed(0)
    source = open_clip.create_model(resolve_model_name("clip-tiny.json"), pretrained=None)  # 64x64: 4x4 grid
    if fmt == "openai_torchscript":
        path = tmp_path / "ViT-tiny.pt"
        _save_openai_style(source, path)
        source = source.float()  # what the loaded fp16 values compare to
        expected = {k: v.half().float() for k, v in source.state_dict().items()}
    else:
        expected = {k: v.clone() for k, v in source.state_dict().items()}
        if fmt == "open_clip_pt":
            path = tmp_path / "tiny.pt"
            torch.save(source.state_dict(), path)
        elif fmt == "wrapped_pth":
            path = tmp_path / "tiny.pth"
            torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
        else:
            path = tmp_path / "tiny.safetensors"
            save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))

    clip = build_clip(BackboneConfig(name="clip-tiny.json", pretrained=str(path), image_size=(128, 64)))
    assert clip.visual.grid_size == (8, 4)
    loaded = clip.state_dict()
    for key, value in expected.items():
        if key == "visual.positional_embedding":
            continue
        assert torch.equal(loaded[key], value.to(loaded[key].dtype)), key
    pos = loaded["visual.positional_embedding"]
    assert pos.shape == (1 + 8 * 4, 128)
    torch.testing.assert_close(pos, _interpolated(expected["visual.positional_embedding"], 4, (8, 4)))


def test_build_model_uses_the_loaded_weights(tmp_path):
    torch.manual_seed(3)
    source = open_clip.create_model(resolve_model_name("clip-tiny.json"), pretrained=None)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    model = build_model(load_config("tiny.yaml", [f"model.backbone.pretrained={tmp_path / 'w.pt'}"]))
    block = model.encoder.visual.transformer.resblocks[1].mlp.c_fc.weight
    assert torch.equal(block, source.visual.transformer.resblocks[1].mlp.c_fc.weight)
    # the text side is CLIP's too
    assert torch.equal(model.text.encoder.ln_final.weight, source.ln_final.weight)


def test_missing_weights_file_says_where_to_put_weights(tmp_path):
    cfg = BackboneConfig(name="clip-tiny.json", pretrained=str(tmp_path / "ViT-L-14.pt"), image_size=(128, 64))
    with pytest.raises(FileNotFoundError) as err:
        build_clip(cfg)
    message = str(err.value)
    assert "model.backbone.pretrained" in message and str(tmp_path / "ViT-L-14.pt") in message
    assert "never downloads" in message and "ViT-L-14.pt" in message


def test_key_mismatch_lists_the_keys(tmp_path):
    source = open_clip.create_model(resolve_model_name("clip-tiny.json"), pretrained=None)
    state = source.state_dict()
    del state["visual.ln_post.weight"]
    state["visual.extra_head.weight"] = torch.zeros(3)
    state["visual.proj"] = torch.zeros(128, 32)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointMismatchError) as err:
        build_clip(BackboneConfig(name="clip-tiny.json", pretrained=str(tmp_path / "bad.pt"), image_size=(128, 64)))
    message = str(err.value)
    assert "visual.ln_post.weight" in message and "visual.extra_head.weight" in message
    assert "visual.proj: checkpoint (128, 32) vs model (128, 64)" in message


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown open_clip architecture 'ViT-Q-99'"):
        build_clip(BackboneConfig(name="ViT-Q-99"))
    with pytest.raises(FileNotFoundError, match="JSON config"):
        build_clip(BackboneConfig(name="no-such-config.json"))


def test_vit_b16_baseline_builds_at_256x128():
    model = build_model(load_config("baseline_vitb16.yaml", ["model.backbone.pretrained=null"]))
    assert model.encoder.visual.grid_size == (16, 8)
    assert (model.encoder.width, model.encoder.output_dim, model.trainable_blocks) == (768, 512, [10, 11])


@pytest.mark.slow  # a full ViT-L/14
def test_vit_l14_checkpoint_interpolates_16x16_to_18x9(tmp_path):
    """One real-size check: a random ViT-L/14 CLIP at 224 (16x16 grid), saved as fp16 safetensors, loads at
    256x128 (18x9 grid); visual parameters match open_clip's own ViT-L/14 tower."""
    torch.manual_seed(0)
    source = open_clip.create_model("ViT-L-14", pretrained=None, force_quick_gelu=True)
    state = {k: v.half().contiguous() for k, v in source.state_dict().items()}
    pos_source = source.visual.positional_embedding.detach().half().clone()
    block_source = source.visual.transformer.resblocks[22].attn.in_proj_weight.detach().half().clone()
    del source
    save_file(state, str(tmp_path / "vitl14.safetensors"))
    del state
    clip = build_clip(BackboneConfig(name="ViT-L-14", pretrained=str(tmp_path / "vitl14.safetensors")))
    assert clip.visual.grid_size == (18, 9)
    with torch.device("meta"):  # open_clip's own ViT-L/14 tower at 256x128, for the parameter count
        reference = open_clip.create_model("ViT-L-14", force_image_size=(256, 128), device="meta")
    reference_visual = sum(p.numel() for p in reference.visual.parameters())
    assert sum(p.numel() for p in clip.visual.parameters()) == reference_visual == 303_869_952
    assert torch.equal(clip.visual.transformer.resblocks[22].attn.in_proj_weight, block_source.float())
    torch.testing.assert_close(clip.visual.positional_embedding.detach(),
                               _interpolated(pos_source.float(), 16, (18, 9)))


def test_quick_gelu_switch_selects_the_activation():
    from open_clip.transformer import QuickGELU

    act = build_clip(BackboneConfig(name="clip-tiny.json", image_size=(128, 64), quick_gelu=False))
    assert isinstance(act.visual.transformer.resblocks[0].mlp.gelu, torch.nn.GELU)
    act = build_clip(BackboneConfig(name="clip-tiny.json", image_size=(128, 64), quick_gelu=True))
    assert isinstance(act.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
