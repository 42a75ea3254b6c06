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


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
