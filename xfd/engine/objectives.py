"""The losses of the two CLIP-ReID stages, as weighted sums with their parts kept for logging.

Both take the global batch: in training every rank passes the rows of all ranks (xfd/engine/gather.py), so
batch-hard triplet mining and the SupCon terms see every positive and negative of the step, as one process would.
Image-text similarities use L2-normalised features divided by `loss.temperature` in both stages (cosine logits,
as CLIP itself), so the scale does not depend on how large a randomly initialised or adapted feature happens to be.
Everything is computed in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xfd.config import LossConfig
from xfd.losses import cross_entropy_label_smooth, i2t_loss, i2tce_loss, t2i_loss, triplet_loss
from xfd.model import ReIDOutput


def stage1_loss(image_features: torch.Tensor, text_features: torch.Tensor, labels: torch.Tensor,
                loss: LossConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SupCon i2t + t2i between cached image features (B, E) and the text features of their labels (B, E)."""
    scale = 1.0 / loss.temperature
    image = F.normalize(image_features.float(), dim=1)  # (B, E)
    text = F.normalize(text_features.float(), dim=1)  # (B, E)
    i2t = i2t_loss(image, text, labels, scale)
    t2i = t2i_loss(text, image, labels, scale)
    with torch.no_grad():  # image -> the nearest text of the batch has the image's identity
        nearest = (image @ text.T).argmax(dim=1)
        accuracy = (labels[nearest] == labels).float().mean()
    return i2t + t2i, {"loss/i2t": i2t.detach(), "loss/t2i": t2i.detach(), "acc": accuracy}


def stage2_loss(out: ReIDOutput, labels: torch.Tensor, class_text: torch.Tensor,
                loss: LossConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Paper 001 Eq. 1 plus VSLA-CLIP's i2tce:

        id_weight · (CE_ls(CLS logits) + CE_ls(projected logits))          label-smoothed ID loss, both streams
      + triplet_weight · (triplet(CLS feature) + triplet(projected feature))   batch-hard, before the necks
      + i2tce_weight · CE_ls(image · every identity's text / T)             against all C fixed text features
      + i2t_weight · SupCon(image -> the batch's text / T) + t2i_weight · SupCon(text -> the batch's images / T)

    with image = the normalised projected feature (B, E), text = the normalised fixed text features (C, E), T =
    `loss.temperature`, and the batch's texts = text[labels]."""
    scale = 1.0 / loss.temperature
    id_loss = sum(cross_entropy_label_smooth(logits, labels, loss.label_smoothing) for logits in out.logits)
    tri = sum(triplet_loss(f, labels, loss.triplet_margin) for f in out.features)
    image = F.normalize(out.image_features.float(), dim=1)  # (B, E)
    text = F.normalize(class_text.float(), dim=1)  # (C, E)
    i2tce = i2tce_loss(image, text, labels, loss.label_smoothing, scale)
    batch_text = text[labels]  # (B, E)
    i2t = i2t_loss(image, batch_text, labels, scale)
    t2i = t2i_loss(batch_text, image, labels, scale)
    total = (loss.id_weight * id_loss + loss.triplet_weight * tri + loss.i2tce_weight * i2tce
             + loss.i2t_weight * i2t + loss.t2i_weight * t2i)
    parts = {"loss/id": id_loss.detach(), "loss/triplet": tri.detach(), "loss/i2tce": i2tce.detach(),
             "loss/i2t": i2t.detach(), "loss/t2i": t2i.detach()}
    with torch.no_grad():
        parts["acc"] = (out.logits[1].argmax(dim=1) == labels).float().mean()
    return total, parts
