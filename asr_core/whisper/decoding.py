"""Decoding for the Whisper backbone: greedy (batched) and beam search with the key/value cache,
word timings from the cross-attention of the alignment heads (dynamic time warping).

English transcription without timestamps, as faster-whisper does it with `language="en",
without_timestamps=True`: the same suppressed tokens, the same first-step suppression of blank
and end-of-text, at most 224 new tokens, and the same no-speech rule (a segment whose
<|nospeech|> probability exceeds 0.6 while its mean token log-prob is below -1 is silence).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from asr_core.whisper.model import TextDecoder, reorder_cache

FRAMES_PER_SECOND = 50      # encoder positions per second of audio


@dataclass(frozen=True)
class DecodeOptions:
    """Decoding settings. The defaults guard against Whisper's repetition loops (a loop costs up to
    224 decoder steps and adds dozens of inserted words); `parity()` is faster-whisper's behaviour
    (temperature 0 only), used to verify the port token for token."""
    beam_size: int = 1
    patience: float = 1.0
    length_penalty: float = 1.0
    max_new_tokens: int = 224
    no_speech_threshold: float | None = 0.6
    log_prob_threshold: float | None = -1.0
    max_tokens_per_second: float | None = 10.0      # cap new tokens at 8 + this * segment seconds
    compression_ratio_threshold: float | None = 2.4   # above: retry with beam search, then cut the loop

    def __post_init__(self) -> None:
        if not 1 <= self.beam_size <= 16:
            raise ValueError(f"beam_size must be in 1..16, got {self.beam_size}")
        if self.patience <= 0 or self.max_new_tokens < 1:
            raise ValueError("patience must be > 0 and max_new_tokens >= 1")
        if self.max_tokens_per_second is not None and self.max_tokens_per_second <= 0:
            raise ValueError(f"max_tokens_per_second must be > 0, got {self.max_tokens_per_second}")

    @classmethod
    def parity(cls, beam_size: int = 1) -> "DecodeOptions":
        return cls(beam_size=beam_size, max_tokens_per_second=None, compression_ratio_threshold=None)

    def token_budget(self, seconds: float) -> int:
        if self.max_tokens_per_second is None:
            return self.max_new_tokens
        return min(self.max_new_tokens, 8 + int(self.max_tokens_per_second * seconds))


def compression_ratio(text: str) -> float:
    """len(text) / len(zlib(text)): repetition loops compress well (Whisper's hallucination test)."""
    data = text.encode("utf-8")
    return len(data) / max(1, len(zlib.compress(data)))


def cut_repetition(tokens: list[int], min_repeats: int = 3, max_unit: int = 60, min_unit: int = 1) -> list[int]:
    """Drop a loop: the first point from which a unit of min_unit..max_unit tokens (a word, or a
    whole sentence said again and again) repeats min_repeats+ times back to back keeps one copy of
    the unit and ends there. A loop whose last copy was cut short by the token budget counts too."""
    n = len(tokens)
    for start in range(n):
        for unit in range(min_unit, min(max_unit, (n - start) // 2) + 1):
            reps = 1
            while start + (reps + 1) * unit <= n and \
                    tokens[start + reps * unit:start + (reps + 1) * unit] == tokens[start:start + unit]:
                reps += 1
            tail = tokens[start + reps * unit:]
            if reps == min_repeats - 1 and 0 < len(tail) < unit and tail == tokens[start:start + len(tail)]:
                reps += 1   # the budget ended the loop inside its last copy
            if reps >= min_repeats:
                return tokens[:start + unit]
    return tokens


@dataclass
class Hypothesis:
    tokens: list[int]            # generated text tokens, without the end-of-text token
    sum_logprob: float           # including the end-of-text token
    no_speech_prob: float

    @property
    def avg_logprob(self) -> float:
        return self.sum_logprob / (len(self.tokens) + 1)

    def is_silence(self, opts: DecodeOptions) -> bool:
        return (opts.no_speech_threshold is not None and self.no_speech_prob > opts.no_speech_threshold
                and (opts.log_prob_threshold is None or self.avg_logprob < opts.log_prob_threshold))


def _masked_logprobs(logits: Tensor, suppress: Tensor, suppress_begin: Tensor | None,
                     begin_rows: Tensor | None = None) -> Tensor:
    """logits (batch, vocab) -> log-probs with suppressed tokens at -inf (suppress_begin: in the rows
    `begin_rows` only, where given)."""
    logits = logits.clone()
    logits[:, suppress] = float("-inf")
    if suppress_begin is not None:
        if begin_rows is None:
            logits[:, suppress_begin] = float("-inf")
        else:
            logits[begin_rows[:, None], suppress_begin[None, :]] = float("-inf")
    return F.log_softmax(logits, dim=-1)


def _prefill(decoder: TextDecoder, last: Tensor, cache: dict, forced: list[list[int]], drafts: list[list[int]],
             start: int, pad: int, suppress: Tensor, suppress_begin: Tensor, limits: list[int],
             out: list[list[int]], sums: list[float]) -> tuple[Tensor, dict]:
    """Feed each row its forced tokens, then its draft (tokens greedy decoding is expected to choose
    next), after the prompt (`start` positions): all rows in one decoder pass. Rows shorter than
    the longest are padded, and the padding is never seen again (the cache's "pos"/"keep"). Of each
    draft, the tokens greedy would have chosen one by one are kept (appended to `out`, their
    log-probs to `sums`), up to the row's first other choice; the positions after are dropped the
    same way. -> each row's logits after its last kept token (`last` where there is none), cache."""
    fed = [f + d for f, d in zip(forced, drafts)]
    b, width = len(fed), max(len(x) for x in fed)
    n_forced = torch.tensor([len(f) for f in forced])
    tokens = torch.tensor([x + [pad] * (width - len(x)) for x in fed])
    # logits after the last forced token and after each draft token: positions F-1 .. F+D-1
    span = max(len(d) for d in drafts) + 1
    pick = (n_forced[:, None] - 1 + torch.arange(span)).clamp(0, width - 1)
    cache = dict(cache, pos=torch.full((b,), start), keep=torch.ones(b, start, dtype=torch.bool))
    logits, cache, _ = decoder(tokens, cache, pick=pick)                 # (b, span, vocab)
    logits[:, 0] = torch.where((n_forced > 0)[:, None], logits[:, 0], last)
    # the text's first token (position 0 of a row without forced tokens) as greedy's first step
    first = (n_forced == 0).nonzero()[:, 0] * span
    logp = _masked_logprobs(logits.flatten(0, 1), suppress, suppress_begin, first).view(b, span, -1)
    best = logp.argmax(-1).tolist()
    kept = []
    for i, draft in enumerate(drafts):
        a = 0
        while a < len(draft) and best[i][a] == draft[a] and len(out[i]) < limits[i]:
            out[i].append(draft[a])
            sums[i] += float(logp[i, a, draft[a]])
            a += 1
        kept.append(len(forced[i]) + a)
    kept_t = torch.tensor(kept)
    cache["keep"][:, start:] = torch.arange(width) < kept_t[:, None]
    cache["pos"] = start + kept_t
    return logits[torch.arange(b), kept_t - n_forced], cache


def _start(decoder: TextDecoder, audio: Tensor, prompt: list[int], no_speech: int,
           sot_index: int = 0, cross: list | None = None) -> tuple[Tensor, dict, Tensor]:
    """Run the prompt: -> last logits (batch, vocab), cache, no-speech probabilities (batch,).
    sot_index: where <|startoftranscript|> is in the prompt (after <|startofprev|> and the previous
    text when there is one); cross: the audio's cross-attention keys/values, if already projected."""
    tokens = torch.tensor([prompt] * audio.shape[0])
    logits, cache, _ = decoder(tokens, decoder.init_cache(audio, cross))
    no_speech_prob = logits[:, sot_index].softmax(-1)[:, no_speech]        # at <|startoftranscript|>
    return logits[:, -1], cache, no_speech_prob


@torch.no_grad()
def greedy(decoder: TextDecoder, audio: Tensor, prompt: list[int], eot: int, no_speech: int,
           suppress: list[int], suppress_begin: list[int], opts: DecodeOptions,
           max_new: int | list[int] | None = None, sot_index: int = 0,
           cross: list | None = None, forced: list[list[int]] | None = None,
           drafts: list[list[int]] | None = None) -> list[Hypothesis]:
    """audio (batch, S, d) encoder output -> one hypothesis per row (rows decode together; a row
    that ends leaves the batch, so a row that runs long costs only itself). max_new: tokens at
    most, for all rows or one number per row; cross: as `_start`. forced: each row's first text
    tokens, given rather than chosen (its hypothesis starts with them; they count in the budget and
    add nothing to sum_logprob). drafts: tokens each row is expected to choose next (after its
    forced ones; without end-of-text): verified in the same one decoder pass as the forced tokens,
    and kept as far as greedy would have chosen them, so the result is greedy's either way, in
    fewer decoder steps when the draft is right."""
    last, cache, nsp = _start(decoder, audio, prompt, no_speech, sot_index, cross)
    b = audio.shape[0]
    limits = _budgets(max_new or opts.max_new_tokens, b)
    sup, sup0 = torch.tensor(suppress, dtype=torch.long), torch.tensor(suppress_begin, dtype=torch.long)
    forced, drafts = forced or [[] for _ in range(b)], drafts or [[] for _ in range(b)]
    if len(forced) != b or len(drafts) != b:
        raise ValueError(f"{b} rows but {len(forced)} forced prefixes and {len(drafts)} drafts")
    if any(eot in d for d in drafts):
        raise ValueError("a draft holds the end-of-text token")
    out: list[list[int]] = [list(f) for f in forced]
    sums = [0.0] * b
    begin = None                 # rows whose first chosen token is the text's first (all, unless prefilled)
    if any(forced) or any(drafts):
        last, cache = _prefill(decoder, last, cache, forced, drafts, len(prompt), eot, sup, sup0, limits, out, sums)
        begin = torch.tensor([i for i in range(b) if not out[i]], dtype=torch.long)
    alive = [i for i in range(b) if len(out[i]) < limits[i]]      # rows of `last` and of the cache, in this order
    if len(alive) < b:
        rows = torch.tensor(alive, dtype=torch.long)
        last, cache = last[rows], reorder_cache(cache, rows)
        if begin is not None:
            begin = torch.tensor([j for j, i in enumerate(alive) if not out[i]], dtype=torch.long)
    step = 0
    while alive:
        logp = _masked_logprobs(last, sup, sup0 if step == 0 else None, begin)        # (alive, vocab)
        nxt = logp.argmax(-1)
        picked = logp.gather(1, nxt[:, None])[:, 0].double().tolist()
        keep = []
        for j, (i, t) in enumerate(zip(alive, nxt.tolist())):
            sums[i] += picked[j]
            if t != eot:
                out[i].append(t)
                if len(out[i]) < limits[i]:
                    keep.append(j)
        step += 1
        if not keep:
            break
        if len(keep) < len(alive):
            rows = torch.tensor(keep, dtype=torch.long)
            nxt, cache = nxt[rows], reorder_cache(cache, rows)
            alive = [alive[j] for j in keep]
        last, cache, _ = decoder(nxt[:, None], cache)
        last = last[:, -1]
    return [Hypothesis(out[i], sums[i], float(nsp[i])) for i in range(b)]


@torch.no_grad()
def beam_search(decoder: TextDecoder, audio: Tensor, prompt: list[int], eot: int, no_speech: int,
                suppress: list[int], suppress_begin: list[int], opts: DecodeOptions,
                max_new: int | list[int] | None = None, sot_index: int = 0,
                cross: list | None = None) -> list[Hypothesis]:
    """audio (segments, S, d) -> the best hypothesis of each segment by sum log-prob /
    length ** length_penalty. The segments are searched together: every decoder step runs the
    beams of all the segments still searching as one batch (each segment's beams attend to its
    own audio; a segment whose search ended leaves the batch). max_new: new tokens at most, for
    all segments or one number per segment; cross: as `_start`."""
    k = opts.beam_size
    last, cache, nsp = _start(decoder, audio, prompt, no_speech, sot_index, cross)
    sup, sup0 = torch.tensor(suppress, dtype=torch.long), torch.tensor(suppress_begin, dtype=torch.long)
    n = audio.shape[0]
    limits = _budgets(max_new or opts.max_new_tokens, n)
    seqs: list[list[list[int]]] = [[[]] for _ in range(n)]
    scores = [torch.zeros(1, dtype=torch.float64) for _ in range(n)]
    finished: list[list[tuple[float, list[int], float]]] = [[] for _ in range(n)]   # (normalized, tokens, sum)
    active = list(range(n))          # segments still searching; their rows of `last` in this order
    for step in range(max(limits)):
        logp = _masked_logprobs(last, sup, sup0 if step == 0 else None)   # (rows, vocab)
        per = logp.shape[0] // len(active)
        rows, keep, still = [], [], []
        for j, seg in enumerate(active):
            if step >= limits[seg]:
                continue
            picked = _beam_step(logp[j * per:(j + 1) * per], scores[seg], seqs[seg], finished[seg], eot, k,
                                opts.length_penalty)
            if len(finished[seg]) >= k * opts.patience or not picked[0]:
                continue
            seg_rows, seg_keep, seqs[seg], scores[seg] = picked
            rows += [j * per + r for r in seg_rows]
            keep += seg_keep
            still.append(j)
        if not still:
            break
        if len(still) < len(active):
            kept = torch.tensor(still)
            cache = {"self": cache["self"], "cross": [_select(kv, kept) for kv in cache["cross"]]}
        active = [active[j] for j in still]
        cache = reorder_cache(cache, torch.tensor(rows), shared_audio=True)
        last, cache, _ = decoder(torch.tensor(keep)[:, None], cache)
        last = last[:, -1]
    out = []
    for seg in range(n):
        done = finished[seg] or [(float(s) / (len(q) + 1) ** opts.length_penalty, q, float(s))   # ran out of length
                                 for q, s in zip(seqs[seg], scores[seg])]
        _, tokens, total = max(done, key=lambda f: f[0])
        out.append(Hypothesis(tokens, total, float(nsp[seg])))
    return out


def _select(kv, rows: Tensor):
    """Rows of one block's cross-attention keys/values (a pair of tensors, or MaskedKV/PooledKV)."""
    return kv.select(rows) if hasattr(kv, "select") else (kv[0].index_select(0, rows), kv[1].index_select(0, rows))


def _budgets(max_new: int | list[int], n: int) -> list[int]:
    if isinstance(max_new, int):
        return [max_new] * n
    if len(max_new) != n:
        raise ValueError(f"{n} segments but {len(max_new)} token budgets")
    return list(max_new)


def _beam_step(logp: Tensor, scores: Tensor, seqs: list[list[int]], finished: list, eot: int, k: int,
               length_penalty: float) -> tuple[list[int], list[int], list[list[int]], Tensor]:
    """One step of one segment's beams: logp (beams, vocab) -> (rows kept, their next tokens, new
    sequences, new scores); candidates that end the text go to `finished`.

    As Whisper's BeamSearchDecoder: candidates in score order; one that ends the text is finished
    only if it ranks above the k-th live one (taking every end-of-text among the top 2k filled
    `finished` with early, short endings and stopped the search after the first sentence)."""
    # the best 2k of all the beams' candidates are among each beam's own best 2k
    best = logp.topk(min(2 * k, logp.shape[1]), dim=-1)
    total = (scores[:, None] + best.values.double()).flatten()
    order = total.argsort(descending=True, stable=True)[:2 * k]
    rows, keep, new_seqs, new_scores = [], [], [], []
    for s, idx in zip(total[order].tolist(), order.tolist()):
        r, t = divmod(idx, best.indices.shape[1])
        t = int(best.indices[r, t])
        if s == float("-inf"):
            break
        if t == eot:
            finished.append((s / (len(seqs[r]) + 1) ** length_penalty, seqs[r], s))
        else:
            rows.append(r)
            keep.append(t)
            new_seqs.append(seqs[r] + [t])
            new_scores.append(s)
            if len(new_seqs) == k:
                break
    return rows, keep, new_seqs, torch.tensor(new_scores, dtype=torch.float64)


# -- word timings --------------------------------------------------------------------------------
def _median_filter(x: Tensor, width: int) -> Tensor:
    """Median over the last axis, width odd, reflect padding. x (..., T)."""
    if width <= 1 or x.shape[-1] <= width // 2:
        return x
    pad = width // 2
    y = F.pad(x.reshape(-1, 1, x.shape[-1]), (pad, pad), mode="reflect").reshape(*x.shape[:-1], -1)
    return y.unfold(-1, width, 1).median(-1).values


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Monotonic alignment of rows (tokens) to columns (frames) minimizing the summed cost.
    cost (N, M) -> (row indices, column indices) of the path, both of length >= max(N, M).
    Filled one anti-diagonal at a time (its cells depend only on the two before it); ties go to the
    diagonal step, then the row step, then the column step."""
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    trace = np.zeros((n + 1, m + 1), dtype=np.int8)
    for d in range(2, n + m + 1):
        i = np.arange(max(1, d - m), min(n, d - 1) + 1)
        j = d - i
        c = np.stack([acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]])    # (3, cells)
        best = c.argmin(0)
        acc[i, j] = cost[i - 1, j - 1] + c[best, np.arange(i.size)]
        trace[i, j] = best
    i, j, path = n, m, []
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        step = trace[i, j]
        i, j = (i - 1, j - 1) if step == 0 else (i - 1, j) if step == 1 else (i, j - 1)
    path.reverse()
    arr = np.array(path)
    return arr[:, 0], arr[:, 1]


@torch.no_grad()
def token_timings(decoder: TextDecoder, audio: Tensor, prompt: list[int], tokens: list[int], eot: int,
                  heads: tuple[tuple[int, int], ...], n_frames: int,
                  cross: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Start time (seconds) of each text token and of the end-of-text, and each token's probability.

    audio (1, S, d); n_frames: encoder positions that hold the segment's audio; cross: as `_start`. Cross-attention of
    the alignment heads, standardized per frame, median-filtered, averaged, aligned by DTW.
    """
    seq = torch.tensor([prompt + tokens + [eot]])
    logits, _, weights = decoder(seq, decoder.init_cache(audio, cross), need_weights=True)
    probs = logits[0, len(prompt) - 1:-1].softmax(-1).gather(1, seq[0, len(prompt):, None])[:, 0]
    heads = heads or tuple((len(weights) - 1, h) for h in range(weights[0].shape[1]))
    w = torch.stack([weights[layer][0, head] for layer, head in heads])       # (heads, T, S)
    w = w[:, len(prompt) - 1:len(prompt) + len(tokens), :max(1, n_frames)]     # rows predicting text + eot
    std, mean = torch.std_mean(w, dim=-2, keepdim=True, unbiased=False)
    w = _median_filter((w - mean) / (std + 1e-8), 7)
    rows, cols = dtw(-w.mean(0).double().numpy())
    jumps = np.pad(np.diff(rows), (1, 0), constant_values=1).astype(bool)
    return cols[jumps] / FRAMES_PER_SECOND, probs.numpy()
