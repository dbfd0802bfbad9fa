"""xfd.model.encoder + prompts/metadata/adapters: exact open_clip behaviour when switched off, zero effect of the
zero-initialised parts, PBP semantics, and CFAA over any number of frames."""

import pytest
import torch

from xfd.model.adapters import CrossFrameAttentionAdapter, IntraFrameAdapter

OFF = ("prompts.enabled=false", "metadata.enabled=false", "adapters.ifa=false", "adapters.cfaa=false")


def _frame_outputs(model, x, platform, meta):
    model.eval()
    with torch.no_grad():
        return model.encoder(x, platform, meta)  # (B, L, D), (B, L, E)


def test_everything_off_is_exactly_open_clip(make_model, make_inputs):
    model = make_model(*OFF)
    x, platform, meta = make_inputs(batch=2, frames=3)
    _, proj = _frame_outputs(model, x, platform, meta)
    with torch.no_grad():
        reference = model.encoder.visual(x.flatten(0, 1))  # open_clip VisionTransformer.forward
    torch.testing.assert_close(proj.flatten(0, 1), reference, rtol=1e-5, atol=1e-5)


def test_zero_initialised_metadata_and_adapters_leave_the_backbone_unchanged(make_model, make_inputs):
    model = make_model("prompts.enabled=false", "metadata.targets=[cls]")
    assert len(model.encoder.ifa) == len(model.encoder.cfaa) == 4
    x, platform, meta = make_inputs(batch=2, frames=3)
    _, proj = _frame_outputs(model, x, platform, meta)
    with torch.no_grad():
        reference = model.encoder.visual(x.flatten(0, 1))
    torch.testing.assert_close(proj.flatten(0, 1), reference, rtol=1e-5, atol=1e-5)


def test_metadata_starts_at_zero_effect_then_conditions(make_model, make_inputs):
    with_meta = make_model()  # metadata on prompts and CLS
    without = make_model("metadata.enabled=false")
    missing, unexpected = without.load_state_dict(with_meta.state_dict(), strict=False)
    assert not missing and unexpected and all(".meta_" in k for k in unexpected)
    x, platform, meta = make_inputs(batch=2, frames=3)
    other_meta = meta.clone()
    other_meta[1] = torch.tensor([5, 7, 2])
    a = _frame_outputs(with_meta, x, platform, meta)[1]
    torch.testing.assert_close(a, _frame_outputs(without, x, platform, meta)[1])
    torch.testing.assert_close(a, _frame_outputs(with_meta, x, platform, other_meta)[1])
    with torch.no_grad():
        for table in (with_meta.encoder.meta_prompts, with_meta.encoder.meta_cls):
            for emb in (table.altitude, table.distance, table.angle):
                emb.weight.normal_(std=0.5)
    b, c = _frame_outputs(with_meta, x, platform, meta)[1], _frame_outputs(with_meta, x, platform, other_meta)[1]
    assert torch.equal(b[0], c[0]) and not torch.allclose(b[1], c[1])  # only the tracklet whose bins changed


def test_metadata_tables_have_a_ground_bin(make_model):
    enc = make_model().encoder
    assert enc.meta_cls.table_sizes == (19, 19, 4) and enc.meta_prompts.table_sizes == (19, 19, 4)


def test_platform_prompts_select_by_platform(make_model, make_inputs):
    model = make_model()
    assert model.encoder.prompts.tokens.shape == (2, 2, 2, 128)  # (platform, depth, length, width)
    x, platform, meta = make_inputs(batch=2, frames=2)
    same_x = x[:1].expand(2, -1, -1, -1, -1)
    same_meta = meta[:1].expand(2, -1)
    out = _frame_outputs(model, same_x, torch.tensor([0, 1]), same_meta)[1]
    assert not torch.allclose(out[0], out[1])  # same frames, different platform prompts
    out = _frame_outputs(make_model("prompts.enabled=false", "metadata.targets=[cls]"), same_x,
                         torch.tensor([0, 1]), same_meta)[1]
    torch.testing.assert_close(out[0], out[1])  # no prompts: platform has no effect


def test_prompts_are_extra_keys_whose_outputs_are_dropped(make_model):
    """Our block (queries = image tokens only) equals full attention over [tokens; prompts] then dropping the
    prompt positions — the PBP definition."""
    model = make_model("adapters.ifa=false", "adapters.cfaa=false")
    enc = model.encoder.eval()
    block = enc.visual.transformer.resblocks[0]
    torch.manual_seed(0)
    x = torch.randn(3, 33, 128)
    p = torch.randn(3, 2, 128)
    with torch.no_grad():
        ours = enc._block(0, x, p, num_frames=1)
        h = torch.cat([block.ln_1(x), p], dim=1)
        full = block.attn(h, h, h, need_weights=False)[0][:, :33]
        y = x + full
        reference = y + block.mlp(block.ln_2(y))
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def _random_cfaa(dim=16, bottleneck=8, heads=4):
    torch.manual_seed(0)
    cfaa = CrossFrameAttentionAdapter(dim, bottleneck, heads).eval()
    with torch.no_grad():
        cfaa.up.weight.normal_()  # leave the zero init so the output is not trivially zero
    return cfaa


@pytest.mark.parametrize("frames", [1, 3, 7, 16])
def test_cfaa_any_number_of_frames_and_permutation_equivariant(frames):
    cfaa = _random_cfaa()
    x = torch.randn(2 * frames, 5, 16)  # 2 tracklets
    out = cfaa(x, frames)
    assert out.shape == x.shape
    perm = torch.randperm(frames)
    index = torch.cat([perm, perm + frames])  # the same frame permutation inside each tracklet
    torch.testing.assert_close(cfaa(x[index], frames), out[index], rtol=1e-5, atol=1e-5)


def test_cfaa_mixes_frames_of_a_tracklet_only():
    cfaa = _random_cfaa()
    x = torch.randn(2 * 4, 5, 16)
    y = x.clone()
    y[0] += 1.0  # change frame 0 of tracklet 0
    a, b = cfaa(x, 4), cfaa(y, 4)
    assert not torch.allclose(a[1], b[1])  # frame 1 of the same tracklet sees it
    torch.testing.assert_close(a[4:], b[4:])  # the other tracklet does not
    with pytest.raises(ValueError, match="whole number of tracklets"):
        cfaa(torch.randn(7, 5, 16), 4)


def test_adapters_start_at_zero():
    x = torch.randn(6, 5, 16)
    assert torch.count_nonzero(IntraFrameAdapter(16, 8)(x, 3)) == 0
    assert torch.count_nonzero(CrossFrameAttentionAdapter(16, 8, 4)(x, 3)) == 0


def test_adapter_layers_subset_and_bottleneck(make_model):
    enc = make_model("adapters.layers=[0, -1]", "adapters.bottleneck=16").encoder
    assert sorted(enc.ifa) == sorted(enc.cfaa) == ["0", "3"]
    assert enc.ifa["0"].down.out_features == 16 and enc.cfaa["3"].attn.num_heads == 4


def test_activation_checkpointing_gives_the_same_outputs_and_gradients(make_model, make_inputs):
    x, platform, meta = make_inputs(batch=2, frames=2)
    grads = []
    for flag in ("false", "true"):
        model = make_model(f"backbone.grad_checkpointing={flag}", "head.neck=none")
        model.train()
        out = model(x, platform, meta)
        (out.logits[0].sum() + out.features[1].pow(2).sum()).backward()
        grads.append((out.features[1].detach(), model.encoder.prompts.tokens.grad.clone(),
                      model.encoder.visual.transformer.resblocks[3].mlp.c_fc.weight.grad.clone()))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
