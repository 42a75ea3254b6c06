"""`WhisperRecognizer`: the accurate final pass. Load once, transcribe segments, optionally per caller.

    rec = WhisperRecognizer.load("var/models/whisper-tiny.pt", quantize=True)
    rec.transcribe(audio, sample_rate=8000)                   # -> Transcript(text, words)
    rec.transcribe(audio, sample_rate=8000, params=profile)   # a caller's adapted LoRA group
    rec.transcribe_batch([a1, a2], sample_rate=8000)          # concurrent segments, one encoder batch

Returns the same `Transcript`/`Word` types as the small model's `Recognizer`. Segments longer than
30 s are cut into 30 s windows. A caller's params (dict name -> tensor over
`adaptive_names()`) are applied with `torch.func.functional_call`; the model is never modified.
`quantize=True` (or "all") runs the linear layers in int8 (dynamic quantization) for inference,
`quantize="decoder"` only the decoder's (the encoder stays float32); adaptation
always differentiates through the float model (`rec.model`).

The 30 s window: Whisper was trained on windows zero-padded to 30 s, and a segment of a call is a
few seconds. `live_margin_s` (the product's default, `defaults.WHISPER_LIVE_MARGIN_S`) computes the
encoder on the segment plus that much of the padding only; the rest of the window is an encoding of
pure padding made once per model and profile (`padding_context`). The decoder still sees the whole
window, as in training. `trim_seconds` instead cuts the window after the segment plus that much
padding (what the decoder sees is then shorter than in training).
"""
from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor, nn

from asr_core.audio import AudioError, load_audio, resample
from asr_core.defaults import INT8_MODES, PARTIAL_ENCODERS, TAIL_POOLS
from asr_core.errors import CheckpointError
from asr_core.transcript import Transcript, Word
from asr_core.whisper import convert
from asr_core.whisper.decoding import (DecodeOptions, Hypothesis, beam_search, compression_ratio, cut_repetition,
                                       greedy, token_timings)
from asr_core.whisper.features import log_mel, pad_or_trim
from asr_core.whisper.model import (HOP_LENGTH, N_FRAMES, SAMPLE_RATE, MaskedKV, PaddingContext, PooledKV, Whisper,
                                    block_weights, pool_tail, pooled_from)
from asr_core.whisper.tokenizer import WhisperTokenizer

BACKBONES = {"whisper-tiny": os.path.join(convert.DEFAULT_MODEL_DIR, "whisper-tiny.pt"),
             "whisper-base": os.path.join(convert.DEFAULT_MODEL_DIR, "whisper-base.pt")}
MAX_SAMPLES = N_FRAMES * HOP_LENGTH     # 30 s at 16 kHz
# A window whose every sample is within this of zero (-63 dBFS) is digital silence: a muted or idle
# line (zeros, 16-bit dither, G.711 mu-law's idle steps of +-8 levels, which peak at about 15 once
# resampled to 16 kHz). Whisper transcribes such a window as "you" (each 30 s of a long silent
# file), so it gets no text and costs no model pass. Speech, even faint, peaks far above it.
SILENCE_PEAK = 24 / 32768


def is_digital_silence(x: Tensor) -> bool:
    """Whether every sample of `x` (float audio in [-1, 1]) is within `SILENCE_PEAK` of zero."""
    return bool(x.numel()) and float(x.abs().max()) <= SILENCE_PEAK


class WhisperRecognizer:
    def __init__(self, model: Whisper, tokenizer: WhisperTokenizer, meta: dict | None = None,
                 quantize: bool | str = False, options: DecodeOptions = DecodeOptions(),
                 trim_seconds: float | None = None, live_margin_s: float | None = None, tail_pool: int = 1,
                 encoder_bf16: bool = False):
        """trim_seconds: None keeps the 30 s window (as Whisper was trained); a number cuts it after
        the segment plus that much padding (faster, approximate). live_margin_s (with the 30 s
        window): None computes the whole window; a number computes the segment plus that much
        padding, and the rest of the window comes from the padding's own encoding (faster, close).
        tail_pool (with the live margin): that padding pooled in blocks of this many positions
        (`window_kv`; 1: each position its own). encoder_bf16: the served encoder (float, so not
        with int8 "all") runs under bfloat16 autocast, its output float32 again (fast where the CPU
        has AMX tiles: `amx_tiles`); a model given to `encode` explicitly (adaptation) stays float32."""
        for name, value in (("trim_seconds", trim_seconds), ("live_margin_s", live_margin_s)):
            if value is not None and not 0.0 <= value <= 30.0:
                raise ValueError(f"{name} must be in [0, 30] or None, got {value}")
        check_tail_pool(tail_pool)
        self.model = model.eval()
        self.tokenizer, self.meta, self.options, self.trim_seconds = tokenizer, meta or {}, options, trim_seconds
        self.live_margin_s = live_margin_s
        self.tail_pool = tail_pool
        self.int8 = int8_mode(quantize)
        if encoder_bf16 and self.int8 == "all":
            raise ValueError("encoder_bf16 needs a float encoder: int8 'off' or 'decoder', not 'all'")
        self.encoder_bf16 = bool(encoder_bf16)
        # the served encoder's linear weights in bfloat16, once (autocast would cast them at each call)
        self._bf16_encoder = bf16_linears(self.model.encoder) if self.encoder_bf16 else None
        self.infer = quantize_linear(self.model, self.int8) if self.int8 != "off" else self.model
        self._padding: OrderedDict[tuple, PaddingContext] = OrderedDict()
        self._padding_lock = threading.Lock()     # a worker warms it up in a thread beside its first task

    @classmethod
    def load(cls, path: str | None = None, quantize: bool | str = False, beam_size: int = 1,
             lora_rank: int | None = None, lora_layers: int | None = None, options: DecodeOptions | None = None,
             trim_seconds: float | None = None, adaptation: str | None = None,
             live_margin_s: float | None = None, tail_pool: int = 1,
             encoder_bf16: bool = False) -> "WhisperRecognizer":
        """path: a converted checkpoint or a backbone name ('whisper-tiny', 'whisper-base');
        adaptation: a meta-learned adaptation file for these weights (`convert.read_adaptation`)."""
        path = BACKBONES.get(path or "whisper-tiny", path)
        model, tok_json, meta = convert.load(path, lora_rank, lora_layers, adaptation=adaptation)
        try:
            tokenizer = WhisperTokenizer(tok_json, model.cfg.multilingual)
        except ImportError:
            raise
        except Exception as e:  # noqa: BLE001 - the tokenizers package raises plain Exception for bad JSON
            raise CheckpointError(f"{meta['path']}: malformed Whisper checkpoint: its tokenizer cannot be read "
                                  f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        return cls(model, tokenizer, meta, quantize,
                   options or DecodeOptions(beam_size=beam_size), trim_seconds, live_margin_s, tail_pool,
                   encoder_bf16)

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    def stream(self, sample_rate: int = 8000, params: dict[str, Tensor] | None = None) -> "WhisperStream":
        """Partial hypotheses of one segment while it grows (`WhisperStream.accept`)."""
        return WhisperStream(self, sample_rate, params)

    def accept_batch(self, streams: list["WhisperStream"], chunks: list[Tensor]) -> list[Transcript]:
        """Advance several partial streams of this recognizer by one chunk each (`WhisperStream.accept`
        of each), decoding them together: each segment encoded in its own window, then one greedy
        batch per caller profile among them. A stream's partial can differ from its own `accept`
        only where int8 scales activations over the batch."""
        if len(streams) != len(chunks):
            raise ValueError(f"{len(streams)} streams but {len(chunks)} chunks")
        out = [Transcript("") for _ in streams]
        groups: dict[str | None, list[int]] = {}
        for i, (stream, chunk) in enumerate(zip(streams, chunks)):
            if stream.rec is not self:
                raise ValueError("a stream of another recognizer")
            if stream._append(chunk):
                groups.setdefault(_fingerprint(stream.params), []).append(i)
            else:
                out[i] = Transcript(" ".join(stream.committed))
        for rows in groups.values():
            decoded = _partial_texts(self, [streams[i].audio[-MAX_SAMPLES:] for i in rows], streams[rows[0]].params,
                                     [streams[i].forced for i in rows], [streams[i].draft for i in rows])
            for i, (text, tokens) in zip(rows, decoded):
                out[i] = streams[i]._agree(text, tokens)
        return out

    def adaptive_names(self) -> list[str]:
        return self.model.adaptive_parameter_names()

    # -- features and encoder -------------------------------------------------------------------
    def prepare(self, audio: Tensor | str | bytes, sample_rate: int | None) -> Tensor:
        """Audio -> (samples,) float32 at 16 kHz, clipped to [-1, 1]."""
        if isinstance(audio, (str, bytes)):
            return load_audio(audio, SAMPLE_RATE)
        if not isinstance(audio, Tensor):
            raise AudioError(f"expected a tensor, path or bytes, got {type(audio).__name__}")
        if sample_rate is None:
            raise AudioError("sample_rate is required with a tensor")
        x = audio.float()
        if x.dim() == 2:
            x = x.mean(0)
        if x.dim() != 1:
            raise AudioError(f"expected (samples,) or (channels, samples) audio, got shape {tuple(audio.shape)}")
        if sample_rate <= 0:
            raise AudioError(f"sample_rate must be positive, got {sample_rate}")
        x = torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0).clamp(-1.0, 1.0)
        return resample(x, int(sample_rate), SAMPLE_RATE) if x.numel() else x

    def features(self, audio16k: Tensor) -> tuple[Tensor, int]:
        """(samples,) at 16 kHz, at most 30 s -> mel (n_mels, 3000), content frames."""
        mel = log_mel(audio16k, SAMPLE_RATE, self.model.cfg.n_mels)
        return pad_or_trim(mel), min(mel.shape[-1], N_FRAMES)

    def encode(self, mels: Tensor, params: dict[str, Tensor] | None = None, model: nn.Module | None = None,
               padding: PaddingContext | None = None, record: list | None = None, pool: int = 1) -> Tensor:
        """mels (batch, n_mels, 3000) -> (batch, 1500, d), with a caller's params if given (padding,
        record, pool: as `AudioEncoder.forward`)."""
        encoder, bf16 = self._encoder(model)
        kwargs = {"padding": padding, "record": record, "pool": pool}
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if params:
                enc = {k.removeprefix("encoder."): v for k, v in params.items()}
                out = torch.func.functional_call(encoder, enc, (mels,), kwargs, strict=False)
            else:
                out = encoder(mels, **kwargs)
        if bf16 and record is not None:      # a padding context is kept in float32, as the float encoder's
            record[:] = [tuple(t.float() for t in r) if isinstance(r, tuple) else r.float() for r in record]
        return out.float()

    def _encoder(self, model: nn.Module | None) -> tuple[nn.Module, bool]:
        """The encoder `encode` runs for `model` (None: the served one), and whether in bfloat16."""
        if model is None and self._bf16_encoder is not None:
            return self._bf16_encoder, True
        return (model or self.infer).encoder, False

    @property
    def uses_live_margin(self) -> bool:
        """Whether segments are encoded with the live margin (the 30 s window, not trimmed)."""
        return self.trim_seconds is None and self.live_margin_s is not None

    def live_positions(self, frames: int) -> int:
        """Encoder positions computed for a segment of `frames` mel frames: its own plus the live
        margin's, at most the window's."""
        return min(N_FRAMES // 2, (frames + 1) // 2 + round(self.live_margin_s * SAMPLE_RATE / HOP_LENGTH / 2))

    PADDING_CONTEXTS = 4      # kept per recognizer (one per model and profile in use), least recent dropped

    def padding_context(self, params: dict[str, Tensor] | None = None,
                        model: nn.Module | None = None) -> PaddingContext:
        """The encoding of a window of padding only (with a caller's params, if given); made once,
        then reused. The final layer norm applies after it, so params of that layer alone (the
        product's caller profiles) share the context of no params."""
        inner = {k: v for k, v in (params or {}).items() if not k.startswith("encoder.ln_post.")}
        key = (id(self._encoder(model)[0]), _fingerprint(inner))      # an int8 decoder shares the float encoder
        with self._padding_lock:
            ctx = self._padding.get(key)
            if ctx is not None:
                self._padding.move_to_end(key)
                return ctx
        record: list = []
        self.encode(torch.zeros(1, self.model.cfg.n_mels, N_FRAMES), inner, model, record=record)
        ctx = PaddingContext(record[:-1], record[-1])
        with self._padding_lock:
            self._padding[key] = ctx
            self._padding.move_to_end(key)
            while len(self._padding) > self.PADDING_CONTEXTS:
                self._padding.popitem(last=False)
        return ctx

    def encode_segment(self, mel: Tensor, frames: int, params: dict[str, Tensor] | None = None,
                       trim_seconds: float | None = None, width_step: int = 2) -> tuple[Tensor, list]:
        """One segment's mel (n_mels, 3000) with `frames` of content -> the encoder output (1, S, d)
        under this recognizer's window settings (`trim_seconds` overrides its own; a trimmed
        window's width rounded up to a multiple of `width_step` frames) and the decoder's
        cross-attention keys/values of it (projected once for the search, its retry and the word
        timings)."""
        if trim_seconds is None and self.uses_live_margin:
            live = self.live_positions(frames)
            audio = self.encode(mel[None, :, :2 * live], params, padding=self.padding_context(params),
                                pool=self.tail_pool)
            with torch.no_grad():
                return audio, self.window_kv(audio, live)
        else:
            audio = self.encode(mel[None, :, :self._width(frames, trim_seconds, width_step)], params)
        with torch.no_grad():
            return audio, self.infer.decoder.cross_kv(audio)

    def window_kv(self, audio: Tensor, live: int, decoder: nn.Module | None = None) -> list:
        """One segment's 30 s window as the decoder sees it: audio (1, 1500, d), its first `live`
        positions the segment's own (and the margin's), the rest the padding's encoding -> each
        decoder block's cross-attention keys/values (`decoder`: the served one by default). With
        `tail_pool` > 1 the padding is pooled in blocks of that many positions from the first
        whole block after the segment (`PooledKV`): the positions before it are projected with the
        segment's, the blocks are the whole window's, pooled and projected together. Differentiable
        (with gradients where the caller asks for them)."""
        dec = decoder or self.infer.decoder
        m = self.tail_pool
        if m <= 1:
            return dec.cross_kv(audio)
        b = pooled_from(live, m)
        own = dec.cross_kv(audio[:, :b])
        blocks = dec.cross_kv(pool_tail(audio, 0, m)[0])
        logw = block_weights(b, blocks[0][0].shape[2] - b // m, m, audio)
        return [PooledKV(torch.cat([ok, bk[:, :, b // m:]], 2), torch.cat([ov, bv[:, :, b // m:]], 2), logw)
                for (ok, ov), (bk, bv) in zip(own, blocks)]

    # -- transcription ----------------------------------------------------------------------------
    def transcribe(self, audio: Tensor | str | bytes, sample_rate: int | None = None,
                   params: dict[str, Tensor] | None = None, beam_size: int | None = None,
                   word_timestamps: bool = True, offset: float = 0.0, prompt: str | None = None) -> Transcript:
        """One segment -> Transcript. Empty, too-short or digitally silent audio (`SILENCE_PEAK`; of
        longer audio, each such 30 s window) -> empty text. prompt: words and
        names to favour (a line's vocabulary), given to the decoder as previous text."""
        x = self.prepare(audio, sample_rate)
        texts, words = [], []
        for start in range(0, max(x.numel(), 1), MAX_SAMPLES):
            piece = x[start:start + MAX_SAMPLES]
            if piece.numel() < 2 * HOP_LENGTH or is_digital_silence(piece):
                continue
            t = self._transcribe_window(piece, params, beam_size, word_timestamps, offset + start / SAMPLE_RATE,
                                        prompt)
            if x.numel() <= MAX_SAMPLES:       # one window: its search's score is the transcript's
                return t
            if t.text:
                texts.append(t.text)
                words.extend(t.words)
        return Transcript(" ".join(texts), words)

    def transcribe_batch(self, audios: list[Tensor], sample_rate: int, params: dict[str, Tensor] | None = None,
                         word_timestamps: bool = True, prompt: str | None = None) -> list[Transcript]:
        """Concurrent segments (each <= 30 s) of one caller (or of callers without a profile): one
        batched encoder pass (full window, float32 encoder) and batched decoding (float32 decoder:
        every segment's beams in one decoder batch), with this recognizer's settings. Exactly the
        transcripts of `transcribe` one by one: what int8 or a trimmed window would let a batch
        change runs segment by segment."""
        xs = [self.prepare(a, sample_rate) for a in audios]
        if any(x.numel() > MAX_SAMPLES for x in xs):
            raise AudioError("transcribe_batch takes segments of at most 30 s; use transcribe() for longer audio")
        ok = [i for i, x in enumerate(xs) if x.numel() >= 2 * HOP_LENGTH and not is_digital_silence(x)]
        out = [Transcript("") for _ in xs]
        if not ok:
            return out
        feats = [self.features(xs[i]) for i in ok]
        budgets = [self.options.token_budget(xs[i].numel() / SAMPLE_RATE) for i in ok]
        # Batched only where a segment's text cannot depend on its batch-mates: a trimmed window and
        # the computed part of a live margin are each segment's own width, and dynamic int8 scales
        # activations over the whole batch.
        whole = self.trim_seconds is None and not self.uses_live_margin
        if whole and self.int8 == "off":
            encoded = self.encode(torch.stack([m for m, _ in feats]), params)
            hyps = self._decode(encoded, self.options.beam_size, budgets, prompt)
            rows = [(encoded[j:j + 1], None) for j in range(len(ok))]
        else:
            if whole and self.int8 == "decoder":   # the float encoder: one batch
                encoded = self.encode(torch.stack([m for m, _ in feats]), params)
                rows = [(encoded[j:j + 1], self.infer.decoder.cross_kv(encoded[j:j + 1])) for j in range(len(ok))]
            else:
                rows = [self.encode_segment(m, f, params) for m, f in feats]
            hyps = [self._decode(r, self.options.beam_size, b, prompt, cross)[0]
                    for (r, cross), b in zip(rows, budgets)]
        for j, i in enumerate(ok):
            audio, cross = rows[j]
            hyp = self._guard(audio, hyps[j], budgets[j], prompt, cross)
            hyp = self._prompt_checked(audio, hyp, self.options.beam_size, budgets[j], prompt, cross)
            out[i] = self._result(audio, hyp, feats[j][1], word_timestamps, 0.0, cross, scored=prompt is None)
        return out

    def _width(self, frames: int, trim_seconds: float | None = None, step: int = 2) -> int:
        """Mel frames the encoder sees: 3000, or (trimmed: this recognizer's `trim_seconds`, or the
        one given) the content plus padding, rounded up to a multiple of `step` (even)."""
        trim = self.trim_seconds if trim_seconds is None else trim_seconds
        if trim is None:
            return N_FRAMES
        if step < 2 or step % 2:
            raise ValueError(f"the width step must be an even number of frames, got {step}")
        return min(N_FRAMES, step * ((frames + int(trim * 100) + step - 1) // step))

    def _transcribe_window(self, x: Tensor, params, beam_size: int | None, word_timestamps: bool,
                           offset: float, prompt: str | None = None) -> Transcript:
        mel, frames = self.features(x)
        audio, cross = self.encode_segment(mel, frames, params)
        budget = self.options.token_budget(x.numel() / SAMPLE_RATE)
        hyp = self._decode(audio, beam_size or self.options.beam_size, budget, prompt, cross)[0]
        hyp = self._guard(audio, hyp, budget, prompt, cross)
        hyp = self._prompt_checked(audio, hyp, beam_size or self.options.beam_size, budget, prompt, cross)
        return self._result(audio, hyp, frames, word_timestamps, offset, cross,
                            scored=prompt is None and (beam_size or self.options.beam_size) == self.options.beam_size)

    def _decode(self, audio: Tensor, beam_size: int, budget: int | list[int],
                prompt: str | None = None, cross: list | None = None,
                forced: list[list[int]] | None = None, drafts: list[list[int]] | None = None) -> list[Hypothesis]:
        """forced, drafts (greedy only): each row's first text tokens, and the tokens it is expected
        to choose next (`decoding.greedy`)."""
        tok, dec = self.tokenizer, self.infer.decoder
        # With a prompt: <|startofprev|> + its last tokens (half the text context, as openai/whisper) + SOT.
        start = tok.prompt_with_previous(prompt, self.model.cfg.n_text_ctx // 2 - 1) if prompt else tok.prompt
        sot_index = len(start) - len(tok.prompt)
        args = (start, tok.eot, tok.no_speech, list(tok.suppress), list(self.model.cfg.suppress_ids_begin))
        if beam_size == 1:
            return greedy(dec, audio, *args, self.options, budget, sot_index=sot_index, cross=cross, forced=forced,
                          drafts=drafts)
        if (forced and any(forced)) or (drafts and any(drafts)):
            raise ValueError("forced and draft text tokens are for greedy decoding only")
        return beam_search(dec, audio, *args, replace(self.options, beam_size=beam_size), budget, sot_index=sot_index,
                           cross=cross)

    def _guard(self, audio: Tensor, hyp: Hypothesis, budget: int, prompt: str | None = None,
               cross: list | None = None) -> Hypothesis:
        """A repetition loop (text compresses too well, or the token budget ran out): retry with beam
        search; if that loops too, cut the loop."""
        limit = self.options.compression_ratio_threshold
        if limit is None:
            return hyp
        looping = lambda h: compression_ratio(self.tokenizer.decode(h.tokens)) > limit or len(h.tokens) >= budget  # noqa: E731
        if not looping(hyp):
            return hyp
        retry = self._decode(audio, max(5, self.options.beam_size), budget, prompt, cross)[0]
        best = retry if not looping(retry) else hyp
        return Hypothesis(cut_repetition(best.tokens), best.sum_logprob, best.no_speech_prob)

    def _prompt_checked(self, audio: Tensor, hyp: Hypothesis, beam_size: int, budget: int, prompt: str | None,
                        cross: list | None) -> Hypothesis:
        """A prompt (a line's or a stream's vocabulary, given by the client) can mislead the decoder
        into copying it: "ßßß" for a clear sentence, with a mean token log-prob far below what a
        real transcript gets. Where a prompted decode scores under `log_prob_threshold` (openai/
        whisper's own test of a failed decode), the segment is decoded again without the prompt and
        the better scored of the two is kept (as openai/whisper drops the previous text when its
        fallbacks fail). Costs a decode only then."""
        limit = self.options.log_prob_threshold
        if not prompt or limit is None or not hyp.tokens or hyp.avg_logprob >= limit:
            return hyp
        plain = self._guard(audio, self._decode(audio, beam_size, budget, None, cross)[0], budget, None, cross)
        return plain if plain.avg_logprob > hyp.avg_logprob else hyp

    def _result(self, audio: Tensor, hyp: Hypothesis, frames: int, word_timestamps: bool, offset: float,
                cross: list | None = None, scored: bool = False) -> Transcript:
        """scored: the transcript keeps its search's score (`Transcript.avg_logprob`): a decode with
        this recognizer's own settings and no prompt, which the adaptation guard's searches repeat."""
        if hyp.is_silence(self.options) or not hyp.tokens:
            return Transcript("")
        text = self.tokenizer.decode(hyp.tokens).strip()
        if not text:
            return Transcript("")
        score = hyp.avg_logprob if scored else None
        if not word_timestamps:
            return Transcript(text, avg_logprob=score)
        return Transcript(text, self._words(audio, hyp.tokens, frames, offset, cross), avg_logprob=score)

    @property
    def scoring_key(self) -> str:
        """What a transcript's `avg_logprob` depends on besides its audio and the caller's params:
        these weights and this recognizer's decoding settings. A stored score stands for a new
        search's only under the same key (on the real development prompts the served search and
        the adaptation's search of its cached window give the same tokens and score, to the bit). The
        torch build, the CPU's kernels and the threads are part of it: elsewhere the sums round otherwise."""
        parts = (self.meta.get("sha256"), self.int8, self.options, self.trim_seconds, self.live_margin_s,
                 self.tail_pool, self.encoder_bf16, torch.__version__, torch.backends.cpu.get_cpu_capability(),
                 torch.get_num_threads())
        return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]

    def _words(self, audio: Tensor, tokens: list[int], frames: int, offset: float,
               cross: list | None = None) -> list[Word]:
        tok = self.tokenizer
        starts, probs = token_timings(self.infer.decoder, audio, tok.prompt, tokens, tok.eot,
                                      self.model.cfg.alignment_heads, frames // 2, cross)
        words, bounds = [], [0]
        for i, t in enumerate(tokens):     # a word starts at a token that begins with a space
            piece = tok.token_bytes(t)
            if i and (piece.startswith(" ") or not piece.strip()):
                bounds.append(i)
        bounds.append(len(tokens))
        for a, b in zip(bounds[:-1], bounds[1:]):
            w = tok.decode(tokens[a:b]).strip()
            if w:
                words.append(Word(w, offset + float(starts[a]), offset + float(starts[b]),
                                  float(probs[a:b].mean())))
        return words


def _fingerprint(params: dict[str, Tensor] | None) -> str | None:
    """What identifies a caller's params by value (None without params)."""
    if not params:
        return None
    h = hashlib.sha1()
    for name in sorted(params):
        t = params[name].detach().cpu().contiguous()
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_tail_pool(block: object) -> int:
    """A valid `tail_pool`: a whole number of encoder positions that divides the window's 1500."""
    if isinstance(block, bool) or not isinstance(block, int) or block not in TAIL_POOLS:
        raise ValueError(f"tail_pool must be a divisor of {N_FRAMES // 2} from 1 to 50 "
                         f"({', '.join(map(str, TAIL_POOLS))}), got {block!r}")
    return block


def bf16_linears(module: nn.Module, share: Callable[[str], bool] = lambda name: False) -> nn.Module:
    """A copy of `module` whose nn.Linear weights are bfloat16 (biases and norms stay float32):
    under bfloat16 autocast it computes what `module` does, without casting the weights each call.
    Parameters whose names `share` picks are the module's own, not copied (nor cast, where a Linear
    uses one: a tied output projection)."""
    import copy
    memo = {id(p): p for n, p in module.named_parameters() if share(n)}
    out = copy.deepcopy(module, memo)
    for m in out.modules():
        if type(m) is nn.Linear and id(m.weight) not in memo:
            m.weight = nn.Parameter(m.weight.detach().to(torch.bfloat16), requires_grad=False)
    return out


def amx_tiles() -> bool:
    """Whether this CPU has AMX tiles (bfloat16 and int8 matrix units: Intel Xeon 4th generation and
    later), where a bfloat16 encoder is about as fast as an int8 one."""
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


def partial_encoder(choice: str) -> str:
    """PARTIAL_ENCODERS' choice -> the partials' encoder precision: "auto" is "bfloat16" with AMX
    tiles, else "int8"."""
    if choice not in PARTIAL_ENCODERS:
        raise ValueError(f"the partials' encoder must be one of {', '.join(PARTIAL_ENCODERS)}, got {choice!r}")
    if choice == "auto":
        return "bfloat16" if amx_tiles() else "int8"
    return choice


def partial_load_args(choice: str) -> dict:
    """PARTIAL_ENCODERS' choice -> `WhisperRecognizer.load`'s quantize and encoder_bf16 for the
    partials: the decoder int8, the encoder as chosen (`partial_encoder`)."""
    encoder = partial_encoder(choice)
    return {"quantize": "all" if encoder == "int8" else "decoder", "encoder_bf16": encoder == "bfloat16"}


def int8_mode(quantize: bool | str | None) -> str:
    """`quantize` as one of INT8_MODES: True is "all", False or None "off"."""
    if quantize is None or isinstance(quantize, bool):
        return "all" if quantize else "off"
    if quantize not in INT8_MODES:
        raise ValueError(f"int8 must be one of {', '.join(INT8_MODES)} (or a boolean), got {quantize!r}")
    return quantize


def quantize_linear(model: Whisper, part: str = "all") -> Whisper:
    """A copy with the nn.Linear layers of `part` ("all", or "decoder": the encoder stays float32 and
    is shared with `model`) in int8 (dynamic quantization: int8 weights, activations quantized per
    batch at run time). LoRA parameters stay float and still apply through functional_call."""
    import copy

    from torch.ao.quantization import quantize_dynamic
    if part == "all":
        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8).eval()
    if part != "decoder":
        raise ValueError(f"part must be 'all' or 'decoder', got {part!r}")
    out = copy.copy(model)                    # shares the float encoder (no second copy in memory)
    out._modules = dict(model._modules)
    out.decoder = quantize_dynamic(model.decoder, {nn.Linear}, dtype=torch.qint8)   # a quantized copy
    return out.eval()


class WhisperStream:
    """Partials of one growing segment: each `accept` re-decodes all the audio so far (greedy, the
    window cut `PARTIAL_TRIM_S` after the segment, no word timings) and stabilizes the words by
    local agreement (as whisper_streaming's LocalAgreement-2): the longest prefix two consecutive
    decodes agree on is committed and never taken back; the latest decode's words after it follow.
    The committed words' tokens are given to the next decode as its start (`FORCE_COMMITTED`), and
    the latest decode's tokens after them as its draft (kept as far as greedy decoding chooses them
    again: `decoding.greedy`), all fed in one decoder pass, so a partial takes a decoder step only
    for the tokens that changed or are new.
    Same interface as the small model's `RecognizerStream.accept`. Several streams advance together
    with `WhisperRecognizer.accept_batch` (one decoding batch)."""

    # Padding after the segment: with 1 s, the end of the window made Whisper say a prompt twice
    # (last-partial WER 8.3 % on 30 real prompts; 2 s: 4.7 %; bench/partials_real_speech.py).
    PARTIAL_TRIM_S = 2.0
    # The window (segment + PARTIAL_TRIM_S) rounded up to whole half seconds: a live call's audio
    # grows 20 ms at a time, and the CPU's matrix kernels keep memory for each width they see
    # (bfloat16 on AMX: 366 MB for 100 widths, int8 82 MB; docs/recognizer.md); with this the
    # partials use at most 60 widths.
    PARTIAL_WIDTH_STEP = 50   # mel frames (10 ms each)
    PARTIAL_MIN_DOUBLED = 4   # tokens: a doubled phrase this long is cut to one copy
    PARTIAL_RETRY = True      # a looping partial is decoded again with beam search (else only cut)
    FORCE_COMMITTED = True    # the next decode starts with the committed words' tokens, then verifies the
                              # latest's after them in the same pass (else decodes every token again)

    def __init__(self, rec: WhisperRecognizer, sample_rate: int, params: dict[str, Tensor] | None):
        if sample_rate <= 0:
            raise AudioError(f"sample_rate must be positive, got {sample_rate}")
        self.rec, self.sample_rate, self.params = rec, sample_rate, params
        self.audio = torch.zeros(0)          # the segment so far, 16 kHz
        self.committed: list[str] = []
        self.previous: list[str] = []
        self.forced: list[int] = []          # tokens of committed words the next decode starts with
        self.draft: list[int] = []           # the latest decode's tokens after them (the next one's draft)

    def accept(self, chunk: Tensor) -> Transcript:
        """Feed (samples,) float audio at the stream's rate; returns the current partial hypothesis."""
        return self.rec.accept_batch([self], [chunk])[0]

    def _append(self, chunk: Tensor) -> bool:
        """Add a chunk; whether there is enough audio to decode."""
        self.audio = torch.cat([self.audio, self.rec.prepare(chunk, self.sample_rate)])
        return self.audio.numel() >= 2 * HOP_LENGTH

    def _agree(self, text: str, tokens: list[int] | None = None) -> Transcript:
        """The latest decode's text (and its tokens) -> the partial: the committed words, then the
        latest's after them."""
        latest = text.split()
        agreed = 0
        while agreed < min(len(latest), len(self.previous)) and _same_word(latest[agreed], self.previous[agreed]):
            agreed += 1
        if agreed > len(self.committed):  # committed words stay as they were shown
            self.committed = self.committed + latest[len(self.committed):agreed]
            if self.FORCE_COMMITTED and tokens:
                self.forced = _word_tokens(self.rec.tokenizer, tokens, self.committed) or self.forced
        if self.FORCE_COMMITTED:
            tokens = tokens or []
            self.draft = tokens[len(self.forced):] if tokens[:len(self.forced)] == self.forced else []
        self.previous = latest
        return Transcript(" ".join(self.committed + latest[len(self.committed):]))


def _partial_texts(rec: WhisperRecognizer, audios: list[Tensor], params: dict[str, Tensor] | None,
                   forced: list[list[int]] | None = None,
                   drafts: list[list[int]] | None = None) -> list[tuple[str, list[int]]]:
    """The partial decode (text, tokens) of each growing segment (16 kHz, at most 30 s), all with one
    caller's params (or none), each starting with its `forced` tokens (and verifying its draft:
    `decoding.greedy`). Each segment is encoded in
    its own window (Whisper is sensitive to where the window ends: a window made longer for a batch
    doubled last-partial WER); the greedy decoding runs them as one batch, each row attending to
    its own window (`MaskedKV`)."""
    feats = [rec.features(a) for a in audios]
    rows, crosses = [], []          # each segment's encoder output and its keys/values per decoder block
    for mel, frames in feats:
        enc, cross = rec.encode_segment(mel, frames, params, trim_seconds=WhisperStream.PARTIAL_TRIM_S,
                                        width_step=WhisperStream.PARTIAL_WIDTH_STEP)
        rows.append(enc)
        crosses.append(cross)
    cross = [MaskedKV.stack([c[layer] for c in crosses]) for layer in range(len(crosses[0]))]
    budgets = [rec.options.token_budget(a.numel() / SAMPLE_RATE) for a in audios]
    # the decoder takes the audio's rows and width from this; the keys and values are `cross`
    hyps = rec._decode(rows[0].new_zeros(len(rows), 1, rows[0].shape[2]), 1, budgets, cross=cross, forced=forced,
                       drafts=drafts)
    texts = []
    for j, hyp in enumerate(hyps):
        if WhisperStream.PARTIAL_RETRY:
            hyp = rec._guard(rows[j], hyp, budgets[j], cross=[kv.row(j) for kv in cross])
        # On a window trimmed to the segment, greedy decoding may say a phrase twice ("is now in the
        # conference is now in the conference."); a partial keeps one copy of a doubled phrase of
        # PARTIAL_MIN_DOUBLED tokens or more (the final pass decodes the segment on its own).
        hyp = Hypothesis(cut_repetition(hyp.tokens, min_repeats=2, min_unit=WhisperStream.PARTIAL_MIN_DOUBLED),
                         hyp.sum_logprob, hyp.no_speech_prob)
        texts.append((rec._result(rows[j], hyp, feats[j][1], False, 0.0).text, hyp.tokens))
    return texts


def _word_tokens(tok: WhisperTokenizer, tokens: list[int], words: list[str]) -> list[int]:
    """The first tokens of `tokens` that spell `words` (up to case and punctuation, as agreement
    compares them: `_same_word`) and end where the next word begins (so a decode forced to them can
    go on with a new word); [] when they do not. The tokens keep the decode's own spelling (the
    committed words stay as first shown: "I'm sorry That" is forced as "I'm sorry, that")."""
    n = len(words)
    starts = [i for i, t in enumerate(tokens) if i == 0 or tok.token_bytes(t).startswith(" ")]
    end = starts[n] if n < len(starts) else len(tokens)
    prefix = tokens[:end]
    spelled = tok.decode(prefix).split()
    return prefix if n and len(spelled) == n and all(map(_same_word, spelled, words)) else []


def _same_word(a: str, b: str) -> bool:
    """Words agree up to case and punctuation ("company." and "Company" are one word)."""
    norm = lambda w: "".join(c for c in w.lower() if c.isalnum() or c == "'")  # noqa: E731
    return norm(a) == norm(b)
