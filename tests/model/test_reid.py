"""xfd.model.reid: output structure for any L, extraction with flip TTA, input errors, component switches."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn


@pytest.mark.parametrize("frames", [1, 3, 6])
def test_forward_shapes_for_any_number_of_frames(make_model, make_inputs, frames):
    model = make_model("temporal.multi_granularity=true")
    model.train()
    x, platform, meta = make_inputs(batch=4, frames=frames)
    out = model(x, platform, meta)
    assert [tuple(l.shape) for l in out.logits] == [(4, 8), (4, 8)]
    assert [tuple(f.shape) for f in out.features] == [(4, 128), (4, 64)]
    assert out.image_features is out.features[1]
    assert out.frame_weights.shape == (4, frames)
    torch.testing.assert_close(out.frame_weights.sum(dim=1), torch.ones(4))
    assert out.embedding.shape == (4, model.feature_dim) == (4, 192)
    model.eval()
    feats = model.extract(x, platform, meta)
    assert feats.shape == (4, 192) and not feats.requires_grad
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(4))


def test_extract_is_the_normalised_embedding_and_flip_tta_averages_both_passes(make_model, make_inputs):
    model = make_model().eval()
    x, platform, meta = make_inputs(batch=3, frames=4)
    with torch.no_grad():
        plain = model.embed(x, platform, meta)
        flipped = model.embed(x.flip(-1), platform, meta)
    torch.testing.assert_close(model.extract(x, platform, meta), F.normalize(plain, dim=1))
    torch.testing.assert_close(model.extract(x, platform, meta, flip_tta=True),
                               F.normalize((plain + flipped) / 2, dim=1))
    assert not torch.allclose(plain, flipped)
    # the retrieval feature is concat(CLS, projected) before the necks, as the forward pass reports
    torch.testing.assert_close(model(x, platform, meta).embedding, plain)


@pytest.mark.parametrize("mutate, message", [
    (lambda x, p, m: (x[:, :, :, :64], p, m), r"frames: expected \(B, L, 3, 128, 64\), got \(2, 3, 3, 64, 64\)"),
    (lambda x, p, m: (x[0], p, m), r"frames: expected \(B, L, 3, 128, 64\), got \(3, 3, 128, 64\)"),
    (lambda x, p, m: (x, p[:1], m), r"platform: expected long \(2,\)"),
    (lambda x, p, m: (x, p + 1, m), r"platform: expected 0 \(ground\) or 1 \(aerial\)"),
    (lambda x, p, m: (x, p, m[:, :2]), r"meta: expected long \(2, 3\)"),
    (lambda x, p, m: (x, p, m.float()), r"meta: expected long \(2, 3\)"),
    (lambda x, p, m: (x, p, m + 19), r"meta: bins must lie in \[0, \[19, 19, 4\]\)"),
])
def test_bad_inputs_name_expected_and_got(make_model, make_inputs, mutate, message):
    model = make_model()
    x, platform, meta = make_inputs(batch=2, frames=3)
    with pytest.raises(ValueError, match=message):
        model(*mutate(x, platform, meta))


FULL = ()  # tiny.yaml: everything on
SWITCHES = [
    # (overrides, removed name prefixes, added names)
    (("prompts.enabled=false", "metadata.targets=[cls]"), ("encoder.prompts.", "encoder.meta_prompts."), ()),
    (("metadata.enabled=false",), ("encoder.meta_prompts.", "encoder.meta_cls."), ()),
    (("metadata.targets=[prompts]",), ("encoder.meta_cls.",), ()),
    (("adapters.ifa=false",), ("encoder.ifa.",), ()),
    (("adapters.cfaa=false",), ("encoder.cfaa.",), ()),
    (("temporal.pooling=mean",), ("pool_",), ()),
    (("temporal.pooling=attention",), ("pool_cls.quality", "pool_cls.kappa", "pool_proj.quality", "pool_proj.kappa"),
     ()),
    (("temporal.qatw_prior=false",), ("pool_cls.kappa", "pool_proj.kappa"), ()),
    (("head.neck=instancenorm",), ("neck_",), ("neck_cls.weight", "neck_proj.weight")),
    (("head.neck=none",), ("neck_",), ()),
    (("text.enabled=false",), ("text.",), ()),
]


@pytest.mark.parametrize("overrides, removed, added", SWITCHES)
def test_each_switch_changes_the_parameter_set_as_documented(make_model, overrides, removed, added):
    full = {n for n, _ in make_model(*FULL).named_parameters()}
    switched = {n for n, _ in make_model(*overrides).named_parameters()}
    expected = {n for n in full if not n.startswith(removed)} | set(added)
    assert switched == expected
    assert full != switched


def test_switched_off_necks_are_identity_and_multi_granularity_adds_stride_poolers(make_model):
    model = make_model("head.neck=none")
    assert isinstance(model.neck_cls, nn.Identity) and isinstance(model.neck_proj, nn.Identity)
    names = {n for n, _ in make_model("temporal.multi_granularity=true").named_parameters()}
    assert "pool_cls.fusion_logits" in names and "pool_cls.poolers.2.quality.0.weight" in names
    assert "pool_cls.score.weight" not in names
    model = make_model("adapters.ifa=false", "adapters.cfaa=false", "metadata.enabled=false")
    assert len(model.encoder.ifa) == 0 and model.encoder.meta_cls is None
