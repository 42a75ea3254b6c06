"""Whisper in PyTorch: log-mel encoder + autoregressive text decoder, with a speaker-adaptive LoRA group.

The architecture of OpenAI's Whisper (pre-norm transformer, GELU MLPs, sinusoidal encoder
positions, learned decoder positions, tied output projection). Weights are converted from a
CTranslate2 directory by `asr_core.whisper.convert`.

    mel (batch, n_mels, 3000)  -> encoder ->  audio (batch, 1500, d)
    tokens (batch, T), audio   -> decoder ->  logits (batch, T, vocab), cache

Speaker-adaptive parameters (what adapts per caller): low-rank updates of the query and value
projections of the top `lora_layers` encoder blocks, W x + (alpha / r) * B A x with A (r, d) and
B (d, r); B starts at zero, so the model is exactly Whisper until a caller is adapted. Applied
with `torch.func.functional_call(model, params, ...)`; `adaptive_parameter_names()` lists them.

The decoder's key/value cache is explicit data, `{"self": [(k, v)] * layers, "cross": [(k, v)] *
layers}`, each (batch, heads, time, d_head); `reorder_cache` selects rows for the beam search.
Rows whose texts have different lengths in one batch (forced prefixes, `decoding.greedy`) add
`"pos"` (batch,), each row's next position, and `"keep"` (batch, time), which of the self cache's
positions are the row's own (the others are the batch's padding).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

N_FRAMES = 3000          # 30 s of 10 ms mel frames: the encoder's fixed input length
SAMPLE_RATE = 16000
HOP_LENGTH = 160


MAX_LORA_RANK = 256      # a rank past this is not a low-rank group (and would take gigabytes)


@dataclass(frozen=True)
class WhisperConfig:
    n_mels: int = 80
    n_audio_ctx: int = 1500
    n_audio_state: int = 384
    n_audio_head: int = 6
    n_audio_layer: int = 4
    n_vocab: int = 51864
    n_text_ctx: int = 448
    n_text_state: int = 384
    n_text_head: int = 6
    n_text_layer: int = 4
    lora_rank: int = 8            # 0: no adaptive group
    lora_layers: int = 2          # top encoder blocks that carry LoRA on query and value
    lora_alpha: float = 16.0
    alignment_heads: tuple[tuple[int, int], ...] = ()   # (decoder layer, head) for word timings
    suppress_ids: tuple[int, ...] = ()                  # never generated (from the model's config)
    suppress_ids_begin: tuple[int, ...] = ()            # not generated as the first token
    name: str = "whisper"

    def __post_init__(self) -> None:
        for f in ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer", "n_vocab",
                  "n_text_ctx", "n_text_state", "n_text_head", "n_text_layer"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f} must be >= 1, got {getattr(self, f)}")
        if self.n_audio_state % self.n_audio_head or self.n_text_state % self.n_text_head:
            raise ValueError("model width must be divisible by the number of heads")
        if self.n_audio_state != self.n_text_state:
            raise ValueError(f"encoder and decoder widths differ ({self.n_audio_state} vs {self.n_text_state})")
        if not 0 <= self.lora_rank <= MAX_LORA_RANK or not 0 <= self.lora_layers <= self.n_audio_layer:
            raise ValueError(f"lora_rank must be in 0..{MAX_LORA_RANK} and lora_layers in 0..{self.n_audio_layer}, "
                             f"got {self.lora_rank}, {self.lora_layers}")
        for layer, head in self.alignment_heads:
            if not (0 <= layer < self.n_text_layer and 0 <= head < self.n_text_head):
                raise ValueError(f"alignment head ({layer}, {head}) outside the decoder")

    @property
    def multilingual(self) -> bool:
        return self.n_vocab >= 51865     # Whisper's rule: English-only models have 51864 tokens

    def to_dict(self) -> dict:
        d = asdict(self)
        d["alignment_heads"] = [list(h) for h in self.alignment_heads]
        d["suppress_ids"], d["suppress_ids_begin"] = list(self.suppress_ids), list(self.suppress_ids_begin)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "WhisperConfig":
        d = dict(d)
        d["alignment_heads"] = tuple(tuple(h) for h in d.get("alignment_heads", ()))
        d["suppress_ids"] = tuple(d.get("suppress_ids", ()))
        d["suppress_ids_begin"] = tuple(d.get("suppress_ids_begin", ()))
        return cls(**d)


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> Tensor:
    """(length, channels) sin | cos positional encodings, as Whisper's encoder uses."""
    inc = math.log(max_timescale) / (channels // 2 - 1)
    inv = torch.exp(-inc * torch.arange(channels // 2, dtype=torch.float32))
    t = torch.arange(length, dtype=torch.float32)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


def splice_tail(own: Tensor, lens: Tensor, tail: Tensor) -> Tensor:
    """Rows that each keep their own first positions and continue with a tail shared by all rows:
    own (rows, ..., L, c), lens (rows,) own positions of each row, tail (1, ..., S, c) with S >= L
    -> (rows, ..., S, c): row i is own[i, ..., :lens[i], :] then tail[0, ..., lens[i]:, :]."""
    n, width = own.shape[0], own.shape[-2]
    mine = (torch.arange(width) < lens[:, None]).view(n, *[1] * (own.dim() - 3), width, 1)
    rest = tail[..., width:, :].expand(n, *[-1] * (tail.dim() - 1))
    return torch.cat([torch.where(mine, own, tail[..., :width, :]), rest], -2)


@dataclass
class SharedTailKV:
    """Cross-attention keys/values of rows that each see their own first positions and a window
    shared by every row after them: row i attends to own_k[i, :, :own[i]] and tail_k[:, :, own[i]:]
    (the same set of keys as one (rows, heads, S, d_head) tensor holding both, without that copy;
    the live margin's windows, `cached.CallerCache`). own_k, own_v (rows, heads, L, d_head);
    tail_k, tail_v (1, heads, S, d_head); own (rows,) positions of each row's own.
    block > 1: the shared window is pooled in blocks of that many positions (`pool_tail`: tail
    position j is the window's positions j * block ...), each own[i] a multiple of block; row i
    attends to the tail from own[i] // block on, each pooled key weighing as its block."""
    own_k: Tensor | None
    own_v: Tensor | None
    tail_k: Tensor
    tail_v: Tensor
    own: Tensor
    block: int = 1
    fold: "FoldedKV | None" = None    # the rows' own keys/values folded into the attention instead (own_k, own_v None)

    def whole(self) -> "tuple[Tensor, Tensor] | MaskedKV":
        """The keys and values as one (rows, heads, S, d_head) pair each (a decoding loop attends
        with them many times: made once, they cost less than the split at every step); pooled,
        as MaskedKV (the rows' lengths differ)."""
        if self.fold is not None:
            raise ValueError("folded keys/values have no whole form: project them (cached.CallerCache.cross_kv)")
        if self.block == 1:
            return splice_tail(self.own_k, self.own, self.tail_k), splice_tail(self.own_v, self.own, self.tail_v)
        pairs, logws = [], []
        for i, n in enumerate(self.own.tolist()):
            pairs.append((torch.cat([self.own_k[i:i + 1, :, :n], self.tail_k[:, :, n // self.block:]], 2),
                          torch.cat([self.own_v[i:i + 1, :, :n], self.tail_v[:, :, n // self.block:]], 2)))
            logws.append(block_weights(n, self.tail_k.shape[2] - n // self.block, self.block, self.own_k))
        return MaskedKV.stack(pairs, logws)

    def attend(self, q: Tensor) -> Tensor:
        """q (rows, heads, T, d_head) -> (rows, heads, T, d_head)."""
        n, h, t, dh = q.shape
        width, size = self.fold.n.shape[1] if self.fold is not None else self.own_k.shape[2], self.tail_k.shape[2]
        scale = 1.0 / math.sqrt(dh)
        mine = (self.fold.scores(q) if self.fold is not None else q @ self.own_k.transpose(-1, -2)) * scale  # (n, h, T, L)
        mine = mine.masked_fill((torch.arange(width) >= self.own[:, None])[:, None, None, :], float("-inf"))
        flat = q.transpose(0, 1).reshape(h, n * t, dh)                               # every row against the tail at once
        tail = torch.bmm(flat, self.tail_k[0].transpose(-1, -2)).view(h, n, t, size).transpose(0, 1) * scale
        if self.block > 1:
            tail = tail + math.log(self.block)
        tail = tail.masked_fill((torch.arange(size) * self.block < self.own[:, None])[:, None, None, :], float("-inf"))
        p = torch.cat([mine, tail], -1).softmax(-1)
        y = self.fold.values(p[..., :width]) if self.fold is not None else p[..., :width] @ self.own_v
        ptail = p[..., width:].transpose(0, 1).reshape(h, n * t, size)
        return y + torch.bmm(ptail, self.tail_v[0]).view(h, n, t, dh).transpose(0, 1)


@dataclass
class FoldedKV:
    """Rows' own cross-attention keys and values left unprojected: the positions' encoder output
    is n * gain + bias (n (rows, L, d): the states before the encoder's final norm, normalized;
    gain, bias (d,): that norm's, a caller's adapted group), and `key`, `value` are one decoder
    block's projections. Attention folds them into the queries instead:
    q . key(n * gain + bias) = (q key.weight * gain) . n + q . (key.weight bias + key.bias), and the
    values' weighted sum is value(p n * gain + (sum p) bias). Per position that costs heads * T * d
    multiply-adds, against d * d to project it: teacher forcing of a caller's short texts (T * heads
    below d) with gradients to gain and bias, every step (`cached.teacher_forced_loss`)."""
    n: Tensor
    gain: Tensor
    bias: Tensor
    key: nn.Linear
    value: nn.Linear

    def _heads(self, w: Tensor, h: int) -> Tensor:
        return w.view(h, w.shape[0] // h, w.shape[1])                          # (heads, d_head, d)

    def scores(self, q: Tensor) -> Tensor:
        """q (rows, heads, T, d_head) -> unscaled scores against the rows' own positions (rows, heads, T, L)."""
        rows, h, t, _ = q.shape
        u = q @ self._heads(self.key.weight, h)                                # (rows, heads, T, d)
        const = u @ self.bias.to(u.dtype)                                      # (rows, heads, T)
        if self.key.bias is not None:
            const = const + (q * self.key.bias.view(h, 1, -1)).sum(-1)
        s = torch.bmm((u * self.gain).reshape(rows, h * t, -1), self.n.transpose(1, 2))
        return s.view(rows, h, t, -1) + const[..., None]

    def values(self, p: Tensor) -> Tensor:
        """p (rows, heads, T, L) attention weights of the own positions -> their part of the output
        (rows, heads, T, d_head)."""
        rows, h, t, width = p.shape
        m = torch.bmm(p.reshape(rows, h * t, width), self.n).view(rows, h, t, -1)   # (rows, heads, T, d)
        s = p.sum(-1, keepdim=True)
        y = (m * self.gain + s * self.bias) @ self._heads(self.value.weight, h).transpose(-1, -2)
        return y + s * self.value.bias.view(h, 1, -1) if self.value.bias is not None else y


@dataclass
class MaskedKV:
    """Cross-attention keys/values of rows of different lengths in one batch (concurrent segments,
    each with its own window): row i attends to k[i, :, :lens[i]] only; the positions after are
    the batch's padding, not its audio. k, v (rows, heads, S, d_head); lens (rows,); logw (rows,
    S) or None: each key's log weight (a pooled key weighs as its block, `PooledKV`)."""
    k: Tensor
    v: Tensor
    lens: Tensor
    logw: Tensor | None = None

    @classmethod
    def stack(cls, pairs: list[tuple[Tensor, Tensor]], logws: list[Tensor] | None = None) -> "MaskedKV":
        """Each row's own (1, heads, S_i, d_head) keys and values (and their (S_i,) log weights)
        -> one batch, zero-padded."""
        width = max(k.shape[2] for k, _ in pairs)
        pad = lambda t: F.pad(t, (0, 0, 0, width - t.shape[2]))  # noqa: E731
        logw = None if logws is None else torch.stack([F.pad(w, (0, width - w.shape[0])) for w in logws])
        return cls(torch.cat([pad(k) for k, _ in pairs]), torch.cat([pad(v) for _, v in pairs]),
                   torch.tensor([k.shape[2] for k, _ in pairs]), logw)

    def select(self, rows: Tensor) -> "MaskedKV":
        return MaskedKV(self.k.index_select(0, rows), self.v.index_select(0, rows), self.lens.index_select(0, rows),
                        None if self.logw is None else self.logw.index_select(0, rows))

    def row(self, i: int) -> "tuple[Tensor, Tensor] | PooledKV":
        """Row i's own keys and values (1, heads, lens[i], d_head) (with their weights: PooledKV)."""
        n = int(self.lens[i])
        if self.logw is not None:
            return PooledKV(self.k[i:i + 1, :, :n], self.v[i:i + 1, :, :n], self.logw[i, :n])
        return self.k[i:i + 1, :, :n], self.v[i:i + 1, :, :n]

    def attend(self, q: Tensor) -> Tensor:
        """q (rows, heads, T, d_head) -> (rows, heads, T, d_head)."""
        if q.shape[0] != self.k.shape[0]:
            raise ValueError(f"{q.shape[0]} query rows for {self.k.shape[0]} rows of keys")
        mask = (torch.arange(self.k.shape[2]) < self.lens[:, None])[:, None, None, :]
        if self.logw is not None:
            mask = self.logw.to(q.dtype)[:, None, None, :].masked_fill(~mask, float("-inf"))
        return F.scaled_dot_product_attention(q, self.k, self.v, attn_mask=mask)


@dataclass
class PooledKV:
    """Keys/values where key j stands for exp(logw[j]) equal keys: the padding of a window pooled
    in blocks of a few positions (each block's mean, `pool_tail`; the padding's positions differ
    little from their neighbours, so a block's keys are nearly equal). Attention gives such a key
    the weight of its whole block. k, v (rows, heads, S, d_head), rows 1 where every query row
    shares them; logw (S,)."""
    k: Tensor
    v: Tensor
    logw: Tensor

    def extend(self, k: Tensor, v: Tensor) -> "PooledKV":
        """With the positions k, v (rows, heads, T, d_head) after these, each its own weight."""
        return PooledKV(torch.cat([self.k.expand(k.shape[0], -1, -1, -1), k], 2),
                        torch.cat([self.v.expand(v.shape[0], -1, -1, -1), v], 2),
                        torch.cat([self.logw, self.logw.new_zeros(k.shape[2])]))

    def select(self, rows: Tensor) -> "PooledKV":
        if self.k.shape[0] == 1:
            return self
        return PooledKV(self.k.index_select(0, rows), self.v.index_select(0, rows), self.logw)

    def attend(self, q: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """q (rows, heads, T, d_head) -> (rows, heads, T, d_head), and the weights (rows, heads, T,
        S) when asked."""
        k, v, bias = self.k, self.v, self.logw.to(q.dtype).view(1, 1, 1, -1)
        if k.shape[0] != q.shape[0]:
            if k.shape[0] != 1:
                raise ValueError(f"{q.shape[0]} query rows for {k.shape[0]} rows of keys")
            if not need_weights:       # every row's queries as positions of one row: one pass
                n, h, t, dh = q.shape
                y = F.scaled_dot_product_attention(q.transpose(0, 1).reshape(1, h, n * t, dh), k, v, attn_mask=bias)
                return y.view(h, n, t, dh).transpose(0, 1), None
        if not need_weights:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias), None
        weights = ((q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1]) + bias).softmax(-1)
        return weights @ v, weights


def block_weights(kept: int, pooled: int, block: int, like: Tensor) -> Tensor:
    """Log weights of `kept` positions as they are, then `pooled` keys of `block` positions each
    (log(block)); dtype and device of `like`."""
    return torch.cat([like.new_zeros(kept), like.new_full((pooled,), math.log(block))])


def pooled_from(start: int, block: int, size: int = N_FRAMES // 2) -> int:
    """The first position of a window's pooled part: the first multiple of `block` from `start`."""
    return min(size, -(-start // block) * block)


def pool_tail(x: Tensor, start: int, block: int, pooled: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Positions (along dim -2) of a window: keep [start, b) as they are, where b is the first
    multiple of `block` from start; from b on, each block of `block` positions becomes its mean
    (pooled: x's whole window pooled so already, to take from). x (..., S, c), S a multiple of block
    -> (..., kept + pooled, c), and each position's log weight (0 kept, log(block) pooled)."""
    size = x.shape[-2]
    if size % block:
        raise ValueError(f"{size} positions are not whole blocks of {block}")
    b = pooled_from(start, block, size)
    if pooled is None:
        pooled = x[..., b:, :].unflatten(-2, ((size - b) // block, block)).mean(-2)
    else:
        pooled = pooled[..., b // block:, :]
    return torch.cat([x[..., start:b, :], pooled], -2), block_weights(b - start, pooled.shape[-2], block, x)


class Attention(nn.Module):
    """Multi-head attention; optional LoRA on query and value (the speaker-adaptive group)."""

    def __init__(self, d: int, heads: int, lora_rank: int = 0, lora_alpha: float = 16.0):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value, self.out = (nn.Linear(d, d) for _ in range(4))
        self.lora_scale = lora_alpha / lora_rank if lora_rank else 0.0
        if lora_rank:
            g = torch.Generator().manual_seed(0)  # same init on every load: profiles stay valid
            self.lora_q_a = nn.Parameter(torch.randn(lora_rank, d, generator=g) / math.sqrt(d))
            self.lora_q_b = nn.Parameter(torch.zeros(d, lora_rank))
            self.lora_v_a = nn.Parameter(torch.randn(lora_rank, d, generator=g) / math.sqrt(d))
            self.lora_v_b = nn.Parameter(torch.zeros(d, lora_rank))

    def _split(self, x: Tensor) -> Tensor:
        b, t, d = x.shape                                  # (batch, time, d)
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)   # (batch, heads, time, d_head)

    def project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (batch, time, d) -> keys, values (batch, heads, time, d_head)."""
        v = self.value(x)
        if self.lora_scale:
            v = v + self.lora_scale * (x @ self.lora_v_a.t()) @ self.lora_v_b.t()
        return self._split(self.key(x)), self._split(v)

    def forward(self, x: Tensor, kv: tuple[Tensor, Tensor], causal: bool = False,
                need_weights: bool = False, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """x (batch, T, d) attends to keys/values (batch, heads, S, d_head) -> (batch, T, d), weights.
        mask: (batch, 1, T, S) booleans, which keys each query may see (instead of `causal`)."""
        q = self.query(x)
        if self.lora_scale:
            q = q + self.lora_scale * (x @ self.lora_q_a.t()) @ self.lora_q_b.t()
        q = self._split(q)
        if isinstance(kv, PooledKV):
            y, weights = kv.attend(q, need_weights)
            b, h, t, dh = y.shape
            return self.out(y.transpose(1, 2).reshape(b, t, h * dh)), weights
        if isinstance(kv, (SharedTailKV, MaskedKV)):
            if need_weights:
                raise ValueError("attention weights of shared-tail or masked keys are not computed")
            y = kv.attend(q)
            b, h, t, dh = y.shape
            return self.out(y.transpose(1, 2).reshape(b, t, h * dh)), None
        k, v = kv
        if k.shape[0] < q.shape[0]:
            # groups of rows sharing one audio (the beams of each segment, segment-major):
            # keys/values (segments, heads, S, d_head), queries (segments * group, heads, T, d_head)
            group = q.shape[0] // k.shape[0]
            if q.shape[2] == 1 and not need_weights:
                # one step of every row: a segment's rows become the query positions of its batch row
                b, h, _, dh = q.shape
                qg = q.view(k.shape[0], group, h, dh).transpose(1, 2)            # (segments, heads, group, dh)
                y = F.scaled_dot_product_attention(qg, k, v).transpose(1, 2)     # (segments, group, heads, dh)
                return self.out(y.reshape(b, 1, h * dh)), None
            k, v = k.repeat_interleave(group, 0), v.repeat_interleave(group, 0)
        if mask is not None:
            if need_weights:
                raise ValueError("attention weights under a mask are not computed")
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            weights = None
        elif not need_weights:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=causal and q.shape[2] > 1)
            weights = None
        else:
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])    # (batch, heads, T, S)
            if causal and q.shape[2] > 1:
                t, s = q.shape[2], k.shape[2]
                mask = torch.ones(t, s, dtype=torch.bool).tril(s - t)
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = scores.softmax(-1)
            y = weights @ v
        b, h, t, dh = y.shape
        return self.out(y.transpose(1, 2).reshape(b, t, h * dh)), weights


class Block(nn.Module):
    """Pre-norm residual block: self-attention, [cross-attention], GELU MLP."""

    def __init__(self, d: int, heads: int, cross: bool, lora_rank: int = 0, lora_alpha: float = 16.0):
        super().__init__()
        self.attn, self.attn_ln = Attention(d, heads, lora_rank, lora_alpha), nn.LayerNorm(d)
        self.cross_attn = Attention(d, heads) if cross else None
        self.cross_attn_ln = nn.LayerNorm(d) if cross else None
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.mlp_ln = nn.LayerNorm(d)

    def forward(self, x: Tensor, self_kv: tuple[Tensor, Tensor] | None = None,
                cross_kv: tuple[Tensor, Tensor] | None = None, need_weights: bool = False,
                self_mask: Tensor | None = None):
        """x (batch, T, d). Decoder: self_kv is the cache before x; returns (x, new self kv, cross weights).
        self_mask: (batch, 1, T, cached + T) booleans, which self-attention keys each position sees
        (rows of different text lengths; None: causal)."""
        h = self.attn_ln(x)
        k, v = self.attn.project_kv(h)
        if isinstance(self_kv, PooledKV):       # the encoder's pooled padding (keys are unordered there)
            kv = self_kv.extend(k, v)
            x = x + self.attn(h, kv)[0]
            k, v = kv.k, kv.v
        else:
            if self_kv is not None and self_kv[0].shape[2]:
                k, v = torch.cat([self_kv[0], k], 2), torch.cat([self_kv[1], v], 2)
            x = x + self.attn(h, (k, v), causal=self.cross_attn is not None, mask=self_mask)[0]
        weights = None
        if self.cross_attn is not None:
            y, weights = self.cross_attn(self.cross_attn_ln(x), cross_kv, need_weights=need_weights)
            x = x + y
        return x + self.mlp(self.mlp_ln(x)), (k, v), weights


@dataclass
class PaddingContext:
    """A 30 s window of padding only (zero mel), encoded once: each encoder block's self-attention
    keys/values (1, heads, 1500, d_head) and the last block's output (1, 1500, d), before the final
    layer norm (so a caller's own final layer norm applies to it). See `AudioEncoder.forward(padding=)`."""
    kv: list[tuple[Tensor, Tensor]]
    hidden: Tensor
    _pooled: dict = field(default_factory=dict, repr=False, compare=False)

    def tail(self, layer: int, start: int, rows: int, block: int = 1) -> tuple[Tensor, Tensor] | PooledKV:
        """Block `layer`'s padding keys/values from position `start` on, for `rows` rows; with
        block > 1, pooled in blocks of that many positions from the first whole block on (`pool_tail`)."""
        k, v = self.kv[layer]
        if block <= 1:
            return k[:, :, start:].expand(rows, -1, -1, -1), v[:, :, start:].expand(rows, -1, -1, -1)
        pooled = self._pooled.get((layer, block))
        if pooled is None:       # made once per block size (two threads may both make it: the same)
            pooled = self._pooled[(layer, block)] = (pool_tail(k, 0, block)[0], pool_tail(v, 0, block)[0])
        (pk, logw), (pv, _) = pool_tail(k, start, block, pooled[0]), pool_tail(v, start, block, pooled[1])
        return PooledKV(pk, pv, logw)


class AudioEncoder(nn.Module):
    def __init__(self, cfg: WhisperConfig):
        super().__init__()
        d = cfg.n_audio_state
        self.conv1 = nn.Conv1d(cfg.n_mels, d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(cfg.n_audio_ctx, d))
        first_lora = cfg.n_audio_layer - cfg.lora_layers
        self.blocks = nn.ModuleList(
            Block(d, cfg.n_audio_head, cross=False, lora_rank=cfg.lora_rank if i >= first_lora else 0,
                  lora_alpha=cfg.lora_alpha) for i in range(cfg.n_audio_layer))
        self.ln_post = nn.LayerNorm(d)

    def forward(self, mel: Tensor, padding: PaddingContext | None = None,
                record: list | None = None, pool: int = 1) -> Tensor:
        """mel (batch, n_mels, frames) -> (batch, frames // 2, d). Whisper was trained on 3000 frames
        (30 s, zero-padded); fewer frames is the faster, approximate "trimmed context" mode.

        padding: the all-padding window's context (`padding_context`): the mel given is the start of
        a zero-padded 30 s window, and the rest of that window is taken from the context, which
        approximates it (its states do not see this audio). Its positions are attention keys and
        values of every block, and the result is the whole window (batch, 1500, d): the first
        frames // 2 computed, the rest the context's. Exact in the convolutions; in attention, the
        audio's frames see the padding as it is without them.
        record: a list that receives each block's self-attention keys and values, then the last
        block's output over the whole result (before the final layer norm): with no padding, a
        `PaddingContext(record[:-1], record[-1])`.
        pool (with padding): the padding's keys and values pooled in blocks of that many positions
        (`PaddingContext.tail`; 1: each its own)."""
        if mel.shape[-1] > 2 * self.positional_embedding.shape[0] or mel.shape[-1] % 2:
            raise ValueError(f"expected an even number of mel frames <= {2 * self.positional_embedding.shape[0]}, "
                             f"got {mel.shape[-1]}")
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).transpose(1, 2)         # (batch, frames // 2, d)
        live, rows = x.shape[1], x.shape[0]
        x = x + self.positional_embedding[:live]
        for i, block in enumerate(self.blocks):
            # keys are unordered in the encoder (no mask): the padding's can simply come first
            tail = None if padding is None else padding.tail(i, live, rows, pool)
            x, kv, _ = block(x, tail)
            if record is not None:
                record.append(kv)
        if padding is not None:
            x = torch.cat([x, padding.hidden[:, live:].expand(rows, -1, -1)], 1)
        if record is not None:
            record.append(x)
        return self.ln_post(x)


# up to this many rows a float32 vocabulary projection multiplies the transposed way (`TextDecoder.logits`)
SMALL_BATCH_ROWS = 10


class TextDecoder(nn.Module):
    def __init__(self, cfg: WhisperConfig):
        super().__init__()
        d = cfg.n_text_state
        self.token_embedding = nn.Embedding(cfg.n_vocab, d)
        self.positional_embedding = nn.Parameter(torch.zeros(cfg.n_text_ctx, d))
        self.blocks = nn.ModuleList(Block(d, cfg.n_text_head, cross=True) for _ in range(cfg.n_text_layer))
        self.ln = nn.LayerNorm(d)
        # the output projection is the token embedding (tied); a Linear view of it so int8
        # dynamic quantization covers the largest matrix of each decoding step
        self.proj = nn.Linear(d, cfg.n_vocab, bias=False)
        self.proj.weight = self.token_embedding.weight

    def cross_kv(self, audio: Tensor) -> list[tuple[Tensor, Tensor]]:
        """audio (batch, S, d) -> each block's cross-attention keys/values."""
        return [b.cross_attn.project_kv(audio) for b in self.blocks]

    def init_cache(self, audio: Tensor, cross: list[tuple[Tensor, Tensor]] | None = None) -> dict:
        """audio (batch, S, d) -> cache with the cross-attention keys/values (`cross`, when already
        projected) and an empty self cache."""
        cross = cross if cross is not None else self.cross_kv(audio)
        empty = audio.new_zeros(audio.shape[0], self.blocks[0].attn.heads, 0,
                                audio.shape[2] // self.blocks[0].attn.heads)
        return {"self": [(empty, empty) for _ in self.blocks], "cross": cross}

    def forward(self, tokens: Tensor, cache: dict, need_weights: bool = False,
                pick: Tensor | None = None) -> tuple[Tensor, dict, list]:
        """tokens (batch, T) after the cached positions -> logits (batch, T, vocab), new cache,
        per-layer cross-attention weights (batch, heads, T, S) when need_weights. A cache with
        "pos" and "keep" (rows of different text lengths; module docstring): row i's tokens take
        the positions from pos[i] and see only its own kept positions. pick (batch,) or (batch, n):
        the logits of those positions of each row only, (batch, 1 or n, vocab)."""
        b, t = tokens.shape
        ctx = self.positional_embedding.shape[0]
        mask = None
        if "pos" in cache:
            positions = cache["pos"][:, None] + torch.arange(t)
            if int(positions.max()) >= ctx:
                raise ValueError(f"text longer than the decoder's {ctx} positions")
            x = self.token_embedding(tokens) + self.positional_embedding[positions]
            keep = torch.cat([cache["keep"], cache["keep"].new_ones(b, t)], 1)        # (batch, S)
            mask = keep[:, None, None, :]
            if t > 1:
                mask = mask & torch.ones(t, keep.shape[1], dtype=torch.bool).tril(keep.shape[1] - t)
        else:
            offset = cache["self"][0][0].shape[2]
            if offset + t > ctx:
                raise ValueError(f"text longer than the decoder's {ctx} positions")
            x = self.token_embedding(tokens) + self.positional_embedding[offset:offset + t]
        new_self, weights = [], []
        for block, kv, ckv in zip(self.blocks, cache["self"], cache["cross"]):
            x, kv, w = block(x, kv, ckv, need_weights, self_mask=mask)
            new_self.append(kv)
            weights.append(w)
        new_cache = {"self": new_self, "cross": cache["cross"]}
        if mask is not None:
            new_cache.update(pos=cache["pos"] + t, keep=keep)
        if pick is not None:
            x = x[torch.arange(b)[:, None], pick.view(b, -1)]
        return self.logits(self.ln(x)), new_cache, weights

    def logits(self, x: Tensor) -> Tensor:
        """Final normed states (..., d) -> logits (..., vocab) in float32. A decoding step has a few
        rows: float32 weights then go through the transposed product, which this CPU's BLAS runs 2-5x
        faster than the Linear for 2-10 rows (the same values up to float32 rounding, ~5e-5 of
        logits around 10; bench in WHISPER.md). int8 (a quantized copy's proj) and many rows: the Linear."""
        rows = x.numel() // x.shape[-1]
        if type(self.proj) is nn.Linear and x.dtype == torch.float32 and 1 < rows <= SMALL_BATCH_ROWS \
                and self.proj.weight.dtype == torch.float32:
            return (self.proj.weight @ x.reshape(rows, -1).t()).t().reshape(*x.shape[:-1], -1)
        return self.proj(x).float()


class Whisper(nn.Module):
    def __init__(self, cfg: WhisperConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = AudioEncoder(cfg)
        self.decoder = TextDecoder(cfg)

    def adaptive_parameter_names(self) -> list[str]:
        return [k for k, _ in self.named_parameters() if ".lora_" in k]

    def forward(self, mel: Tensor, tokens: Tensor) -> Tensor:
        """Teacher forcing: mel (batch, n_mels, 3000), tokens (batch, T) -> logits (batch, T, vocab)."""
        return self.decoder(tokens, self.decoder.init_cache(self.encoder(mel)))[0]


def reorder_cache(cache: dict, rows: Tensor, shared_audio: bool = False) -> dict:
    """Select batch rows (beam search): rows (new_batch,) indices into the cache's batch.

    shared_audio: the rows are the beams of the cache's cross-attention rows (segment-major, the
    same number per segment), so the cross-attention keys/values stay one row per segment instead
    of a copy per beam (they are the bulk of the cache: layers x 2 x (heads, 1500, d_head) per row,
    copied at every step before); Attention folds each segment's beams in."""
    pick = lambda kv: (kv[0].index_select(0, rows), kv[1].index_select(0, rows))  # noqa: E731
    if shared_audio:
        cross = cache["cross"]
    else:
        cross = [kv.select(rows) if isinstance(kv, (MaskedKV, PooledKV)) else pick(kv) for kv in cache["cross"]]
    out = {"self": [pick(kv) for kv in cache["self"]], "cross": cross}
    if "pos" in cache:
        out.update(pos=cache["pos"].index_select(0, rows), keep=cache["keep"].index_select(0, rows))
    return out
