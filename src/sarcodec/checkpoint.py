"""Checkpoints that rebuild a model from the file alone, and the bundled-model lookup.

A checkpoint is a ``torch.save`` dict (loaded with ``weights_only=True``: no pickled code)::

    format="sarcodec-checkpoint", format_version, name, arch, config (create_model kwargs),
    state_dict, entropy_tables (integer tables), weights_hash, training (config + summary),
    radiometry (defaults used when fitting clip bounds), metrics

A *derived* checkpoint (a model that shares most weights with a bundled one, e.g. a fast synthesis
fitted to a bundled model's frozen latents) also has ``base = {name, hash}`` and stores only the
weights that differ from that base; ``int8_scales`` marks weights stored as int8 with one float32
scale per output channel. Loading rebuilds the whole model and checks the hash of the result.
"""
from __future__ import annotations

import io
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from .container import atomic_write
from .errors import ModelError, UnknownModelError
from .models import SarCodec, create_model, list_models
from .models.codec import _flatten

CHECKPOINT_FORMAT = "sarcodec-checkpoint"
CHECKPOINT_VERSION = 1
DEFAULT_RADIOMETRY = {"low_pct": 0.1, "high_pct": 99.9}


def save_checkpoint(model: SarCodec, path: str | os.PathLike, *, name: str | None = None,
                    training: dict[str, Any] | None = None, radiometry: dict[str, Any] | None = None,
                    metrics: dict[str, Any] | None = None, force: bool = True, half: bool = False,
                    base: str | None = None, int8: bool = False) -> Path:
    """Write a self-describing checkpoint. ``half=True`` first rounds the model's float weights to
    float16 (in place) and stores them so: half the size, and since the tables and hash are made
    from the rounded weights, the file still decodes exactly what the (rounded) model encodes.

    ``base``: a bundled model name; only the weights that differ from it are stored (a derived
    checkpoint). ``int8=True`` (derived checkpoints) rounds those weights of two or more dimensions
    to int8 with a float32 scale per output channel, in place, and stores them so (a quarter of
    float32); the rest go as float16."""
    stored = ref_model = None
    if base is not None:
        ref_model = load_model(base)
        ref = ref_model.state_dict()
        stored = [k for k, v in model.state_dict().items()
                  if k not in ref or ref[k].shape != v.shape or not torch.equal(ref[k], v.detach().cpu())]
    scales: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        if int8:
            if base is None:
                raise ModelError("int8 weight storage is for derived checkpoints (give base)")
            for k, t in model.state_dict().items():
                if k in stored and t.is_floating_point() and t.dim() >= 2:
                    s_ = t.abs().amax(dim=tuple(range(1, t.dim())), keepdim=True).clamp_min(1e-12) / 127.0
                    t.copy_(torch.round(t / s_).clamp(-127, 127) * s_ + 0.0)  # + 0.0: no -0.0, which int8 cannot hold
                    scales[k] = s_.float().cpu()
        if half or base is not None:
            for k, t in model.state_dict().items():
                if (stored is None or k in stored) and k not in scales and t.is_floating_point():
                    t.copy_(t.half().float())
    if half or int8 or base is not None:
        model.weights_changed()
    model.update()

    def pack(k: str, v: torch.Tensor) -> torch.Tensor:
        v = v.detach().cpu()
        if k in scales:
            return torch.round(v / scales[k]).to(torch.int8)
        return v.half() if (half or base is not None) and v.is_floating_point() else v

    state = model.state_dict()
    obj = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "name": name or getattr(model, "name", None) or Path(path).stem,
        "arch": model.arch,
        "config": dict(model.config),
        "state_dict": {k: pack(k, v) for k, v in state.items() if stored is None or k in stored},
        "entropy_tables": model.tables_state(),
        "weights_hash": model.weights_hash(),
        "training": training or {},
        "radiometry": {**DEFAULT_RADIOMETRY, **(radiometry or {})},
        "metrics": metrics or {},
    }
    if ref_model is not None:
        obj["base"] = {"name": ref_model.name, "hash": ref_model.weights_hash()}
        obj["int8_scales"] = scales
        flat, ref_flat = _flatten(obj["entropy_tables"]), _flatten(ref_model.tables_state())
        if flat.keys() == ref_flat.keys() and all(torch.equal(flat[k], ref_flat[k]) for k in flat):
            obj["entropy_tables"] = {}  # the base's own (the latent codec is shared): not stored twice
            obj["base"]["tables"] = True
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, buf.getvalue(), force=force)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device | None = None) -> SarCodec:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(f"{path}: not a readable sarcodec checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path}: not a sarcodec checkpoint")
    if int(obj.get("format_version", 0)) > CHECKPOINT_VERSION:
        raise ModelError(f"{path}: checkpoint format {obj['format_version']} is newer than this sarcodec supports")
    try:
        model = create_model(obj["arch"], **obj["config"])
        state = dict(obj["state_dict"])
        for k, sc in (obj.get("int8_scales") or {}).items():
            state[k] = state[k].float() * sc
        tables = obj["entropy_tables"]
        if obj.get("base"):
            ref = _base_model(obj["base"], path)
            own = model.state_dict()
            state = {**{k: v for k, v in ref.state_dict().items() if k in own}, **state}
            if obj["base"].get("tables"):
                tables = ref.tables_state()
        model.load_state_dict(state, strict=True)
        model.load_tables_state(tables)
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"{path}: checkpoint does not match its architecture ({e})") from e
    if model.weights_hash() != obj.get("weights_hash"):
        raise ModelError(f"{path}: weights hash mismatch (checkpoint corrupted)")
    model.name = obj.get("name") or path.stem
    model.radiometry_defaults = dict(obj.get("radiometry") or DEFAULT_RADIOMETRY)
    model.training_info = obj.get("training", {})
    model.metrics = obj.get("metrics", {})
    model.eval()
    if device is not None:
        model.to(device)
    return model


_BASES: dict[str, SarCodec] = {}  # bundled bases of derived checkpoints, read only (state and tables)


def _base_model(base: dict[str, Any], path: Path) -> SarCodec:
    """The bundled model a derived checkpoint builds on (checked by hash), loaded once per process."""
    try:
        ref = _BASES.get(base["name"]) or load_model(base["name"])
    except UnknownModelError as e:
        raise ModelError(f"{path}: derived from {base['name']!r}, which this sarcodec does not bundle") from e
    if ref.weights_hash() != base.get("hash"):
        raise ModelError(f"{path}: derived from {base['name']!r} with hash {base.get('hash')}, but the bundled one "
                         f"is {ref.weights_hash()}")
    _BASES[base["name"]] = ref
    return ref


# -- bundled models -------------------------------------------------------------------------
def _weights_dir() -> Path:
    return Path(str(resources.files("sarcodec") / "weights"))


def bundled_manifest() -> dict[str, Any]:
    p = _weights_dir() / "manifest.json"
    if not p.is_file():
        return {"models": {}, "aliases": {}}
    return json.loads(p.read_text())


def list_pretrained() -> list[str]:
    """Names of the bundled trained models (and their aliases)."""
    m = bundled_manifest()
    return sorted(set(m.get("models", {})) | set(m.get("aliases", {})))


def family_name(name: str) -> str:
    """The bundled family of ``name`` (an alias, a -qN name or the family itself)."""
    return bundled_manifest().get("aliases", {}).get(name, name).rsplit("-q", 1)[0]


def quality_name(name: str, quality: int) -> str:
    """The bundled model of rate point ``quality`` in the family of ``name`` (an alias or a -qN)."""
    return f"{family_name(name)}-q{quality}"


def resolve_pretrained(name: str, quality: int | None = None) -> Path | None:
    m = bundled_manifest()
    models, aliases = m.get("models", {}), m.get("aliases", {})
    if quality is not None:
        name = quality_name(name, quality)
        base = name.rsplit("-q", 1)[0]
        if name not in models:
            qs = sorted(k for k in models if k.startswith(base + "-q"))
            raise UnknownModelError(f"no quality {quality} for {base!r}; available: {', '.join(qs) or 'none'}")
    name = aliases.get(name, name)
    if name in models:
        return _weights_dir() / models[name]["file"]
    return None


def load_model(name_or_path: str | os.PathLike, device: str | torch.device | None = None, *,
               quality: int | None = None) -> SarCodec:
    """Load a trained codec: a bundled name (``"default"``, ``"default-q2"``, ...) or a checkpoint
    path. ``quality`` picks a rate point of a bundled family (higher = more bits)."""
    p = Path(name_or_path)
    if p.suffix in (".pt", ".pth") or p.is_file():
        return load_checkpoint(p, device)
    found = resolve_pretrained(str(name_or_path), quality)
    if found is not None:
        return load_checkpoint(found, device)
    hint = ""
    if str(name_or_path) in list_models():
        hint = f" ({name_or_path!r} is an architecture: build an untrained one with sarcodec.create_model)"
    avail = ", ".join(list_pretrained()) or "none bundled"
    raise UnknownModelError(f"unknown model {str(name_or_path)!r}{hint}; bundled models: {avail}")
