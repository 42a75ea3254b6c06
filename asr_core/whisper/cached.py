"""Cheap per-caller adaptation of Whisper: the frozen encoder runs ONCE per utterance.

The adapted group sits at the very top of the encoder (`GROUP`: the final layer norm's gain and
bias, 768 values): everything below it is frozen, so each utterance's encoder output before that
norm is computed once (`encode_frozen`) and every adaptation step, every held-out decode of the
guard and every candidate profile reuses it. A step costs a teacher-forced pass of the decoder
only; a held-out decode costs the decoder only.

The recognizer applies a profile through `WhisperRecognizer.encode(params=)` (functional_call on
the encoder), so a profile over `GROUP` needs no change in the serving path: the same numbers.

    cache = encode_frozen(rec, audios, 8000, trim_seconds=1.0)     # list of (S_i, d)
    loss = teacher_forced_loss(rec, params, batch_of(cache, idx), targets)
    text = decode_cached(rec, cache[i], params, beam_size=1)
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asr_core.whisper.decoding import Hypothesis, _masked_logprobs, cut_repetition, greedy
from asr_core.whisper.model import N_FRAMES, FoldedKV, MaskedKV, SharedTailKV, pool_tail, pooled_from, splice_tail
from asr_core.whisper.recognizer import WhisperRecognizer, bf16_linears

GROUP = ("encoder.ln_post.weight", "encoder.ln_post.bias")
# Teacher-forced passes (`teacher_forced_loss`) fold the group into the cross-attention instead of
# projecting every own position's keys and values (`FoldedKV`): the same loss up to rounding, cheaper.
FOLD = True
# Teacher-forced passes group a bucket's rows so that none is padded to more than this many times
# its own width (`CallerCache.parts(tight=True)`); None: a bucket's rows go together.
TIGHT_RATIO: float | None = 1.5


def group_params(rec: WhisperRecognizer) -> dict[str, Tensor]:
    """The model's own values of the group: exactly Whisper (what a caller without a profile gets)."""
    own = dict(rec.model.named_parameters())
    return {k: own[k].detach().clone() for k in GROUP}


@dataclass
class CallerCache:
    """One caller's utterances through the frozen encoder. Utterances of similar length share a
    bucket, encoded at the bucket's width (its longest + `trim_seconds`): hidden[j] (rows, S_j, d)
    holds the utterances rows[j]; frames[i] is utterance i's content frames.

    As served (`encode_frozen(as_served=True)` with a recognizer that uses its live margin): each
    utterance was encoded alone, its own length plus the margin (`live[i]` positions); hidden[j]
    holds those positions (zeros past each row's own), and every utterance's window continues with
    `shared` (1, 1500, d), the padding's encoding, from its position live[i] on. The decoder then
    sees the whole 30 s window as in serving, but the padding's keys and values are projected once
    for all utterances (`cross_kv`). pool > 1 (the recognizer's `tail_pool`): as served, that
    padding is pooled in blocks of that many positions after each utterance's first whole block
    (`WhisperRecognizer.window_kv`); the rows' own positions then run to that block."""
    hidden: list[Tensor]
    rows: list[list[int]]
    frames: list[int]
    seconds: list[float] | None = None      # each utterance's duration (the decoder's token budget)
    shared: Tensor | None = None
    live: list[int] | None = None
    pool: int = 1
    normed: dict = field(default_factory=dict, repr=False)    # a part's normalized own states (`cross_kv(fold=True)`)

    @property
    def pooled(self) -> bool:
        return self.shared is not None and self.pool > 1

    def __len__(self) -> int:
        return len(self.frames)

    def parts(self, subset: list[int] | None = None, tight: float | None = None):
        """(utterance indices, (n, S, d) hidden) per bucket, restricted to `subset`. tight (as served,
        pooled; `TIGHT_RATIO` for the fits): a bucket's rows are split further so that none is padded
        to more than `tight` times its own width: the teacher-forced passes' folded cross-attention
        costs in proportion to the padded width, and a bucket of 16 holds 3 s prompts beside a 15.7 s
        one. None: a bucket's rows together."""
        keep = None if subset is None else set(subset)
        for h, r in zip(self.hidden, self.rows):
            pos = [k for k, i in enumerate(r) if keep is None or i in keep]
            if not pos:
                continue
            for group in (self._tight(r, pos, tight) if tight is not None and self.pooled else [pos]):
                yield [r[k] for k in group], h[group] if len(group) < len(r) else h

    def _tight(self, r: list[int], pos: list[int], ratio: float) -> list[list[int]]:
        """Bucket rows `pos` (of rows `r`) -> groups of them, longest first, each row in the group of
        the longest whose own width is at most `ratio` times its own."""
        if not ratio >= 1.0:
            raise ValueError(f"a grouping ratio is at least 1 (a row's own width), got {ratio!r}")
        width = {k: pooled_from(self.live[r[k]], self.pool) for k in pos}
        groups: list[list[int]] = []
        for k in sorted(pos, key=lambda k: (-width[k], k)):
            if groups and width[groups[-1][0]] <= ratio * width[k]:
                groups[-1].append(k)
            else:
                groups.append([k])
        return [sorted(g) for g in groups]

    def window(self, rec: WhisperRecognizer, params: dict[str, Tensor] | None, idx: list[int],
               hidden: Tensor) -> Tensor:
        """A bucket's part (`parts`) -> the encoder output the decoder sees, with `params`:
        (n, S, d); as served, the whole window (n, 1500, d)."""
        if self.shared is None:
            return apply_group(rec, params, hidden)
        return apply_group(rec, params, splice_tail(hidden, torch.tensor([self.live[i] for i in idx]), self.shared))

    def cross_kv(self, rec: WhisperRecognizer, decoder: nn.Module, params: dict[str, Tensor] | None,
                 idx: list[int], hidden: Tensor, padding_kv: list | None = None,
                 fold: bool = False) -> tuple[Tensor, list | None]:
        """A bucket's part -> (its own positions' encoder output, the cross-attention keys/values
        of the window, or None where the decoder projects them itself from that output). As
        served: the rows' own positions are projected, the padding's once (`padding_kv`, from
        `padding_cross_kv`, may serve several buckets) and shared by every row (`SharedTailKV`),
        differentiably in `params` (the adaptation steps' teacher-forced passes). fold: the own
        positions are not projected but folded into the attention (`FoldedKV`: cheaper for a
        teacher-forced pass over short texts; the first element is then their normalized states)."""
        if self.shared is None:
            return apply_group(rec, params, hidden), None
        if padding_kv is None:
            padding_kv = self.padding_cross_kv(rec, decoder, params)
        live = torch.tensor([self.live[i] for i in idx])
        own = live if not self.pooled else torch.tensor([pooled_from(int(n), self.pool) for n in live])
        if fold and not any(b.cross_attn.lora_scale for b in decoder.blocks):
            ln = rec.model.encoder.ln_post
            n = self.normed.get(tuple(idx))
            if n is None:     # the same for every params: made once per part
                states = self._own_states(hidden, live, own)
                n = self.normed[tuple(idx)] = F.layer_norm(states, (states.shape[-1],), eps=ln.eps)
            gain, bias = (params[GROUP[0]], params[GROUP[1]]) if params else (ln.weight, ln.bias)
            return n, [SharedTailKV(None, None, *pad, own, self.pool,
                                    FoldedKV(n, gain, bias, b.cross_attn.key, b.cross_attn.value))
                       for b, pad in zip(decoder.blocks, padding_kv)]
        audio = apply_group(rec, params, self._own_states(hidden, live, own))
        return audio, [SharedTailKV(*kv, *pad, own, self.pool) for kv, pad in zip(_own_kv(decoder, audio, own), padding_kv)]

    def _own_states(self, hidden: Tensor, live: Tensor, own: Tensor) -> Tensor:
        """A part's pre-norm states up to the rows' own positions (as served; pooled, each row's run
        to its first whole block of padding, taken from the padding's encoding after its live part)."""
        if not self.pooled:
            return hidden
        width = int(own.max())      # (a bucket's part may hold shorter rows than its width)
        return splice_tail(hidden, live, self.shared[:, :max(width, hidden.shape[1])])[:, :width]

    def padding_cross_kv(self, rec: WhisperRecognizer, decoder: nn.Module, params: dict[str, Tensor] | None) -> list:
        """Each decoder block's cross-attention keys/values of the padding's encoding, with `params`
        (None where the cache is not as served)."""
        if self.shared is None:
            return None
        window = apply_group(rec, params, self.shared)
        return decoder.cross_kv(pool_tail(window, 0, self.pool)[0] if self.pool > 1 else window)


@torch.no_grad()
def encode_frozen(rec: WhisperRecognizer, audios: list[Tensor], sample_rate: int,
                  trim_seconds: float | None = 1.0, bucket: int = 6, as_served: bool = False) -> CallerCache:
    """(samples,) utterances -> CallerCache of the encoder output before its final norm. The encoder
    sees each bucket's longest utterance plus `trim_seconds` of padding (None: the full 30 s window
    as in serving, ~7x the cost for 3 s utterances). as_served, with a recognizer that uses its live
    margin: each utterance alone, its own length plus the margin computed, the rest of the window
    the padding's encoding, as `rec.transcribe` encodes it."""
    if not audios:
        raise ValueError("no audio to encode")
    m = rec.model
    live_margin = as_served and trim_seconds is None and rec.uses_live_margin
    x16 = [rec.prepare(a, sample_rate)[: N_FRAMES * 160] for a in audios]
    feats = [rec.features(x) for x in x16]
    order = sorted(range(len(feats)), key=lambda i: feats[i][1])
    hidden, rows = [], []
    if live_margin:
        padding = rec.padding_context(model=m)
        live = [rec.live_positions(f) for _, f in feats]
        own = {}
        for i in order:      # alone, as served: its own length plus the margin
            record: list = []
            m.encoder(feats[i][0][None, :, :2 * live[i]], padding=padding, record=record, pool=rec.tail_pool)
            own[i] = record[-1][0, :live[i]]
        for j in range(0, len(order), bucket):
            r = order[j:j + bucket]
            width = max(live[i] for i in r)
            hidden.append(torch.stack([F.pad(own[i], (0, 0, 0, width - live[i])) for i in r]))
            rows.append(r)
        return CallerCache(hidden, rows, [f for _, f in feats], [x.numel() / 16000 for x in x16],
                           shared=padding.hidden, live=live, pool=rec.tail_pool)
    for j in range(0, len(order), bucket):
        r = order[j:j + bucket]
        longest = max(feats[i][1] for i in r)
        width = N_FRAMES if trim_seconds is None else \
            min(N_FRAMES, 2 * ((longest + int(trim_seconds * 100) + 1) // 2))
        x = torch.stack([feats[i][0][:, :width] for i in r])
        x = F.gelu(m.encoder.conv2(F.gelu(m.encoder.conv1(x)))).transpose(1, 2)
        x = x + m.encoder.positional_embedding[:x.shape[1]]
        for block in m.encoder.blocks:
            x = block(x)[0]
        hidden.append(x)
        rows.append(r)
    return CallerCache(hidden, rows, [f for _, f in feats], [x.numel() / 16000 for x in x16])


def _own_kv(decoder: nn.Module, audio: Tensor, own: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Each decoder block's cross-attention keys/values of rows' own positions: audio (rows, width,
    d), own (rows,) -> [(k, v)] each (rows, heads, width, d_head). Only the positions a row owns are
    projected (a bucket's rows are padded to its longest; the rest stay zero, masked in attention)."""
    rows, width, _ = audio.shape
    where = (torch.arange(width) < own[:, None]).nonzero(as_tuple=True)
    packed = audio[where][None]                                     # (1, positions, d)
    out = []
    for block in decoder.blocks:
        pair = []
        for t in block.cross_attn.project_kv(packed):               # (1, heads, positions, d_head)
            full = t.new_zeros(rows, width, t.shape[1], t.shape[3]).index_put(where, t[0].transpose(0, 1))
            pair.append(full.transpose(1, 2))
        out.append((pair[0], pair[1]))
    return out


def apply_group(rec: WhisperRecognizer, params: dict[str, Tensor] | None, hidden: Tensor) -> Tensor:
    """(.., S, d) pre-norm encoder output -> the encoder output with `params` (None: the model's)."""
    ln = rec.model.encoder.ln_post
    if not params:
        return ln(hidden)
    return F.layer_norm(hidden, (hidden.shape[-1],), params[GROUP[0]], params[GROUP[1]], ln.eps)


@dataclass
class TargetBatch:
    """Teacher-forcing targets of cached utterances. tokens (batch, T): prompt + text + end-of-text,
    padded with end-of-text; mask (batch, T - 1): 1 where tokens[:, 1:] is a target; weights
    (batch, T - 1): per-target weight (confidence of a pseudo-label; 1 for references);
    vocab: the candidate tokens the softmax runs over (every target + the unadapted model's top
    tokens at each target position: the rest of the 51864 carry ~no probability and cost 20x)."""
    tokens: Tensor
    mask: Tensor
    weights: Tensor
    vocab: Tensor
    target_index: Tensor     # (batch, T - 1) index into `vocab` of each target (0 where masked)
    logprobs: dict[int, float]   # each utterance's mean target log-prob (full vocabulary) with the params
                                 # the targets were made with: how confident the model is of them
    greedy: dict[int, Hypothesis] = field(default_factory=dict)   # `make_targets(greedy_caps=)`: the
                                 # utterances whose capped greedy decode is their target, and that decode


def token_targets(rec: WhisperRecognizer, texts: list[str]) -> list[list[int]]:
    """Texts -> prompt + text tokens + end-of-text (what teacher forcing predicts)."""
    tok, m = rec.tokenizer, rec.model
    return [tok.prompt + tok.encode(" " + t.strip())[: m.cfg.n_text_ctx // 2] + [tok.eot] for t in texts]


def make_targets(rec: WhisperRecognizer, cache: CallerCache, seqs: list[list[int]], params: dict[str, Tensor] | None,
                 weights: list[list[float]] | None = None, top: int = 32,
                 greedy_caps: dict[int, int] | None = None) -> TargetBatch:
    """Token sequences (`token_targets`, one per cached utterance) -> TargetBatch; the candidate
    vocabulary comes from one full-vocabulary pass with `params`. weights[i]: one per text token
    and end-of-text of seqs[i] (None: all 1).

    greedy_caps {utterance: token cap}: the same pass also tells, for these utterances, whether
    greedy decoding with `params` (`greedy_capped` with these caps) would choose exactly the
    target: it does if at every target position the most likely token under greedy's
    suppression rules is the target, and the text ends before the cap. Those go to
    `TargetBatch.greedy` with the hypothesis greedy would return (its masked log-probs, no-speech
    probability, loop cut and silence rule), at no decoding cost; the others need a real decode."""
    tok = rec.tokenizer
    longest = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), longest), tok.eot, dtype=torch.long)
    mask, w = torch.zeros(len(seqs), longest - 1), torch.zeros(len(seqs), longest - 1)
    for i, s in enumerate(seqs):
        tokens[i, :len(s)] = torch.tensor(s)
        mask[i, len(tok.prompt) - 1:len(s) - 1] = 1.0
        w[i, len(tok.prompt) - 1:len(s) - 1] = torch.tensor(weights[i]) if weights else 1.0
    top_ids, logprobs, proven = [], {}, {}
    with torch.no_grad():
        padding_kv = cache.padding_cross_kv(rec, rec.model.decoder, params)
        for idx, h in cache.parts():
            t = _width(mask[idx])
            x = _decoder_states(rec, *cache.cross_kv(rec, rec.model.decoder, params, idx, h, padding_kv),
                                tokens[idx, :t])
            sel = mask[idx, :t].bool()
            logits = rec.model.decoder.logits(x[sel])             # (the part's targets, vocab): one product
            top_ids.append(logits.topk(top, -1).indices.flatten())
            lp = logits.log_softmax(-1).gather(1, tokens[idx, 1:t + 1][sel][:, None])[:, 0]
            for i, row in zip(idx, lp.split(sel.sum(1).tolist())):
                logprobs[i] = float(row.mean()) if row.numel() else -10.0
            if greedy_caps and any(i in greedy_caps for i in idx):
                proven.update(_greedy_proven(rec, cache, seqs, idx, x, logits, sel, greedy_caps))
    vocab = torch.unique(torch.cat([*top_ids, tokens[:, 1:][mask.bool()]]))
    index = torch.searchsorted(vocab, tokens[:, 1:].contiguous()).clamp(max=len(vocab) - 1) * mask.long()
    return TargetBatch(tokens, mask, w, vocab, index, logprobs, proven)


def _greedy_proven(rec: WhisperRecognizer, cache: CallerCache, seqs: list[list[int]], idx: list[int], x: Tensor,
                   logits: Tensor, sel: Tensor, caps: dict[int, int]) -> dict[int, Hypothesis]:
    """`make_targets(greedy_caps=)` for one part: x (rows, T, d) the decoder states along the
    targets, logits (the part's targets, vocab), sel (rows, T) where the targets
    are -> {utterance: the hypothesis greedy decoding returns} for the utterances of `caps` whose
    greedy decode is their target (`greedy_capped`'s rules)."""
    tok = rec.tokenizer
    counts = sel.sum(1).tolist()
    firsts = torch.tensor([0] + counts[:-1]).cumsum(0)               # each row's first target: the text's first token
    sup = torch.tensor(list(tok.suppress), dtype=torch.long)
    sup0 = torch.tensor(list(rec.model.cfg.suppress_ids_begin), dtype=torch.long)
    logp = _masked_logprobs(logits, sup, sup0, firsts[torch.tensor(counts) > 0])
    best = logp.argmax(-1)
    # greedy reads the no-speech probability at <|startoftranscript|> (the prompt's first token)
    no_speech = rec.model.decoder.logits(x[:, 0]).softmax(-1)[:, tok.no_speech]
    out = {}
    for k, i in enumerate(idx):
        if i not in caps or not counts[k]:
            continue
        a, n = int(firsts[k]), counts[k]
        target = torch.tensor(seqs[i][len(tok.prompt):])           # text tokens and end-of-text
        text = target[:-1].tolist()
        limit = min(_budget(rec, cache, i), caps[i])
        if len(text) >= limit or not torch.equal(best[a:a + n], target):
            continue                                                # greedy would stop at the cap, or choose otherwise
        out[i] = _cut(rec, Hypothesis(text, float(logp[torch.arange(a, a + n), target].double().sum()),
                                      float(no_speech[k])))
    return out


def _cut(rec: WhisperRecognizer, hyp: Hypothesis) -> Hypothesis:
    """A capped greedy hypothesis as `greedy_capped` returns it: a loop cut at once, never retried;
    silence (the recognizer's no-speech rule) -> no tokens."""
    return _silenced(rec, Hypothesis(cut_repetition(hyp.tokens), hyp.sum_logprob, hyp.no_speech_prob))


def _silenced(rec: WhisperRecognizer, hyp: Hypothesis) -> Hypothesis:
    """The recognizer's no-speech rule: a hypothesis it counts as silence has no tokens."""
    return Hypothesis([], hyp.sum_logprob, hyp.no_speech_prob) if hyp.is_silence(rec.options) else hyp


def _width(mask: Tensor) -> int:
    """(rows, T - 1) target mask -> the inputs the rows need: up to their last target, at least one."""
    cols = mask.any(0).nonzero()
    return int(cols.max()) + 1 if cols.numel() else 1


def _decoder_states(rec: WhisperRecognizer, audio: Tensor, cross: list | None, tokens: Tensor,
                    decoder: nn.Module | None = None) -> Tensor:
    """audio (batch, S, d) (cross: its cross-attention keys/values, None: projected here), tokens
    (batch, T) -> final normed decoder states (batch, T, d)."""
    dec = decoder if decoder is not None else rec.model.decoder
    cache = dec.init_cache(audio, cross)
    x = dec.token_embedding(tokens) + dec.positional_embedding[:tokens.shape[1]]
    for block, kv, ckv in zip(dec.blocks, cache["self"], cache["cross"]):
        x = block(x, kv, ckv)[0]
    return dec.ln(x)


def teacher_forced_loss(rec: WhisperRecognizer, params: dict[str, Tensor], cache: CallerCache,
                        targets: TargetBatch, subset: list[int] | None = None, objective: str = "ce",
                        decoder: nn.Module | None = None) -> Tensor:
    """Weighted mean per text token (prompt excluded, end-of-text included) of the targets of
    `subset` (None: all), over the candidate vocabulary, with the group at `params`, of
    objective "ce": the cross-entropy of the targets; "entropy": the entropy of the predicted
    distribution along the targets (SUTA-style test-time adaptation, no label needed). decoder: the
    model's decoder (default) or a copy of it in another precision (`bf16_decoder`)."""
    dec = decoder if decoder is not None else rec.model.decoder
    emb = dec.token_embedding.weight[targets.vocab]                                     # (|vocab|, d)
    total, weight = None, 0.0
    padding_kv = cache.padding_cross_kv(rec, dec, params)   # once per step, every bucket's
    for idx, h in cache.parts(subset, tight=TIGHT_RATIO):
        t = _width(targets.mask[idx])     # the part's longest target: the decoder is causal, padding after it is unused
        x = _decoder_states(rec, *cache.cross_kv(rec, dec, params, idx, h, padding_kv, fold=FOLD), targets.tokens[idx, :t], dec)
        sel = targets.mask[idx, :t].bool()
        logits = x[sel] @ emb.t()
        if objective == "entropy":
            logp = logits.log_softmax(-1)
            ce = -(logp.exp() * logp).sum(-1)
        else:
            ce = F.cross_entropy(logits, targets.target_index[idx, :t][sel], reduction="none")
        w = targets.weights[idx, :t][sel]
        total = (ce * w).sum() if total is None else total + (ce * w).sum()
        weight += float(w.sum())
    if total is None:
        raise ValueError("no utterance to compute a loss on")
    return total / max(weight, 1e-6)


def bf16_decoder(decoder: nn.Module) -> nn.Module:
    """A copy of the decoder whose linear layers hold bfloat16 weights (their biases stay float32;
    the embeddings are the decoder's own, shared). Under bfloat16 autocast it computes exactly what
    the decoder does (autocast casts every linear weight to bfloat16 at each call; here that is
    done once)."""
    return bf16_linears(decoder, share=lambda name: "embedding" in name)


@contextmanager
def frozen(model: nn.Module):
    """The model's own weights need no gradients while a caller's group adapts (8x less work)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


@torch.no_grad()
def decode_cached(rec: WhisperRecognizer, cache: CallerCache, params: dict[str, Tensor] | None,
                  subset: list[int] | None = None, beam_size: int = 1, retry: bool = True) -> dict[int, Hypothesis]:
    """Cached utterances of `subset` (None: all) -> their hypotheses, with the recognizer's decoding
    rules (token budget, no-speech rule; silence -> no tokens). Greedy decodes a bucket together.
    retry: a repetition loop is decoded again with beam search as the recognizer does (`_guard`);
    False: the loop is cut at once (the adaptation guard's cheap decodes)."""
    out = {}
    for idx, h in cache.parts(subset):
        audio = cache.window(rec, params, idx, h)
        budget = max(_budget(rec, cache, i) for i in idx)
        # pooled padding: each window's keys/values as the recognizer makes them; else it projects them
        rows = [rec.window_kv(audio[k:k + 1], cache.live[i]) for k, i in enumerate(idx)] if cache.pooled else None
        if beam_size == 1:
            cross = rows and [MaskedKV.stack([(kv.k, kv.v) for kv in layer], [kv.logw for kv in layer])
                              for layer in zip(*rows)]
            hyps = rec._decode(audio, 1, budget, cross=cross)
        else:
            hyps = [rec._decode(audio[k:k + 1], beam_size, _budget(rec, cache, i), cross=rows and rows[k])[0]
                    for k, i in enumerate(idx)]
        for k, (i, hyp) in enumerate(zip(idx, hyps)):
            if retry:
                out[i] = _silenced(rec, rec._guard(audio[k:k + 1], hyp,
                                                   budget if beam_size == 1 else _budget(rec, cache, i),
                                                   cross=rows and rows[k]))
            else:
                out[i] = _cut(rec, hyp)
    return out


@torch.no_grad()
def greedy_capped(rec: WhisperRecognizer, cache: CallerCache, params: dict[str, Tensor] | None,
                  subset: list[int], caps: dict[int, int] | None = None, served: bool = False) -> dict[int, Hypothesis]:
    """Greedy decoding of cached utterances as the recognizer's greedy pass, but each row stops at
    its own token cap (`caps`, else the recognizer's budget) and leaves the batch when it ends: a
    row that loops costs only itself. A loop is cut (`cut_repetition`), never retried. served: with
    the decoder the recognizer serves (its int8 copy where it quantizes the decoder: about half the
    time), else the model's float32 decoder (what `make_targets(greedy_caps=)` proves decodes of)."""
    dec, tok = (rec.infer if served else rec.model).decoder, rec.tokenizer
    out: dict[int, Hypothesis] = {}
    padding_kv = cache.padding_cross_kv(rec, dec, params)
    for idx, h in cache.parts(subset):
        limit = [min(_budget(rec, cache, i), (caps or {}).get(i, 10 ** 6)) for i in idx]
        audio, cross = cache.cross_kv(rec, dec, params, idx, h, padding_kv)
        cross = cross and [c.whole() for c in cross]
        hyps = greedy(dec, audio, tok.prompt, tok.eot, tok.no_speech, list(tok.suppress),
                      list(rec.model.cfg.suppress_ids_begin), rec.options, limit, cross=cross)
        for i, row in zip(idx, hyps):
            out[i] = _cut(rec, row)
    return out


def _budget(rec: WhisperRecognizer, cache: CallerCache, i: int) -> int:
    return rec.options.token_budget(cache.seconds[i] if cache.seconds else cache.frames[i] / 100.0)
