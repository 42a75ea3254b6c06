"""The small streaming acoustic model: log-mel -> frame stacking -> causal conv blocks -> CTC.

Every layer sees a fixed left context and at most one frame of right context,
so the model streams exactly: feeding audio in chunks through `step()` and
ending with `finish()` gives the same log-probabilities as `forward()` on the
whole utterance (up to float rounding). State is explicit data.

Speaker-adaptive parameters (what adapts per caller) are the names returned
by `adaptive_parameter_names()`: a per-mel-bin feature transform
(`input_adapter.scale`, `input_adapter.bias`) and LHUC scales per block
(`blocks.N.lhuc`, applied as 2 * sigmoid(lhuc), 1.0 at init), and, when
`adapter_rank > 0`, low-rank corrections of each block's feed-forward layers:
W x + B (A x). A (`blocks.N.ff1_a`, `ff2_a`) is shared by all callers (a fixed
random projection, or meta-learned with the base weights); B (`blocks.N.ff1_b`,
`ff2_b`) is per caller and 0 at init, so a model with adapters computes what it
computed without them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn


@dataclass(frozen=True)
class ModelConfig:
    sample_rate: int = 8000
    n_mels: int = 64
    win_length: int = 200      # 25 ms at 8 kHz (zero-padded to n_fft)
    hop_length: int = 80       # 10 ms
    n_fft: int = 256           # each frame spans n_fft samples
    stack: int = 4             # frames stacked per model step: 40 ms
    d_model: int = 256
    ff_mult: int = 3
    n_blocks: int = 8
    kernel_left: int = 6       # frames of left context per block
    right_context: tuple[int, ...] = (1, 1, 1, 1, 1, 1, 0, 0)  # look-ahead frames per block
    dropout: float = 0.1
    vocab_size: int = 29
    adapter_rank: int = 0      # LoRA rank of the per-caller feed-forward adapters (0: none)

    def __post_init__(self) -> None:
        if self.sample_rate not in (8000, 16000):
            raise ValueError(f"expected sample_rate 8000 or 16000, got {self.sample_rate}")
        if len(self.right_context) != self.n_blocks:
            raise ValueError(f"right_context has {len(self.right_context)} entries for {self.n_blocks} blocks")
        if any(r < 0 for r in self.right_context) or self.kernel_left < 0:
            raise ValueError("context sizes must be >= 0")
        if min(self.d_model, self.n_mels, self.stack, self.n_blocks, self.vocab_size) < 1:
            raise ValueError("sizes must be >= 1")
        if self.adapter_rank < 0:
            raise ValueError(f"adapter_rank must be >= 0, got {self.adapter_rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def frame_seconds(self) -> float:
        """Seconds per output frame."""
        return self.hop_length * self.stack / self.sample_rate

    def to_dict(self) -> dict:
        d = asdict(self)
        d["right_context"] = list(self.right_context)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        d["right_context"] = tuple(d.get("right_context", ()))
        return cls(**d)


class FeatureExtractor(nn.Module):
    """Waveform -> log-mel frames, no centering, so frames stream exactly."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, win_length=cfg.win_length,
            hop_length=cfg.hop_length, f_min=60.0, f_max=cfg.sample_rate / 2 - 200,
            n_mels=cfg.n_mels, center=False, power=2.0)

    def forward(self, audio: Tensor) -> Tensor:
        """(batch, samples) -> (batch, frames, n_mels)."""
        if audio.shape[-1] < self.cfg.n_fft:
            return audio.new_zeros(audio.shape[0], 0, self.cfg.n_mels)
        return torch.log(self.mel(audio) + 1e-6).transpose(1, 2)

    def num_frames(self, samples: Tensor) -> Tensor:
        w, h = self.cfg.n_fft, self.cfg.hop_length  # torch.stft frames span n_fft samples
        return torch.clamp(torch.div(samples - w, h, rounding_mode="floor") + 1, min=0)


class InputAdapter(nn.Module):
    """Per-mel-bin affine feature transform (speaker-adaptive; identity at init)."""

    def __init__(self, n_mels: int):
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(n_mels))
        self.bias = nn.Parameter(torch.zeros(n_mels))

    def forward(self, x: Tensor) -> Tensor:
        return x * (1.0 + self.scale) + self.bias


class Block(nn.Module):
    """Depthwise conv over time (left + right context), LayerNorm, feed-forward (+ low-rank
    adapters), LHUC, residual."""

    def __init__(self, d: int, left: int, right: int, ff_mult: int, dropout: float, rank: int = 0):
        super().__init__()
        self.rank = rank
        self.left, self.right = left, right
        self.dw = nn.Conv1d(d, d, left + right + 1, groups=d)
        self.norm = nn.LayerNorm(d)
        self.ff1 = nn.Linear(d, d * ff_mult)
        self.ff2 = nn.Linear(d * ff_mult, d)
        self.drop = nn.Dropout(dropout)
        self.lhuc = nn.Parameter(torch.zeros(d))
        if rank:
            h = d * ff_mult
            # A: (rank, in) small random, B: (out, rank) zero -> no change at init
            self.ff1_a = nn.Parameter(torch.randn(rank, d) / d ** 0.5)
            self.ff1_b = nn.Parameter(torch.zeros(h, rank))
            self.ff2_a = nn.Parameter(torch.randn(rank, h) / h ** 0.5)
            self.ff2_b = nn.Parameter(torch.zeros(d, rank))

    def _ff(self, y: Tensor) -> Tensor:
        """(batch, T, d) -> (batch, T, d): the feed-forward layers, with the adapters when present."""
        if not self.rank:
            return self.ff2(self.drop(F.gelu(self.ff1(y))))
        h = F.gelu(self.ff1(y) + (y @ self.ff1_a.T) @ self.ff1_b.T)             # (batch, T, d * ff_mult)
        h = self.drop(h)
        return self.ff2(h) + (h @ self.ff2_a.T) @ self.ff2_b.T

    def forward(self, x: Tensor) -> Tensor:
        """(batch, left + T + right, d) with its context already attached -> (batch, T, d)."""
        t = x.shape[1] - self.left - self.right
        y = self.dw(x.transpose(1, 2)).transpose(1, 2)      # (batch, T, d)
        y = self._ff(self.norm(y))
        return x[:, self.left:self.left + t] + self.drop(y) * (2.0 * torch.sigmoid(self.lhuc))


ADAPTER_NAMES = ("ff1_a", "ff1_b", "ff2_a", "ff2_b")


class StreamingCTC(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.features = FeatureExtractor(cfg)
        self.register_buffer("feat_mean", torch.zeros(cfg.n_mels))
        self.register_buffer("feat_std", torch.ones(cfg.n_mels))
        self.input_adapter = InputAdapter(cfg.n_mels)
        self.proj = nn.Linear(cfg.n_mels * cfg.stack, cfg.d_model)
        self.blocks = nn.ModuleList(
            Block(cfg.d_model, cfg.kernel_left, r, cfg.ff_mult, cfg.dropout, cfg.adapter_rank)
            for r in cfg.right_context)
        self.out_norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size)

    # -- the speaker-adaptive group ------------------------------------------------------
    def adaptive_parameter_names(self) -> list[str]:
        names = ["input_adapter.scale", "input_adapter.bias"] + [f"blocks.{i}.lhuc" for i in range(len(self.blocks))]
        if self.cfg.adapter_rank:
            names += [f"blocks.{i}.{n}" for i in range(len(self.blocks)) for n in ("ff1_b", "ff2_b")]
        return names

    def with_adapters(self, rank: int, seed: int = 0) -> "StreamingCTC":
        """A copy of this model with rank-`rank` feed-forward adapters added (B = 0: same outputs).
        The adapters' A matrices are drawn from `seed`, so the copy is reproducible."""
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        if self.cfg.adapter_rank:
            raise ValueError(f"the model already has rank-{self.cfg.adapter_rank} adapters")
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = StreamingCTC(ModelConfig.from_dict(dict(self.cfg.to_dict(), adapter_rank=rank)))
        missing, unexpected = model.load_state_dict(self.state_dict(), strict=False)
        assert not unexpected and all(k.rsplit(".", 1)[-1] in ADAPTER_NAMES for k in missing), (missing, unexpected)
        return model.train(self.training)

    # -- whole utterance -----------------------------------------------------------------
    def frontend(self, audio: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(batch, samples), (batch,) -> normalized, adapted log-mel (batch, frames, n_mels), frame counts."""
        feats = (self.features(audio) - self.feat_mean) / self.feat_std
        return self.input_adapter(feats), self.features.num_frames(lengths)

    def encode(self, feats: Tensor, frames: Tensor) -> tuple[Tensor, Tensor]:
        """Normalized features (batch, frames, n_mels) -> log-probs (batch, T, vocab), output lengths."""
        s = self.cfg.stack
        feats = feats * (torch.arange(feats.shape[1], device=feats.device)[None, :, None] < frames[:, None, None])
        pad = (-feats.shape[1]) % s
        feats = F.pad(feats, (0, 0, 0, pad))
        b, t, m = feats.shape
        out_lens = torch.div(frames + s - 1, s, rounding_mode="floor")
        if t == 0:
            return feats.new_zeros(b, 0, self.cfg.vocab_size), out_lens
        # positions past each utterance's end are zero, as the streaming flush pads them
        mask = (torch.arange(t // s, device=feats.device)[None, :] < out_lens[:, None])[..., None]
        x = self.proj(feats.reshape(b, t // s, s * m)) * mask      # (batch, T, d)
        for blk in self.blocks:
            x = blk(F.pad(x, (0, 0, blk.left, blk.right))) * mask
        return F.log_softmax(self.head(self.out_norm(x)), dim=-1), out_lens

    def forward(self, audio: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(batch, samples) audio, (batch,) sample counts -> log-probs (batch, T, vocab), (batch,) T."""
        feats, frames = self.frontend(audio, lengths)
        return self.encode(feats, frames)

    # -- streaming -----------------------------------------------------------------------
    def initial_state(self) -> dict[str, Tensor | list[Tensor]]:
        d, p = self.cfg.d_model, next(self.parameters())
        return {
            "samples": p.new_zeros(0),                                   # (unframed samples,)
            "frames": p.new_zeros(0, self.cfg.n_mels),                   # (unstacked frames, n_mels)
            "blocks": [p.new_zeros(b.left, d) for b in self.blocks],     # (left + right buffered, d)
        }

    def _run_blocks(self, x: Tensor, state: dict, flush: bool) -> Tensor:
        """x: (T_new, d) -> (T_out, d). Each block keeps its last left+right inputs; on flush it
        appends the zero right-padding of the whole-utterance mode and emits everything left."""
        bufs = []
        for blk, buf in zip(self.blocks, state["blocks"]):
            seq = torch.cat([buf, x], 0)
            if flush:
                seq = torch.cat([seq, seq.new_zeros(blk.right, seq.shape[1])], 0)
            keep = blk.left + blk.right
            x = blk(seq[None])[0] if seq.shape[0] > keep else seq.new_zeros(0, seq.shape[1])
            bufs.append(seq[seq.shape[0] - min(keep, seq.shape[0]):])
        state["blocks"] = bufs
        return x

    @torch.no_grad()
    def step(self, chunk: Tensor, state: dict, flush: bool = False) -> tuple[Tensor, dict]:
        """Feed (samples,) audio; returns the log-probs (T_new, vocab) that became final and the new state.

        With flush=True the stream ends: pending frames are padded exactly as `forward()` pads them.
        """
        cfg = self.cfg
        samples = torch.cat([state["samples"], chunk.to(state["samples"].dtype)])
        n = int(self.features.num_frames(torch.tensor(samples.shape[0])))
        if n > 0:
            feats = self.features(samples[None, : (n - 1) * cfg.hop_length + cfg.n_fft])[0]
            samples = samples[n * cfg.hop_length:]
            feats = self.input_adapter((feats - self.feat_mean) / self.feat_std)
        else:
            feats = samples.new_zeros(0, cfg.n_mels)
        frames = torch.cat([state["frames"], feats], 0)                 # (frames, n_mels)
        if flush and frames.shape[0] % cfg.stack:
            frames = torch.cat([frames, frames.new_zeros(cfg.stack - frames.shape[0] % cfg.stack, cfg.n_mels)])
        usable = frames.shape[0] - frames.shape[0] % cfg.stack
        x = self.proj(frames[:usable].reshape(-1, cfg.stack * cfg.n_mels))   # (T_new, d)
        new_state = {"samples": samples, "frames": frames[usable:], "blocks": list(state["blocks"])}
        x = self._run_blocks(x, new_state, flush)
        return F.log_softmax(self.head(self.out_norm(x)), dim=-1), new_state
