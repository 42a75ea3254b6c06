"""`python -m asr_core evaluate --backbone whisper-* --adapt ...`: Whisper caller adaptation per test
speaker (adapt on its `adapt` utterances, WER on its `test` utterances, before and after), with
`asr_core.whisper.adapt.adapt_whisper_caller` as the product adapts."""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable

import torch
from torch import Tensor

from asr_core.adaptation import AdaptationConfig
from asr_core.audio import load_audio
from asr_core.manifest import read_manifest, speakers_with_tests
from asr_core.metrics import word_errors
from asr_core.transcript import Transcript
from asr_core.whisper import cached
from asr_core.whisper.adapt import LABEL_FREE_MIN_CONFIDENCE, adapt_whisper_caller, forget_encoded
from asr_core.whisper.recognizer import WhisperRecognizer


def evaluate_whisper_adaptation(rec: WhisperRecognizer, manifest: str, mode: str, threads: int = 1,
                                max_speakers: int = 0, guard: bool = False, progress=sys.stderr,
                                first_pass: Callable[[Tensor], Transcript] | None = None, speakers: str = "",
                                methods: dict[str, dict] | None = None, jitter: int = 0,
                                jitter_scale: float | None = None) -> dict:
    """Per test speaker: adapt on its `adapt` utterances, WER on its `test` utterances, before/after.
    mode: 'supervised', 'label-free', 'all' or 'none' (only `methods`). Test utterances are recognized as the product does
    (full 30 s window with the recognizer's live margin, its beam size); their encoder output below the group is computed
    once and shared by every method (the profile only changes the group: the same numbers as
    `rec.transcribe(params=)`). methods: extra name -> adapt_whisper_caller keyword arguments
    (bench scripts: objectives, step sizes).
    jitter: each method's test WER also with `jitter` copies of its params (plain Whisper's where it
    has none) moved by float rounding's size (`JITTER_SCALE`, Gaussian, seeded per copy and speaker):
    how far the figure moves for reasons that are not the method (the served int8 recognizer turns
    changes of 1e-7 into different words). Reported as `jitter` {"wer": per copy, "mean", "min", "max"}."""
    torch.set_num_threads(threads)
    modes = ["supervised", "label-free"] if mode == "all" else [] if mode == "none" else [mode]
    todo = {m: {"mode": m} for m in modes}
    todo.update(methods or {})
    rows = read_manifest(manifest, ("adapt", "test"), speakers)
    speakers = speakers_with_tests(rows, manifest, max_speakers)
    if isinstance(jitter, bool) or not isinstance(jitter, int) or jitter < 0:
        raise ValueError(f"jitter must be a whole number of copies (0 or more), got {jitter!r}")
    scale = JITTER_SCALE if jitter_scale is None else float(jitter_scale)
    if not (math.isfinite(scale) and scale >= 0):
        raise ValueError(f"jitter_scale must be a finite size of 0 or more, got {jitter_scale!r}")
    res = {m: {"errors": 0, "words": 0, "seconds": 0.0, "cpu": 0.0, "speakers": {}, "jittered": [0] * jitter}
           for m in ["none", *todo]}
    for si, spk in enumerate(speakers):
        ad = [u for u in rows if u.speaker == spk and u.split == "adapt"]
        te = [u for u in rows if u.speaker == spk and u.split == "test"]
        ad_audio = [load_audio(u.audio, 8000) for u in ad]
        test_cache = cached.encode_frozen(rec, [load_audio(u.audio, 8000) for u in te], 8000, None, as_served=True)
        stored, scores, label_s = None, None, 0.0
        if ad_audio and any(kw["mode"] == "label-free" for kw in todo.values()):
            stored, scores, label_s = _stored_transcripts(rec, ad_audio)
        for name in res:
            t0 = time.perf_counter()
            params, info = None, {}
            if name != "none":
                params, info = _adapted(rec, todo[name], ad, ad_audio, guard=guard, first_pass=first_pass,
                                        stored=stored, scores=scores, label_s=label_s)
            sec = time.perf_counter() - t0 if name != "none" else 0.0
            e, n = _test_errors(rec, test_cache, te, params)
            r = res[name]
            r["errors"], r["words"], r["seconds"] = r["errors"] + e, r["words"] + n, r["seconds"] + sec
            r["cpu"] += info.get("guard", {}).get("cpu_seconds", 0.0)
            r["speakers"][spk] = {"wer": round(e / max(n, 1), 4), "words": n, **info}
            if jitter:
                base = params if params is not None else cached.group_params(rec)
                moved = [_test_errors(rec, test_cache, te, _jittered(base, scale, k, si))[0] for k in range(jitter)]
                r["jittered"] = [a + b for a, b in zip(r["jittered"], moved)]
                r["speakers"][spk]["wer_jitter"] = [round(x / max(n, 1), 4) for x in moved]
        print(f"whisper adapt-eval: {si + 1}/{len(speakers)} {spk}  " + "  ".join(
            f"{m} {res[m]['speakers'][spk]['wer']:.3f}" for m in res), file=progress, flush=True)
    return {m: {"wer": round(r["errors"] / max(r["words"], 1), 4),
                "seconds_per_speaker": round(r["seconds"] / max(len(speakers), 1), 3),
                "cpu_seconds_per_speaker": round(r["cpu"] / max(len(speakers), 1), 3),
                "speakers": r["speakers"], **_jitter_summary(r)} for m, r in res.items()}


# The size of the difference float rounding makes between two equivalent computations of one profile
# (a fit whose prompts are batched otherwise: 2.4e-7 at most, WHISPER.md "How far a WER moves").
JITTER_SCALE = 2.4e-7


def _test_errors(rec: WhisperRecognizer, test_cache: cached.CallerCache, te: list,
                 params: dict[str, Tensor] | None) -> tuple[int, int]:
    """Word errors and reference words of the test utterances recognized as served with `params`."""
    hyps = cached.decode_cached(rec, test_cache, params, beam_size=rec.options.beam_size)
    counts = [word_errors(u.text, rec.tokenizer.decode(hyps[i].tokens).strip()) for i, u in enumerate(te)]
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def _jittered(params: dict[str, Tensor], scale: float, copy: int, speaker: int) -> dict[str, Tensor]:
    """`params` moved by Gaussian noise of `scale`, the same for a (copy, speaker) in every method."""
    g = torch.Generator().manual_seed(1_000_003 * (copy + 1) + speaker)
    return {k: v + scale * torch.randn(v.shape, generator=g) for k, v in sorted(params.items())}


def _jitter_summary(r: dict) -> dict:
    if not r["jittered"]:
        return {}
    wers = [round(x / max(r["words"], 1), 4) for x in r["jittered"]]
    return {"jitter": {"wer": wers, "mean": round(sum(wers) / len(wers), 4), "min": min(wers), "max": max(wers)}}


def _stored_transcripts(rec: WhisperRecognizer, ad_audio: list[Tensor]) -> tuple[list[str], list[float | None], float]:
    """What the product stored for these utterances: the recognizer's transcripts (full window, its
    beam size), their search scores (`Transcript.avg_logprob`; None without text), and the seconds
    they took; label-free adaptation starts from them (their cost is the call's, not its)."""
    t0 = time.perf_counter()
    frozen = cached.encode_frozen(rec, ad_audio, 8000, None, as_served=True)
    hyps = cached.decode_cached(rec, frozen, None, beam_size=rec.options.beam_size)
    texts = [rec.tokenizer.decode(hyps[i].tokens).strip() for i in range(len(ad_audio))]
    scores = [hyps[i].avg_logprob if texts[i] else None for i in range(len(ad_audio))]
    return texts, scores, time.perf_counter() - t0


def _adapted(rec: WhisperRecognizer, method: dict, ad: list, ad_audio: list[Tensor], *, guard: bool,
             first_pass: Callable[[Tensor], Transcript] | None, stored: list[str] | None,
             scores: list[float | None] | None, label_s: float) -> tuple[dict[str, Tensor] | None, dict]:
    """One method (`mode` + adapt_whisper_caller keyword arguments) on one speaker's `adapt`
    utterances -> (the params, what the row reports); (None, {}) without such utterances."""
    kw = dict(method)
    m = kw.pop("mode")
    cfg = AdaptationConfig(m, guard=kw.pop("guard", guard), min_confidence=LABEL_FREE_MIN_CONFIDENCE,
                           steps=kw.pop("steps", None))
    if not ad_audio:
        return None, {}
    if m == "label-free":
        if "hypotheses" not in kw:       # the product's stored transcripts, and their scores
            kw.update(hypotheses=stored, hypothesis_scores=scores)
        kw.setdefault("first_pass", first_pass)
    forget_encoded()        # each method's seconds include encoding the caller's audio, as a first adaptation's do
    r = adapt_whisper_caller(rec, ad_audio, [u.text for u in ad] if m == "supervised" else None, 8000, cfg=cfg, **kw)
    info = {"accepted": r.accepted, "guard": r.metrics}
    if m == "label-free":
        info["pseudo_label_seconds"] = round(label_s, 3)
    return r.params, info
