"""Content hashes shared by every backbone's files: `state_sha256` (a weights dict: names, shapes,
dtypes, bytes; the model version profiles are made for) and `file_sha256`.

The small model's checkpoint format is `asr_core.small.checkpoint`; Whisper's is
`asr_core.whisper.convert`.
"""
from __future__ import annotations

import hashlib

import torch


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def is_weights(state: object) -> bool:
    """Whether `state` is a weights dict (names -> tensors), what `state_sha256` hashes: a checkpoint
    whose weights are anything else is not one (checked before hashing, which would fail obscurely)."""
    return isinstance(state, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())


def all_finite(state: dict[str, torch.Tensor]) -> bool:
    """Whether every floating-point weight is finite (a file can hash right and hold NaN: its sha256
    is the weights', whatever they are)."""
    return all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point())


def checked_meta(meta: object, path: str) -> dict:
    """A checkpoint's free-form `meta` section (absent: empty); CheckpointError where it is not a
    section (the sha256 does not cover it, so this is all that stands between it and a traceback)."""
    from asr_core.errors import CheckpointError
    if meta is None:
        return {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) for k in meta):
        raise CheckpointError(f"{path}: malformed checkpoint: its meta section is not a mapping of names")
    return meta


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
