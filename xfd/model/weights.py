"""Read CLIP weight files as data — never executing code stored in them.

Supported files:
- `.safetensors` (open_clip / HF exports): read with `safetensors`, which stores only tensors.
- PyTorch pickles (`.pt`, `.pth`, `.bin`; open_clip checkpoints, `{"state_dict": ...}` wrappers):
  `torch.load(..., weights_only=True)`, whose unpickler only rebuilds tensors and plain containers.
- OpenAI CLIP's TorchScript archives (`ViT-L-14.pt`, `ViT-B-16.pt`): `torch.load(weights_only=True)` refuses
  them and `torch.jit.load` would compile and run the archive's code, so we read the archive as a zip of data:
  `data.pkl` is unpickled by `_ScriptArchiveUnpickler`, which rebuilds tensors from the raw storage records in
  `data/<key>` and turns every TorchScript module object (`__torch__.*`) into an inert attribute holder; every
  other global is refused. The module tree is then flattened to a `{dotted.name: tensor}` state dict. The
  `code/` folder of the archive is never read.

The result is a flat state dict in the checkpoint's own key layout; `xfd.model.backbone` converts it to the
open_clip layout with open_clip's own helpers.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict

import torch

# Legacy typed-storage class names (as written in TorchScript pickles) -> dtype.
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}

# Integer attributes OpenAI stores as tensors next to the weights; not parameters of any model.
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


class WeightsFormatError(ValueError):
    """The file is not a weights file we can read safely."""


class _ScriptModuleRecord:
    """Inert stand-in for a pickled TorchScript module: keeps its attributes, runs nothing."""

    def __init__(self, type_name: str):
        self.type_name = type_name
        self.attributes: Dict[str, Any] = {}

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise WeightsFormatError(f"TorchScript object {self.type_name} has non-dict state {type(state)}")
        self.attributes = dict(state)


def _record_factory(type_name: str):
    """A class whose instances are `_ScriptModuleRecord`s named `type_name` (pickle calls cls.__new__(cls))."""

    class _Record(_ScriptModuleRecord):
        def __new__(cls, *args):
            obj = object.__new__(cls)
            _ScriptModuleRecord.__init__(obj, type_name)
            return obj

        def __init__(self, *args):  # pickle's NEWOBJ does not call __init__; keep constructor args inert
            pass

    _Record.__name__ = type_name.rsplit(".", 1)[-1]
    return _Record


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, requires_grad=False, hooks=None,
                    metadata=None) -> torch.Tensor:
    """Our own rebuild for `torch._utils._rebuild_tensor_v2`: a strided view of a flat typed buffer."""
    return storage.as_strided(tuple(size), tuple(stride), offset)


def _rebuild_parameter(data: torch.Tensor, requires_grad=False, hooks=None) -> torch.Tensor:
    return data


# TorchScript pickles typed lists through these helpers; ours just return the plain data.
_JIT_LIST_BUILDERS = {
    "build_intlist": list,
    "build_doublelist": list,
    "build_boollist": list,
    "build_tensorlist": list,
    "build_genericlist": list,
    "restore_type_tag": lambda value, _type_str: value,
}


class _ScriptArchiveUnpickler(pickle.Unpickler):
    """Unpickles a TorchScript `data.pkl` with an allow-list: tensors, OrderedDict, and inert module records."""

    def __init__(self, handle, archive: zipfile.ZipFile, prefix: str):
        super().__init__(handle)
        self._archive = archive
        self._prefix = prefix
        self._storages: Dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str):
        if module.startswith("__torch__"):
            return _record_factory(f"{module}.{name}")
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]  # only ever used as a dtype tag inside storage records
        if module == "torch.jit._pickle" and name in _JIT_LIST_BUILDERS:
            return _JIT_LIST_BUILDERS[name]
        if module == "collections" and name == "OrderedDict":
            import collections

            return collections.OrderedDict
        raise WeightsFormatError(
            f"refusing to load global {module}.{name} from a TorchScript archive: only tensors and module "
            "attributes are read (weights-only)")

    def persistent_load(self, pid):
        # ('storage', dtype tag, key, location, numel) — location is ignored: everything lands on the CPU.
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise WeightsFormatError(f"unexpected persistent record {pid!r} in TorchScript archive")
        _, dtype, key, _location, numel = pid
        if not isinstance(dtype, torch.dtype):
            raise WeightsFormatError(f"unexpected storage type {dtype!r} in TorchScript archive")
        if key not in self._storages:
            raw = bytearray(self._archive.read(f"{self._prefix}data/{key}"))
            flat = torch.frombuffer(raw, dtype=dtype) if len(raw) else torch.empty(0, dtype=dtype)
            if flat.numel() != numel:
                raise WeightsFormatError(f"storage {key}: expected {numel} elements, file holds {flat.numel()}")
            self._storages[key] = flat
        return self._storages[key]


def _flatten_records(record: _ScriptModuleRecord, prefix: str, out: Dict[str, torch.Tensor]) -> None:
    for name, value in record.attributes.items():
        if isinstance(value, _ScriptModuleRecord):
            _flatten_records(value, f"{prefix}{name}.", out)
        elif isinstance(value, torch.Tensor):
            out[f"{prefix}{name}"] = value


def is_torchscript_archive(path: str | Path) -> bool:
    """True for a zip with `<root>/data.pkl` and TorchScript's `<root>/constants.pkl` or `<root>/code/`."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    roots = {n.split("/", 1)[0] for n in names if n.endswith("/data.pkl") and n.count("/") == 1}
    return any(f"{r}/constants.pkl" in names or any(n.startswith(f"{r}/code/") for n in names) for r in roots)


def read_torchscript_state_dict(path: str | Path) -> Dict[str, torch.Tensor]:
    """All tensors of a TorchScript archive's module tree, keyed by dotted attribute path, read as data only."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise WeightsFormatError(f"{path}: expected one <root>/data.pkl in the archive, found {pkl}")
        prefix = pkl[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in names and archive.read(f"{prefix}byteorder").decode().strip() != "little":
            raise WeightsFormatError(f"{path}: big-endian TorchScript archives are not supported")
        unpickler = _ScriptArchiveUnpickler(io.BytesIO(archive.read(pkl[0])), archive, prefix)
        root = unpickler.load()
    if not isinstance(root, _ScriptModuleRecord):
        raise WeightsFormatError(f"{path}: data.pkl does not hold a module (got {type(root).__name__})")
    state: Dict[str, torch.Tensor] = {}
    _flatten_records(root, "", state)
    # Storages are shared views of bytearrays we own; clone so every tensor owns compact memory.
    return {k: v.clone() for k, v in state.items()}


def _unwrap(checkpoint: Any, path: Path) -> Dict[str, torch.Tensor]:
    """The state dict inside common checkpoint wrappers, with a DDP 'module.' prefix removed."""
    if isinstance(checkpoint, dict):
        for wrapper in ("state_dict", "model"):
            if wrapper in checkpoint and isinstance(checkpoint[wrapper], dict):
                checkpoint = checkpoint[wrapper]
                break
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise WeightsFormatError(f"{path}: no state dict found (got {type(checkpoint).__name__})")
    tensors = {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsFormatError(f"{path}: the state dict holds no tensors")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def read_state_dict(path: str | Path) -> Dict[str, torch.Tensor]:
    """A flat `{name: tensor}` state dict from any supported weights file, without executing stored code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return _unwrap(load_file(str(path), device="cpu"), path)
        except SafetensorError as err:
            raise WeightsFormatError(f"{path}: not a readable safetensors file ({err}); a .safetensors weights file "
                                     "must be a safetensors state dict (open_clip / Hugging Face exports)") from None
    if is_torchscript_archive(path):
        state = read_torchscript_state_dict(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise WeightsFormatError(
                f"{path}: not loadable as weights only ({err}). xfd never unpickles arbitrary objects; re-save "
                "the weights as a plain state dict or .safetensors") from err
    return _unwrap(state, path)


__all__ = ["OPENAI_EXTRA_KEYS", "WeightsFormatError", "is_torchscript_archive", "read_state_dict",
           "read_torchscript_state_dict"]
