"""The stage-2 objective (paper 001 Eq. 1 + VSLA-CLIP's i2tce) computed by hand, term by term in plain Python, on a
batch of P 2 x K 2 with 3 identities: any wrong weight, stream, temperature or smoothing changes the total."""

from __future__ import annotations

import math

import pytest
import torch

from xfd.config import LossConfig, load_config
from xfd.engine.objectives import stage1_loss, stage2_loss
from xfd.model import ReIDOutput

LABELS = [0, 0, 2, 2]
LOGITS = ([[2.0, 0.5, -1.0], [1.0, 1.5, 0.0], [0.0, -0.5, 1.0], [0.5, 3.0, 2.5]],  # CLS stream (B, C): 2 right
          [[1.0, 0.0, 0.2], [0.3, 0.5, -0.4], [-1.0, 0.0, 0.7], [0.2, 0.9, 1.1]])  # projected stream: 3 right
FEATURES = ([[0.0, 1.0, 0.0], [0.5, 1.5, 0.0], [1.0, 0.0, 0.5], [0.2, 1.0, 0.1]],  # CLS (B, D): anchor 3 hard
            [[1.0, 0.0], [0.8, 0.3], [0.0, 1.0], [0.9, 0.4]])  # projected (B, E) = the image features
TEXT = [[1.0, 0.2], [0.3, 1.0], [-0.2, 1.0]]  # every identity's text feature (C, E)


def norm(v):
    length = math.sqrt(sum(x * x for x in v))
    return [x / length for x in v]


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def log_softmax(row):
    top = max(row)
    log_sum = top + math.log(sum(math.exp(x - top) for x in row))
    return [x - log_sum for x in row]


def smoothed_ce(rows, labels, eps):
    total = 0.0
    for row, y in zip(rows, labels):
        logp = log_softmax(row)
        total += (1 - eps) * -logp[y] + eps * -sum(logp) / len(row)
    return total / len(rows)


def batch_hard_triplet(features, labels, margin):
    losses = []
    for i, (f, y) in enumerate(zip(features, labels)):
        dist = [math.dist(f, g) for g in features]
        d_ap = max(d for j, d in enumerate(dist) if labels[j] == y and j != i)
        d_an = min(d for j, d in enumerate(dist) if labels[j] != y)
        losses.append(max(0.0, d_ap - d_an + margin))
    return sum(losses) / len(losses)


def supcon(anchors, anchor_labels, contrasts, contrast_labels, scale):
    total = 0.0
    for a, y in zip(anchors, anchor_labels):
        logp = log_softmax([scale * dot(a, c) for c in contrasts])
        positives = [lp for lp, z in zip(logp, contrast_labels) if z == y]
        total += -sum(positives) / len(positives)
    return total / len(anchors)


def objective_by_hand(loss: LossConfig) -> dict[str, float]:
    eps, scale = loss.label_smoothing, 1.0 / loss.temperature
    image = [norm(v) for v in FEATURES[1]]
    text = [norm(v) for v in TEXT]
    batch_text = [text[y] for y in LABELS]
    terms = {
        "id": smoothed_ce(LOGITS[0], LABELS, eps) + smoothed_ce(LOGITS[1], LABELS, eps),
        "triplet": sum(batch_hard_triplet(f, LABELS, loss.triplet_margin) for f in FEATURES),
        "i2tce": smoothed_ce([[scale * dot(i, t) for t in text] for i in image], LABELS, eps),
        "i2t": supcon(image, LABELS, batch_text, LABELS, scale),
        "t2i": supcon(batch_text, LABELS, image, LABELS, scale),
    }
    terms["total"] = (loss.id_weight * terms["id"] + loss.triplet_weight * terms["triplet"]
                      + loss.i2tce_weight * terms["i2tce"] + loss.i2t_weight * terms["i2t"]
                      + loss.t2i_weight * terms["t2i"])
    return terms


def output(dtype=torch.float32) -> ReIDOutput:
    logits = tuple(torch.tensor(x, dtype=dtype) for x in LOGITS)
    features = tuple(torch.tensor(x, dtype=dtype) for x in FEATURES)
    return ReIDOutput(logits=logits, features=features, image_features=features[1],
                      frame_weights=torch.full((4, 2), 0.5))


@pytest.mark.parametrize("weights", [(), ("train.loss.id_weight=0.3", "train.loss.triplet_weight=0.7",
                                          "train.loss.i2tce_weight=1.1", "train.loss.i2t_weight=1.3",
                                          "train.loss.t2i_weight=1.7", "train.loss.temperature=0.5",
                                          "train.loss.label_smoothing=0.2", "train.loss.triplet_margin=0.9")])
def test_stage2_objective_matches_the_hand_computation(weights):
    loss = load_config("xfd_vitl14.yaml", list(weights)).train.loss
    if not weights:  # the paper's Eq. 1 in the final config: 0.25 ID + 1.0 triplet + 1.0 i2t + 1.0 t2i, + 1.0 i2tce
        assert (loss.id_weight, loss.triplet_weight, loss.i2t_weight, loss.t2i_weight, loss.i2tce_weight) == (
            0.25, 1.0, 1.0, 1.0, 1.0)
    expected = objective_by_hand(loss)
    total, parts = stage2_loss(output(), torch.tensor(LABELS), torch.tensor(TEXT), loss)
    assert total.item() == pytest.approx(expected["total"], rel=1e-6)
    for name in ("id", "triplet", "i2tce", "i2t", "t2i"):
        assert parts[f"loss/{name}"].item() == pytest.approx(expected[name], rel=1e-6), name
        assert expected[name] > 0.05, name  # every term contributes to the total
    assert parts["acc"].item() == 0.75  # accuracy of the projected stream's logits


def test_the_objective_is_float32_from_bf16_features():
    loss = load_config("xfd_vitl14.yaml").train.loss
    total, parts = stage2_loss(output(torch.bfloat16), torch.tensor(LABELS), torch.tensor(TEXT), loss)
    assert total.dtype == torch.float32 and all(p.dtype == torch.float32 for p in parts.values())
    total, _ = stage1_loss(torch.tensor(FEATURES[1]).bfloat16(), torch.tensor(TEXT)[LABELS].bfloat16(),
                           torch.tensor(LABELS), loss)
    assert total.dtype == torch.float32


def test_stage1_objective_is_supcon_both_ways_at_the_temperature():
    loss = load_config("xfd_vitl14.yaml", ["train.loss.temperature=0.25"]).train.loss
    image, text = [norm(v) for v in FEATURES[1]], [norm(TEXT[y]) for y in LABELS]
    expected = supcon(image, LABELS, text, LABELS, 4.0) + supcon(text, LABELS, image, LABELS, 4.0)
    total, parts = stage1_loss(torch.tensor(FEATURES[1]), torch.tensor(TEXT)[LABELS], torch.tensor(LABELS), loss)
    assert total.item() == pytest.approx(expected, rel=1e-6)
