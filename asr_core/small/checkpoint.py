"""The small model's checkpoint files: config + vocabulary + weights + sha256, loaded with weights_only=True.

Layout of the dict saved with `torch.save`:
  format: "asr_core.streaming_ctc/1"
  config: ModelConfig as a dict
  vocab: list of tokens (index 0 = CTC blank)
  state_dict: name -> tensor (float16 for weights, to keep the file small)
  sha256: hash of the state_dict tensors (names, shapes, bytes), checked on load
  meta: free-form JSON-able info (training command, data, metrics)
  adapt: optional, what meta-training learned for per-caller adaptation:
         {"algo": str, "steps": int, "step_sizes": float | {name: tensor},
          "init": {name: tensor} (optional)}
         init is the meta-learned starting point of adaptation. The model's own
         adaptive group keeps the values it had before meta-learning: a caller
         with no profile is recognized by the base model, not by the init, which
         is only good after adaptation.
         label_free (optional): {"steps", "step_sizes", "init"} meta-learned for
         adaptation on the model's own confident transcripts (no references).
The sha256 covers the weights, the step sizes and the inits: it is the model
version that caller profiles are made for.
"""
from __future__ import annotations

import math
import os

import torch

from asr_core.checkpoint import all_finite, checked_meta, is_weights, state_sha256
from asr_core.errors import CheckpointError
from asr_core.small.model import ModelConfig, StreamingCTC
from asr_core.text import VOCAB

FORMAT = "asr_core.streaming_ctc/1"
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # asr_core/
DEFAULT_CHECKPOINT = os.path.join(_PACKAGE_DIR, "checkpoints", "base.pt")
# the recognizer before meta-learning: the non-meta adaptation baselines start here
BASE_CTC_CHECKPOINT = os.path.join(_PACKAGE_DIR, "checkpoints", "ctc_base.pt")


def _hashed(state: dict[str, torch.Tensor], adapt: dict | None, prefix: str = "adapt") -> dict[str, torch.Tensor]:
    out = dict(state)
    sizes = (adapt or {}).get("step_sizes")
    if isinstance(sizes, dict):
        out.update({f"{prefix}.step_sizes.{k}": v for k, v in sizes.items()})
    elif sizes is not None:
        out[f"{prefix}.step_sizes"] = torch.tensor(float(sizes))
    init = (adapt or {}).get("init")
    if isinstance(init, dict):
        out.update({f"{prefix}.init.{k}": v for k, v in init.items()})
    if adapt:
        out[f"{prefix}.{adapt.get('algo')}.{adapt.get('steps')}"] = torch.zeros(0)
    label_free = (adapt or {}).get("label_free")
    if isinstance(label_free, dict):
        out.update(_hashed({}, label_free, f"{prefix}.label_free"))
    return out


def save_checkpoint(model: StreamingCTC, path: str, meta: dict | None = None, half: bool = True,
                    adapt: dict | None = None) -> str:
    """Write atomically; returns the sha256 (the model version)."""
    state = {k: (v.half() if half and v.is_floating_point() and not k.startswith("feat_") else v).detach().cpu().clone()
             for k, v in model.state_dict().items()}
    digest = state_sha256(_hashed(state, adapt))
    payload = {"format": FORMAT, "config": model.cfg.to_dict(), "vocab": list(VOCAB),
               "state_dict": state, "sha256": digest, "meta": meta or {}}
    if adapt:
        payload["adapt"] = adapt
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".part"
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return digest


def load_checkpoint(path: str | None = None) -> tuple[StreamingCTC, dict]:
    """Model in eval mode (float32) + the checkpoint's meta. Raises CheckpointError with a clear reason."""
    path = path or DEFAULT_CHECKPOINT
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt/truncated/non-torch files
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt or not a checkpoint ({type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an asr_core checkpoint (expected format {FORMAT!r})")
    if list(payload.get("vocab", [])) != list(VOCAB):
        raise CheckpointError(f"{path}: vocabulary does not match this version of asr_core")
    state, adapt = payload.get("state_dict"), payload.get("adapt")
    if not is_weights(state) or (adapt is not None and not isinstance(adapt, dict)):
        raise CheckpointError(f"{path}: not an asr_core checkpoint (no weights)")
    try:
        hashed = _hashed(state, adapt)
    except (KeyError, AttributeError, TypeError, ValueError):
        raise CheckpointError(f"{path}: malformed adaptation settings") from None
    if not is_weights(hashed):
        raise CheckpointError(f"{path}: malformed adaptation settings (values that are not tensors)")
    if state_sha256(hashed) != payload.get("sha256"):
        raise CheckpointError(f"{path}: sha256 mismatch, the weights are corrupt")
    if not all_finite(state):
        raise CheckpointError(f"{path}: the weights hold NaN or infinite values")
    try:
        cfg = ModelConfig.from_dict(payload["config"])
        model = StreamingCTC(cfg)
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: checkpoint does not match the model code: {str(e).splitlines()[0]}") from None
    meta = dict(_checked_decoder_meta(checked_meta(payload.get("meta"), path), path), sha256=payload["sha256"])
    if adapt is not None:
        meta["adapt"] = _checked_adapt(path, model, adapt)
    return model.eval(), meta


def _checked_decoder_meta(meta: dict, path: str) -> dict:
    """The decoder settings a checkpoint's meta may hold (`tune-decoder --write`): finite numbers."""
    for key in ("lm_weight", "word_score"):
        v = meta.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise CheckpointError(f"{path}: malformed checkpoint: meta {key} must be a finite number, got {v!r}")
    return meta


def _checked_adapt(path: str, model: StreamingCTC, adapt: dict, what: str = "adaptation") -> dict:
    own = dict(model.named_parameters())
    label_free = adapt.get("label_free")
    if label_free is not None:
        if not isinstance(label_free, dict):
            raise CheckpointError(f"{path}: label-free adaptation settings are not a section")
        adapt = dict(adapt, label_free=_checked_adapt(path, model, label_free, "label-free adaptation"))
    sizes = adapt.get("step_sizes")
    if isinstance(sizes, dict):
        if set(sizes) != set(model.adaptive_parameter_names()) or any(
                tuple(v.shape) != tuple(own[k].shape) or not torch.isfinite(v).all() for k, v in sizes.items()):
            raise CheckpointError(f"{path}: {what} step sizes do not match the model's adaptive group")
    elif not isinstance(sizes, (int, float)) or not sizes > 0:
        raise CheckpointError(f"{path}: {what} step size must be a positive number")
    if not isinstance(adapt.get("steps"), int) or adapt["steps"] < 0:
        raise CheckpointError(f"{path}: {what} steps must be a whole number >= 0")
    init = adapt.get("init")
    if init is not None:
        if not isinstance(init, dict) or set(init) != set(model.adaptive_parameter_names()) or any(
                not isinstance(v, torch.Tensor) or tuple(v.shape) != tuple(own[k].shape) or not torch.isfinite(v).all()
                for k, v in init.items()):
            raise CheckpointError(f"{path}: {what} init does not match the model's adaptive group")
        adapt = dict(adapt, init={k: v.float() for k, v in init.items()})
    return adapt
