"""xfd.losses against hand-computed values on small cases, and against naive loops on PK batches."""

import math

import pytest
import torch

from xfd.losses import cross_entropy_label_smooth, i2t_loss, i2tce_loss, supcon_loss, t2i_loss, triplet_loss


def test_label_smoothed_ce_hand_value():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([0, 2])
    z0 = math.exp(2) + 2
    z1 = 2 + math.e
    logp0 = [2 - math.log(z0), -math.log(z0), -math.log(z0)]
    logp1 = [-math.log(z1), 1 - math.log(z1), -math.log(z1)]
    eps = 0.1

    def one(logp, label):
        q = [eps / 3 + (1 - eps if k == label else 0.0) for k in range(3)]
        return -sum(qk * lp for qk, lp in zip(q, logp))

    expected = (one(logp0, 0) + one(logp1, 2)) / 2
    assert cross_entropy_label_smooth(logits, labels, eps).item() == pytest.approx(expected, rel=1e-6)
    # eps = 0 is plain cross-entropy
    assert cross_entropy_label_smooth(logits, labels, 0.0).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-6)


def test_batch_hard_triplet_hand_value():
    # 1-D points 0, 1 (id 0) and 3, 5 (id 1): (d_ap, d_an) = (1,3), (1,2), (2,2), (2,4)
    x = torch.tensor([[0.0], [1.0], [3.0], [5.0]])
    y = torch.tensor([0, 0, 1, 1])
    assert triplet_loss(x, y, margin=0.3).item() == pytest.approx(0.3 / 4, abs=1e-5)
    soft = sum(math.log1p(math.exp(g)) for g in (-2, -1, 0, -2)) / 4
    assert triplet_loss(x, y, soft_margin=True).item() == pytest.approx(soft, abs=1e-5)


def test_triplet_skips_anchors_without_positives():
    x = torch.tensor([[0.0], [1.0], [3.0]])
    y = torch.tensor([0, 0, 1])  # the id-1 anchor has no positive
    # anchors 0 and 1: (d_ap, d_an) = (1, 3), (1, 2) -> margin 1.5: (1-3+1.5)=0, (1-2+1.5)=0.5
    assert triplet_loss(x, y, margin=1.5).item() == pytest.approx(0.25, abs=1e-5)
    lonely = triplet_loss(torch.randn(2, 4, requires_grad=True), torch.tensor([0, 1]))
    assert lonely.item() == 0.0 and lonely.requires_grad


def _triplet_loop(x, y, margin):
    losses = []
    for i in range(len(y)):
        d = [(x[i] - x[j]).norm().item() for j in range(len(y))]
        ap = max(d[j] for j in range(len(y)) if y[j] == y[i] and j != i)
        an = min(d[j] for j in range(len(y)) if y[j] != y[i])
        losses.append(max(0.0, ap - an + margin))
    return sum(losses) / len(losses)


def test_triplet_matches_a_loop_on_a_pk_batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 8, generator=g)
    y = torch.arange(3).repeat_interleave(4)  # P = 3, K = 4
    assert triplet_loss(x, y, margin=0.3).item() == pytest.approx(_triplet_loop(x, y, 0.3), rel=1e-5)


def test_supcon_hand_value_with_repeated_identities():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # anchors with ids 0, 0, 1
    c = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, -1.0]])  # contrasts with ids 0, 0, 1
    ids = torch.tensor([0, 0, 1])
    logits = a @ c.T
    expected = 0.0
    for i in range(3):
        lse = math.log(sum(math.exp(v) for v in logits[i].tolist()))
        pos = [j for j in range(3) if ids[j] == ids[i]]
        expected += -sum(logits[i, j].item() - lse for j in pos) / len(pos)
    expected /= 3
    assert supcon_loss(a, c, ids, ids).item() == pytest.approx(expected, rel=1e-6)
    assert i2t_loss(a, c, ids).item() == pytest.approx(expected, rel=1e-6)
    assert t2i_loss(c, a, ids).item() == pytest.approx(supcon_loss(c, a, ids, ids).item(), rel=1e-6)
    assert supcon_loss(a, c, ids, ids, scale=2.0).item() == pytest.approx(
        supcon_loss(2 * a, c, ids, ids).item(), rel=1e-6)


def test_i2tce_hand_value():
    img = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    txt = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # 3 identities
    y = torch.tensor([0, 1])
    eps = 0.1
    expected = 0.0
    for i in range(2):
        s = [img[i] @ t for t in txt]
        lse = math.log(sum(math.exp(v.item()) for v in s))
        logp = [v.item() - lse for v in s]
        q = [eps / 3 + (1 - eps if k == y[i] else 0) for k in range(3)]
        expected += -sum(qk * lp for qk, lp in zip(q, logp))
    assert i2tce_loss(img, txt, y, epsilon=eps).item() == pytest.approx(expected / 2, rel=1e-6)


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match=r"expected labels \(3,\)"):
        triplet_loss(torch.randn(3, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"class text features \(C, 4\)"):
        i2tce_loss(torch.randn(2, 4), torch.randn(5, 3), torch.tensor([0, 1]))
