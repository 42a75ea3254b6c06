"""Caller profiles: the speaker-adaptive group's values + model version + metrics, as bytes.

Serialized with `torch.save` and read back with `torch.load(weights_only=True)`
(tensors, strings, numbers, lists and dicts only; no pickled objects).
Validated on load: format, model version, names and shapes of the group,
finite values. A profile is kilobytes: kept in the database as-is.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from asr_core.errors import ProfileError  # noqa: F401  (raised here; importable from here)

FORMAT = "asr_core.profile/1"
MAX_BYTES = 256 * 1024


@dataclass
class Profile:
    model_version: str                 # the sha256 of the checkpoint the profile was made for
    params: dict[str, Tensor]          # name -> tensor over the model's adaptive group
    version: int = 1
    metrics: dict = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save({"format": FORMAT, "model_version": self.model_version, "version": int(self.version),
                    "metrics": _plain(self.metrics),
                    "params": {k: v.detach().to(torch.float32).cpu().contiguous() for k, v in self.params.items()}}, buf)
        data = buf.getvalue()
        if len(data) > MAX_BYTES:
            raise ProfileError(f"profile is {len(data)} bytes, over the {MAX_BYTES} byte limit")
        return data

    @classmethod
    def from_bytes(cls, data: bytes, *, model_version: str, shapes: dict[str, tuple[int, ...]]) -> "Profile":
        """Parse and validate against the model it will be used with (its version and group shapes)."""
        if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
            raise ProfileError("profile is empty")
        if len(data) > MAX_BYTES:
            raise ProfileError(f"profile is {len(data)} bytes, over the {MAX_BYTES} byte limit")
        try:
            d = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
        except Exception as e:  # corrupt or hostile bytes: many exception types
            raise ProfileError(f"profile is corrupt ({type(e).__name__})") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ProfileError("not a caller profile")
        if d.get("model_version") != model_version:
            raise ProfileError(f"profile was made for model {str(d.get('model_version'))[:12]}, "
                               f"not for the current model {model_version[:12]}")
        params = d.get("params")
        if not isinstance(params, dict) or set(params) != set(shapes):
            raise ProfileError("profile parameters do not match the model's adaptive group")
        for name, t in params.items():
            if not isinstance(t, Tensor) or tuple(t.shape) != tuple(shapes[name]):
                raise ProfileError(f"profile parameter {name} has the wrong shape")
            if not torch.isfinite(t).all():
                raise ProfileError(f"profile parameter {name} has non-finite values")
        return cls(model_version=model_version, params=params, version=int(d.get("version", 1)),
                   metrics=dict(d.get("metrics") or {}))


def _plain(x):
    """Metrics restricted to JSON-like values (what weights_only loading accepts)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)
