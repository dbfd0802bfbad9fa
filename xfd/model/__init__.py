"""xfd.model: CLIP ViT video ReID with PBP prompts, metadata conditioning, VSLA adapters, temporal pooling
(mean / attention / QATW / multi-granularity), BNNeck or InstanceNorm necks and the CLIP-ReID text side.

    from xfd.config import load_config
    from xfd.model import build_model, param_groups
    cfg = load_config("xfd_vitl14.yaml", ["model.backbone.pretrained=/weights/ViT-L-14.pt"])
    model = build_model(cfg)                          # stage-2 layout: selective fine-tuning applied
    optim = torch.optim.Adam(param_groups(model, base_lr=1e-4, weight_decay=2.5e-4))
"""

from xfd.model.finetune import param_groups
from xfd.model.reid import ReIDOutput, XfdReID, build_model

__all__ = ["ReIDOutput", "XfdReID", "build_model", "param_groups"]
