"""The one typed experiment config of xfd (docs/design.md, decision 6).

An experiment is a YAML file loaded into `ExperimentConfig`, a tree of dataclasses. Loading validates everything
up front: an unknown key, a value of the wrong type or a value out of range is a `ConfigError` that names the full
dotted key (``model.temporal.pooling: expected one of ['mean', 'attention', 'qatw'], got 'max'``), so a typo never
silently falls back to a default.

Sections: `model` (what `build_model` builds), `data` (shards, frames, augmentation), `train` (the two-stage
schedule, batching, checkpoints, fault policies) and `eval` (feature extraction). DeepSpeed JSON files hold
engine settings only (docs/design.md, decision 6).

Overrides: `load_config(path, ["model.temporal.pooling=mean", "model.num_classes=120"])` applies dotted
``key=value`` pairs to the raw YAML tree before validation (values are parsed as YAML scalars/lists, so ``=null``,
``=[22,23]`` and ``=1e-4`` work), hence overrides are validated exactly like the file.
"""

from __future__ import annotations

import dataclasses
import pathlib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, List, Literal, Optional, Tuple, Union

import yaml

CONFIG_DIR = pathlib.Path(__file__).parent / "configs"


class ConfigError(ValueError):
    """A config value is unknown, missing, mistyped or out of range; `key` is the dotted path to it."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)

    def under(self, prefix: str) -> "ConfigError":
        """The same error with `prefix` prepended to its key (used while descending the tree)."""
        return ConfigError(f"{prefix}.{self.key}" if self.key else prefix, self.message)


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(key, message)


# ---------------------------------------------------------------------------------------------------------------
# model section
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class BackboneConfig:
    """The CLIP image (and text) encoder, from open_clip."""

    # open_clip architecture name ("ViT-L-14", "ViT-B-16") or a path to an open_clip JSON model config
    # (absolute, relative to the working directory, or relative to xfd/configs/, e.g. "clip-tiny.json").
    name: str = "ViT-L-14"
    # Local weights file: OpenAI CLIP TorchScript .pt, open_clip state dict (.pt/.pth/.bin) or .safetensors.
    # None = random init (tests, FLOP counts). Never downloaded: these machines are offline.
    pretrained: Optional[str] = None
    # Input (H, W). The positional embedding is interpolated from the checkpoint's grid to this one.
    image_size: Tuple[int, int] = (256, 128)
    # Activation of the MLPs: OpenAI's CLIP weights were trained with QuickGELU (true); open_clip's LAION
    # weights for the plain "ViT-L-14" architecture use nn.GELU (false).
    quick_gelu: bool = True
    # Recompute each transformer block in the backward pass (activation checkpointing).
    grad_checkpointing: bool = False

    def __post_init__(self):
        _require(bool(self.name), "name", "must name an open_clip architecture or a JSON config file")
        _require(len(self.image_size) == 2 and all(s > 0 for s in self.image_size), "image_size",
                 f"expected two positive ints (H, W), got {self.image_size}")


@dataclass
class FinetuneConfig:
    """Selective fine-tuning: which pretrained backbone parameters train, and at what LR scale."""

    freeze_backbone: bool = True  # False = fine-tune every backbone parameter (FT-CLIP)
    # Backbone blocks that stay trainable when the backbone is frozen. Negative indices count from the end.
    trainable_blocks: List[int] = field(default_factory=lambda: [22, 23])
    # Also train the final LayerNorm and the visual projection (ln_post, proj) with the unfrozen blocks.
    train_post: bool = False
    # LR of trainable pretrained parameters = base LR x this (prompts, adapters and heads get the base LR).
    backbone_lr_scale: float = 0.1

    def __post_init__(self):
        _require(self.backbone_lr_scale > 0, "backbone_lr_scale", f"must be > 0, got {self.backbone_lr_scale}")
        _require(len(set(self.trainable_blocks)) == len(self.trainable_blocks), "trainable_blocks",
                 f"duplicate block index in {self.trainable_blocks}")


@dataclass
class PromptConfig:
    """PBP: learnable platform (ground / aerial) prompts appended to the keys/values of the first `depth` blocks."""

    enabled: bool = True
    length: int = 4
    depth: int = 9

    def __post_init__(self):
        _require(self.length >= 1, "length", f"must be >= 1, got {self.length}")
        _require(self.depth >= 1, "depth", f"must be >= 1, got {self.depth}")


@dataclass
class MetadataConfig:
    """Altitude / distance / angle bin embeddings (ground = an extra last bin), zero-initialised."""

    enabled: bool = True
    # Where the metadata embedding is added: to every PBP prompt token and/or to the CLS token.
    targets: List[Literal["prompts", "cls"]] = field(default_factory=lambda: ["prompts", "cls"])
    altitude_bins: int = 18  # aerial bins; the table has one more row (the ground bin, last)
    distance_bins: int = 18
    angle_bins: int = 3

    def __post_init__(self):
        for key in ("altitude_bins", "distance_bins", "angle_bins"):
            _require(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        _require(len(set(self.targets)) == len(self.targets), "targets", f"duplicate target in {self.targets}")
        _require(not self.enabled or len(self.targets) > 0, "targets", "metadata is enabled but has no target")


@dataclass
class AdapterConfig:
    """VSLA adapters: IFA (parallel to each MLP) and CFAA (cross-frame attention, parallel to each attention)."""

    ifa: bool = True
    cfaa: bool = True
    bottleneck: int = 256
    cfaa_heads: int = 4
    layers: Optional[List[int]] = None  # None = every block; negative indices count from the end

    def __post_init__(self):
        _require(self.bottleneck >= 1, "bottleneck", f"must be >= 1, got {self.bottleneck}")
        _require(self.cfaa_heads >= 1, "cfaa_heads", f"must be >= 1, got {self.cfaa_heads}")
        _require(self.bottleneck % self.cfaa_heads == 0, "cfaa_heads",
                 f"bottleneck {self.bottleneck} is not divisible by {self.cfaa_heads} heads")


@dataclass
class TemporalConfig:
    """How frame features (B, L, C) become one tracklet feature (B, C)."""

    pooling: Literal["mean", "attention", "qatw"] = "attention"
    qatw_hidden: int = 128  # hidden width of QATW's per-frame quality MLP
    qatw_prior: bool = True  # QATW: distance/altitude bins set how strongly quality gates the weights
    multi_granularity: bool = False  # SAS-VPReID-style windows of `strides` frames, learnable fusion
    strides: List[int] = field(default_factory=lambda: [2, 4, 8])

    def __post_init__(self):
        _require(self.qatw_hidden >= 1, "qatw_hidden", f"must be >= 1, got {self.qatw_hidden}")
        _require(len(self.strides) >= 1 and all(s >= 1 for s in self.strides), "strides",
                 f"expected a non-empty list of ints >= 1, got {self.strides}")
        _require(len(set(self.strides)) == len(self.strides), "strides", f"duplicate stride in {self.strides}")


@dataclass
class HeadConfig:
    """Neck between the pooled features and the ID classifiers."""

    neck: Literal["bnneck", "instancenorm", "none"] = "bnneck"


@dataclass
class TextConfig:
    """CLIP-ReID text side: ID-specific learnable tokens in a template, fed to the frozen text encoder."""

    enabled: bool = True
    template: str = "A photo of X X X X person."  # the run of `n_ctx` X's is replaced by learnable tokens
    n_ctx: int = 4

    def __post_init__(self):
        _require(self.n_ctx >= 1, "n_ctx", f"must be >= 1, got {self.n_ctx}")
        words = self.template.replace(".", " ").split()
        _require(" ".join(["X"] * self.n_ctx) in " ".join(words), "template",
                 f"must contain {self.n_ctx} consecutive 'X' placeholders, got {self.template!r}")


@dataclass
class ModelConfig:
    """Everything `xfd.model.build_model` needs."""

    num_classes: int = 1  # training identities; training sets it from the data (model.num_classes=N)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    metadata: MetadataConfig = field(default_factory=MetadataConfig)
    adapters: AdapterConfig = field(default_factory=AdapterConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    text: TextConfig = field(default_factory=TextConfig)
    # An xfd model file (RUN/model.safetensors of an earlier run) to start from, as one starts from pretrained
    # weights: every tensor whose name and shape fit is loaded over the freshly built model (after
    # backbone.pretrained); the rest keep their initialisation, and training says which.
    init_from: Optional[str] = None

    def __post_init__(self):
        _require(self.num_classes >= 1, "num_classes", f"must be >= 1, got {self.num_classes}")
        _require(not (self.metadata.enabled and "prompts" in self.metadata.targets and not self.prompts.enabled),
                 "metadata.targets", "'prompts' is a target but prompts.enabled is false")


# ---------------------------------------------------------------------------------------------------------------
# data, train and eval sections
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class AugmentConfig:
    """Clip-consistent training augmentation (docs/model.md): one draw per tracklet, applied to all its frames.

    The DALI pipeline takes this type itself (`FramePipeline(augment=...)`; None = evaluation, no augmentation);
    the frame size is the model's `backbone.image_size`."""

    flip_p: float = 0.5
    pad: int = 10
    erase_p: float = 0.5
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.05  # fraction of a full turn

    def __post_init__(self):
        for key in ("flip_p", "erase_p"):
            _require(0.0 <= getattr(self, key) <= 1.0, key, f"must lie in [0, 1], got {getattr(self, key)}")
        _require(self.pad >= 0, "pad", f"must be >= 0, got {self.pad}")
        for key in ("brightness", "contrast", "saturation"):
            _require(0.0 <= getattr(self, key) < 1.0, key, f"must lie in [0, 1), got {getattr(self, key)}")
        _require(0.0 <= self.hue <= 0.5, "hue", f"must lie in [0, 0.5], got {self.hue}")


@dataclass
class DataConfig:
    """Where the shards are and how tracklets become batches. Frame size = model.backbone.image_size."""

    root: Optional[str] = None  # the xfd-shard output folder (with dataset.json); `--data DIR` sets it
    train_split: str = "train"
    val_split: Optional[str] = "val"  # held-out identities for validation; null = no validation
    num_frames: int = 16  # L frames per tracklet
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    dali_threads: int = 2  # DALI CPU threads per rank
    prefetch: int = 2  # batches decoded ahead of the training step
    # A corrupt frame met while training: `raise` stops with shard, key and frame named; `skip` replaces the
    # tracklet by another of the same identity and counts it (listed in the run's skipped.json).
    on_error: Literal["raise", "skip"] = "raise"

    def __post_init__(self):
        _require(self.num_frames >= 1, "num_frames", f"must be >= 1, got {self.num_frames}")
        _require(self.dali_threads >= 1, "dali_threads", f"must be >= 1, got {self.dali_threads}")
        _require(self.prefetch >= 1, "prefetch", f"must be >= 1, got {self.prefetch}")


@dataclass
class StageConfig:
    """One stage of the CLIP-ReID schedule: Adam, linear warm-up from `warmup_factor`·LR, then cosine.

    `batch_size` is the global batch: tracklets per optimizer step over all ranks together (paper 001: 48 in stage
    1, 24 = P x K in stage 2). Each rank's micro-batch and the gradient accumulation are derived from it and the
    world size (`train.max_micro_batch`), so a config means the same on 1 GPU and on 64. A different batch is an
    explicit choice; `lr_scaling` then says how the LR follows it, relative to `reference_batch`."""

    epochs: int = 1
    lr: float = 1e-4
    weight_decay: float = 1e-4
    # Decay of biases and the other no-decay parameters (1-D gains, token tables; xfd/model/finetune.py) — the
    # paper's "weight decay (bias)". Stage 1 trains only the text context vectors, which are in that group.
    weight_decay_bias: float = 1e-4
    warmup_epochs: float = 5.0
    warmup_factor: float = 0.1  # LR at step 0 = lr x warmup_factor
    min_lr_factor: float = 0.01  # LR at the end of the cosine = lr x min_lr_factor
    batch_size: int = 24  # global batch (tracklets per optimizer step, all ranks together)
    # How `lr` follows a batch other than the one it was tuned for: none (lr as written), linear
    # (lr x batch_size / reference_batch) or sqrt (lr x sqrt(batch_size / reference_batch)).
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    reference_batch: int = 0  # the batch `lr` was tuned for; required by linear/sqrt

    def __post_init__(self):
        _require(self.epochs >= 0, "epochs", f"must be >= 0, got {self.epochs}")
        _require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        _require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        _require(self.weight_decay_bias >= 0, "weight_decay_bias", f"must be >= 0, got {self.weight_decay_bias}")
        _require(self.warmup_epochs >= 0, "warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")
        _require(0 < self.warmup_factor <= 1, "warmup_factor", f"must lie in (0, 1], got {self.warmup_factor}")
        _require(0 <= self.min_lr_factor <= 1, "min_lr_factor", f"must lie in [0, 1], got {self.min_lr_factor}")
        _require(self.batch_size >= 2, "batch_size", f"must be >= 2, got {self.batch_size}")
        _require(self.reference_batch >= 0, "reference_batch", f"must be >= 0, got {self.reference_batch}")
        _require(self.lr_scaling == "none" or self.reference_batch >= 1, "reference_batch",
                 f"lr_scaling={self.lr_scaling} scales the LR by batch_size / reference_batch: set reference_batch "
                 "to the batch the LR was tuned for")

    @property
    def scaled_lr(self) -> float:
        """The base LR this stage trains with: `lr` scaled for `batch_size` by `lr_scaling`."""
        if self.lr_scaling == "none":
            return self.lr
        ratio = self.batch_size / self.reference_batch
        return self.lr * (ratio if self.lr_scaling == "linear" else ratio ** 0.5)


@dataclass
class LossConfig:
    """Stage-2 loss weights (paper 001 Eq. 1: 0.25 ID + 1.0 triplet + 1.0 i2t + 1.0 t2i, plus VSLA-CLIP's 1.0 i2tce)
    and the image-text similarity scale."""

    id_weight: float = 0.25
    triplet_weight: float = 1.0
    i2tce_weight: float = 1.0
    i2t_weight: float = 1.0  # SupCon image -> the batch's (fixed) text features
    t2i_weight: float = 1.0  # SupCon text -> the batch's image features
    label_smoothing: float = 0.1
    triplet_margin: float = 0.3
    # Image-text logits = (normalised image . normalised text) / temperature, in both stages.
    temperature: float = 0.07

    def __post_init__(self):
        for key in ("id_weight", "triplet_weight", "i2tce_weight", "i2t_weight", "t2i_weight"):
            _require(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")
        _require(0 <= self.label_smoothing < 1, "label_smoothing", f"must lie in [0, 1), got {self.label_smoothing}")
        _require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")


@dataclass
class TrainConfig:
    """The two-stage schedule, batching, checkpointing and fault policy. Engine settings (ZeRO stage,
    offload, communication) live in the DeepSpeed JSON; batch sizes, clipping and precision are set from here.

    Batches are global (`stage1.batch_size`, `stage2.batch_size`): every rank takes a consecutive slice of each
    global batch, batch-level losses (triplet mining, SupCon) see the features of all ranks, and an epoch is one
    pass over the training tracklets, whatever the number of ranks."""

    seed: int = 0
    instances: int = 4  # K tracklets per identity in stage 2's PK batches; P = stage2.batch_size / K
    # Most tracklets a rank runs through the model in one forward pass (memory); 0 = no cap. When a rank's share
    # of the global batch is larger, it is split into micro-batches whose gradients accumulate.
    max_micro_batch: int = 0
    grad_clip: float = 1.0  # max global gradient norm; 0 = off
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto = bf16 on GPUs, fp32 on CPU
    stage1: StageConfig = field(default_factory=lambda: StageConfig(epochs=50, lr=3.5e-4, weight_decay=1e-4,
                                                                     warmup_epochs=5, batch_size=48))
    stage2: StageConfig = field(default_factory=lambda: StageConfig(epochs=40, lr=1e-4, weight_decay=2.5e-4,
                                                                     warmup_epochs=5, batch_size=24))
    loss: LossConfig = field(default_factory=LossConfig)
    checkpoint_every: int = 0  # optimizer steps between checkpoints (0 = only at epoch ends)
    keep_checkpoints: int = 2  # the last K checkpoints are kept
    validate_every: int = 5  # stage-2 epochs between validations (and after the last); 0 = never
    log_every: int = 10  # optimizer steps between monitor/CSV scalars
    # A NaN/inf loss: `raise` stops the run naming stage, epoch, step and the batch's tracklets; `skip` drops
    # that micro-batch on every rank (no update) and counts it.
    on_nonfinite: Literal["raise", "skip"] = "raise"
    max_steps: int = 0  # stop after this many optimizer steps in total (smoke tests); 0 = the full schedule

    def __post_init__(self):
        _require(self.instances >= 1, "instances", f"must be >= 1, got {self.instances}")
        _require(self.max_micro_batch >= 0, "max_micro_batch", f"must be >= 0, got {self.max_micro_batch}")
        _require(self.stage2.batch_size % self.instances == 0, "stage2.batch_size",
                 f"{self.stage2.batch_size} is not a multiple of instances (K={self.instances}): stage 2's batch "
                 "is P identities x K tracklets")
        _require(self.grad_clip >= 0, "grad_clip", f"must be >= 0, got {self.grad_clip}")
        _require(self.keep_checkpoints >= 1, "keep_checkpoints", f"must be >= 1, got {self.keep_checkpoints}")
        for key in ("checkpoint_every", "validate_every", "max_steps"):
            _require(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")
        _require(self.log_every >= 1, "log_every", f"must be >= 1, got {self.log_every}")

    @property
    def identities(self) -> int:
        """P: identities in each stage-2 global batch."""
        return self.stage2.batch_size // self.instances


EVAL_FRAMES = ("even", "clips")


@dataclass
class EvalConfig:
    """Feature extraction for validation and evaluation."""

    batch_size: int = 8  # tracklets (clips with frames: clips) per extraction batch
    flip_tta: bool = True
    rerank: bool = False  # k-reciprocal re-ranking in validation
    # even: L = data.num_frames evenly spaced frames a tracklet (docs/model.md); clips: every frame, in consecutive
    # clips of L (the last padded), the clips' features averaged — slower by about n / L, uses every frame
    frames: str = "even"

    def __post_init__(self):
        _require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _require(self.frames in EVAL_FRAMES, "frames", f"must be one of {EVAL_FRAMES}, got {self.frames!r}")


@dataclass
class ExperimentConfig:
    """A whole experiment: the model, the data it reads, how it trains and how it is evaluated."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ---------------------------------------------------------------------------------------------------------------
# loading, overrides, dumping
# ---------------------------------------------------------------------------------------------------------------


# Keys of earlier versions whose meaning changed: a config that still sets them is told what replaced them.
RETIRED_KEYS = {
    "train.identities": "removed: batches are global now; stage 2's batch is train.stage2.batch_size "
                        "(= P identities x K=train.instances over all ranks together)",
    "train.gradient_accumulation": "removed: accumulation follows from the global batch, the world size and "
                                   "train.max_micro_batch",
    "train.global_batch": "removed: train.stage1.batch_size and train.stage2.batch_size are the global batches",
}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """`value` (parsed YAML) as type `tp`, or a ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, key)
    if origin is Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _convert(value, inner[0], key)
        raise ConfigError(key, f"unsupported union type {tp}")  # pragma: no cover - not used by our fields
    if origin is Literal:
        if value not in args:
            raise ConfigError(key, f"expected one of {list(args)}, got {value!r}")
        return value
    if origin in (list, List):
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {value!r}")
        return [_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (tuple, Tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected a list of {len(args)} values, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(key, f"expected {len(args)} values, got {len(value)}: {value!r}")
        return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an int, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads "1e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    raise ConfigError(key, f"unsupported field type {_type_name(tp)}")  # pragma: no cover


def _from_dict(cls: type, data: Any, prefix: str) -> Any:
    """Build dataclass `cls` from a mapping; every key must be a field; missing fields keep their defaults."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(prefix, f"expected a mapping for {cls.__name__}, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else str(unknown[0])
        if where in RETIRED_KEYS:
            raise ConfigError(where, RETIRED_KEYS[where])
        raise ConfigError(where, f"unknown key (known keys here: {names})")
    kwargs = {}
    for name in names:
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], f"{prefix}.{name}" if prefix else name)
    try:
        return cls(**kwargs)
    except ConfigError as err:  # raised by __post_init__ with a key relative to this section
        raise (err.under(prefix) if prefix else err) from None


def apply_overrides(raw: dict, overrides: List[str] | Tuple[str, ...]) -> dict:
    """Set dotted `key=value` pairs in the raw (unvalidated) config tree; values are parsed as YAML."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, "override must look like dotted.key=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = raw
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(".".join(parts[: depth + 1]), f"is a value, cannot set {key}")
            node = child
        node[parts[-1]] = parse_yaml(text)
    return raw


def config_from_dict(raw: dict, overrides: List[str] | Tuple[str, ...] = ()) -> ExperimentConfig:
    """Validate a raw config tree (e.g. parsed YAML) into an ExperimentConfig."""
    import copy

    raw = apply_overrides(copy.deepcopy(raw or {}), overrides)
    return _from_dict(ExperimentConfig, raw, "")


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key repeated in one mapping is an error: PyYAML would keep the last
    value silently, so a second `train:` section would replace the first one wholesale."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:  # an unhashable key: PyYAML's own error follows
                    continue
                if first is not key_node:
                    raise ConfigError(str(key), f"key appears twice in the same mapping: line "
                                                f"{first.start_mark.line + 1} and line {key_node.start_mark.line + 1}"
                                                f"{_where(key_node)}; keep one")
        return super().construct_mapping(node, deep=deep)


def _where(node) -> str:
    name = node.start_mark.name
    return f" of {name}" if name and not name.startswith("<") else ""


def parse_yaml(text_or_stream) -> Any:
    """YAML to Python like `yaml.safe_load`, refusing duplicate keys (a ConfigError naming both lines)."""
    return yaml.load(text_or_stream, Loader=_StrictLoader)


def resolve_config_path(path: str | pathlib.Path) -> pathlib.Path:
    """`path` as given if it exists, else the packaged config of that name in xfd/configs/."""
    candidate = pathlib.Path(path)
    if candidate.is_file():
        return candidate
    packaged = CONFIG_DIR / candidate.name
    if packaged.is_file():
        return packaged
    raise FileNotFoundError(
        f"config {path} not found (looked at {candidate.resolve()} and {packaged}); packaged configs: "
        f"{sorted(p.name for p in CONFIG_DIR.glob('*.yaml'))}")


def load_config(path: str | pathlib.Path, overrides: List[str] | Tuple[str, ...] = ()) -> ExperimentConfig:
    """Load and validate a YAML experiment config, applying dotted `key=value` overrides first."""
    resolved = resolve_config_path(path)
    with open(resolved, encoding="utf-8") as handle:
        raw = parse_yaml(handle)
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError("", f"{resolved}: top level must be a mapping, got {type(raw).__name__}")
    return config_from_dict(raw or {}, overrides)


def config_to_dict(cfg: Any) -> dict:
    """Plain dict of a config (tuples become lists), ready for YAML/JSON."""

    def plain(value):
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(cfg))


def dump_config(cfg: Any) -> str:
    """YAML text of a config; `load_config` of it gives back an equal config."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
