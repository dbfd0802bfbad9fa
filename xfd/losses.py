"""ReID losses, vectorised over a batch of (B, C) features (PK batches: P identities x K tracklets).

- `cross_entropy_label_smooth`: ID loss, target q = (1 - eps) one_hot + eps / C            (stage 2, weight 0.25)
- `triplet_loss`: batch-hard triplet on Euclidean distances, hard margin max(0, d_ap - d_an + m) or soft margin
  log(1 + exp(d_ap - d_an))                                                                   (stage 2, m = 0.3)
- `supcon_loss` / `i2t_loss` / `t2i_loss`: CLIP-ReID's supervised contrastive image<->text loss; every
  same-identity pair in the batch is a positive                                              (stage 1, and 2)
- `i2tce_loss`: image-to-text cross-entropy of each image against every identity's (cached) text feature, with
  label smoothing                                                                              (stage 2)

Similarity convention for the image-text losses: logits = scale * a @ b.T on the features as given. CLIP-ReID
uses raw features and scale 1; pass L2-normalised features and e.g. scale = 1 / temperature for cosine logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_pair(features: torch.Tensor, labels: torch.Tensor, name: str) -> None:
    if features.ndim != 2:
        raise ValueError(f"{name}: expected features (B, C), got {tuple(features.shape)}")
    if labels.shape != (features.shape[0],):
        raise ValueError(f"{name}: expected labels ({features.shape[0]},), got {tuple(labels.shape)}")


def cross_entropy_label_smooth(logits: torch.Tensor, labels: torch.Tensor, epsilon: float = 0.1) -> torch.Tensor:
    """Mean over the batch of -sum_k q_k log softmax(logits)_k with q = (1 - eps) one_hot(label) + eps / C."""
    _check_pair(logits, labels, "cross_entropy_label_smooth")
    log_probs = F.log_softmax(logits.float(), dim=1)  # (B, C)
    nll = -log_probs.gather(1, labels[:, None]).squeeze(1)  # (B,)
    uniform = -log_probs.mean(dim=1)  # (B,) = -sum_k (1/C) log p_k
    return ((1.0 - epsilon) * nll + epsilon * uniform).mean()


def pairwise_euclidean(x: torch.Tensor) -> torch.Tensor:
    """(B, B) Euclidean distances; the clamp keeps sqrt's gradient finite on the diagonal."""
    sq = (x * x).sum(dim=1)  # (B,)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    return d2.clamp_min(1e-12).sqrt()


def triplet_loss(features: torch.Tensor, labels: torch.Tensor, margin: float = 0.3,
                 soft_margin: bool = False) -> torch.Tensor:
    """Batch-hard triplet loss: for each anchor its farthest positive and nearest negative.

    Anchors with no positive (K = 1) or no negative are left out of the mean; if none remains, returns 0
    (still attached to the graph)."""
    _check_pair(features, labels, "triplet_loss")
    dist = pairwise_euclidean(features.float())  # (B, B)
    same = labels[:, None] == labels[None, :]  # (B, B)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos = same & ~eye
    neg = ~same
    d_ap = dist.masked_fill(~pos, float("-inf")).amax(dim=1)  # (B,) hardest positive
    d_an = dist.masked_fill(~neg, float("inf")).amin(dim=1)  # (B,) hardest negative
    valid = pos.any(dim=1) & neg.any(dim=1)
    if not bool(valid.any()):
        return features.sum() * 0.0
    gap = d_ap[valid] - d_an[valid]
    losses = F.softplus(gap) if soft_margin else F.relu(gap + margin)
    return losses.mean()


def supcon_loss(anchors: torch.Tensor, contrasts: torch.Tensor, anchor_labels: torch.Tensor,
                contrast_labels: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Supervised contrastive loss (CLIP-ReID Eq. 2): for anchor i,
    -(1 / |P(i)|) sum_{p in P(i)} log softmax_j(scale * a_i . c_j)_p, P(i) = contrasts with i's label;
    averaged over anchors that have at least one positive."""
    _check_pair(anchors, anchor_labels, "supcon_loss anchors")
    _check_pair(contrasts, contrast_labels, "supcon_loss contrasts")
    logits = scale * anchors.float() @ contrasts.float().T  # (A, N)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (anchor_labels[:, None] == contrast_labels[None, :]).float()  # (A, N)
    count = positive.sum(dim=1)
    has_pos = count > 0
    mean_log_prob_pos = (positive * log_prob).sum(dim=1)[has_pos] / count[has_pos]
    return -mean_log_prob_pos.mean()


def i2t_loss(image_features: torch.Tensor, text_features: torch.Tensor, labels: torch.Tensor,
             scale: float = 1.0) -> torch.Tensor:
    """Image-to-text: each image anchors against the batch's text features (same-identity texts positive)."""
    return supcon_loss(image_features, text_features, labels, labels, scale)


def t2i_loss(text_features: torch.Tensor, image_features: torch.Tensor, labels: torch.Tensor,
             scale: float = 1.0) -> torch.Tensor:
    """Text-to-image: each text anchors against the batch's image features (same-identity images positive)."""
    return supcon_loss(text_features, image_features, labels, labels, scale)


def i2tce_loss(image_features: torch.Tensor, class_text_features: torch.Tensor, labels: torch.Tensor,
               epsilon: float = 0.1, scale: float = 1.0) -> torch.Tensor:
    """Image-to-text cross-entropy: logits = scale * image (B, E) @ text (C, E).T over all C identities,
    label-smoothed CE with the image's identity as target."""
    if class_text_features.ndim != 2 or class_text_features.shape[1] != image_features.shape[1]:
        raise ValueError(f"i2tce_loss: expected class text features (C, {image_features.shape[1]}), "
                         f"got {tuple(class_text_features.shape)}")
    logits = scale * image_features.float() @ class_text_features.float().T  # (B, C)
    return cross_entropy_label_smooth(logits, labels, epsilon)
