"""Per-caller adaptation of the default recognizer (Whisper tiny) on real speech through a hard phone
line: the real-speech development prompts, the shipped weights, no stand-ins.

The regression tests are the failures of issue 18: pseudo-labels from a wrong first pass, and a
guard that rewarded the model for copying the transcripts it was fitted to.
"""
import pytest
import torch
import torch.nn.functional as F

from asr_core.adaptation import AdaptationConfig
from asr_core.audio import load_audio
from asr_core.transcript import Transcript
from asr_core.manifest import read_manifest
from asr_core.metrics import word_errors
from asr_core.profile import Profile
from asr_core.whisper import adapt as A
from asr_core.whisper import cached, lora

pytestmark = pytest.mark.timeout(600)   # one CPU thread per adaptation; the test machine is shared

ADAPT_PROMPTS = 12
TEST_PROMPTS = 10


@pytest.fixture(scope="module")
def rec():
    from asr_core import defaults
    from asr_core.whisper.recognizer import WhisperRecognizer
    torch.set_num_threads(1)
    rec = WhisperRecognizer.load(defaults.FINAL_BACKBONE, quantize=defaults.WHISPER_INT8,
                                 beam_size=defaults.WHISPER_BEAM_SIZE, trim_seconds=defaults.WHISPER_TRIM_S,
                                 live_margin_s=defaults.WHISPER_LIVE_MARGIN_S, tail_pool=defaults.WHISPER_TAIL_POOL)
    assert rec.uses_live_margin      # the product's recognizer: adaptation fits and judges the window it serves
    return rec


@pytest.fixture(scope="module")
def hard(real_dev, tmp_path_factory):
    """The development prompts through the hard phone line: (adapt audios, texts), (test audios, texts)."""
    from asr_core.phone_line import degrade_manifest
    manifest = degrade_manifest(str(real_dev), "hard", str(tmp_path_factory.mktemp("real-dev-hard")))
    rows = read_manifest(manifest, ("adapt", "test"))
    ad = [u for u in rows if u.split == "adapt"][:ADAPT_PROMPTS]
    te = [u for u in rows if u.split == "test"][:TEST_PROMPTS]
    return ([load_audio(u.audio, 8000) for u in ad], [u.text for u in ad]), \
        ([load_audio(u.audio, 8000) for u in te], [u.text for u in te])


def _wer(rec, params, audios, texts) -> float:
    e = n = 0
    for a, t in zip(audios, texts):
        x, y = word_errors(t, rec.transcribe(a, 8000, params=params, word_timestamps=False).text)
        e, n = e + x, n + y
    return e / n


def test_a_callers_group_is_the_final_norm_plain_whisper_until_adapted_and_its_profile_is_small(rec, hard):
    (audios, _), _ = hard
    params = A.initial_whisper_params(rec)
    assert set(params) == set(cached.GROUP) and sum(v.numel() for v in params.values()) == 768
    assert rec.transcribe(audios[0], 8000, params=params).text == rec.transcribe(audios[0], 8000).text
    blob = Profile(model_version="0" * 64, params=params, metrics={"mode": "supervised"}).to_bytes()
    assert len(blob) <= 256 * 1024


def test_cached_decoding_gives_the_products_transcripts_for_a_profile(rec, hard):
    """The guard and the evaluation decode from the cached encoder output; as served (each prompt
    plus the live margin, the padding's encoding after it) and with the recognizer's beam size that
    is exactly `rec.transcribe(params=)`."""
    _, (audios, _) = hard
    plain = A.plain_whisper_params(rec)
    g = torch.Generator().manual_seed(0)
    profile = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in plain.items()}
    cache = cached.encode_frozen(rec, audios[:3], 8000, None, as_served=True)
    assert cache.shared is not None and all(cache.live[i] < 1500 for i in range(3))
    hyps = cached.decode_cached(rec, cache, profile, beam_size=rec.options.beam_size)
    for i, a in enumerate(audios[:3]):
        assert rec.tokenizer.decode(hyps[i].tokens).strip() == \
            rec.transcribe(a, 8000, params=profile, word_timestamps=False).text


@pytest.mark.parametrize("fold", [True, False], ids=["folded", "projected"])
def test_the_padding_keys_shared_by_every_prompt_give_what_each_prompts_window_gives(rec, hard, fold, monkeypatch):
    """The fits attend to each prompt's own keys and to the padding's, projected once for all
    (`SharedTailKV`, the padding pooled as served): the same loss and gradient as each prompt's own
    window made as the recognizer makes it (`window_kv`), and the same greedy transcripts (the
    guard's decodes: the float decoder, so a bucket's rows do not change each other's). Folded
    (the default, `FoldedKV`): the own positions' keys and values are never projected, the norm's
    gain and bias folded into the attention; the same loss and gradient."""
    from asr_core.whisper.decoding import greedy
    monkeypatch.setattr(cached, "FOLD", fold)
    (audios, texts), _ = hard
    served = cached.encode_frozen(rec, audios[:6], 8000, None, as_served=True, bucket=3)
    assert served.pooled and served.pool == rec.tail_pool > 1
    targets = cached.make_targets(rec, served, cached.token_targets(rec, texts[:6]), None)
    plain = A.plain_whisper_params(rec)
    g = torch.Generator().manual_seed(1)
    p = {k: (v + 0.05 * torch.randn(v.shape, generator=g)).requires_grad_() for k, v in plain.items()}
    dec, tok = rec.model.decoder, rec.tokenizer

    def windows():     # each prompt alone: its window with p, and its keys/values as served
        for idx, h in served.parts():
            for k, i in enumerate(idx):
                window = served.window(rec, p, [i], h[k:k + 1])
                yield i, window, rec.window_kv(window, served.live[i], decoder=dec)

    emb = dec.token_embedding.weight[targets.vocab]
    total = 0.0
    for i, window, cross in windows():
        x = cached._decoder_states(rec, window, cross, targets.tokens[[i], :-1])[0]
        sel = targets.mask[i].bool()
        total = total + F.cross_entropy(x[sel] @ emb.t(), targets.target_index[i][sel], reduction="sum")
    reference = total / targets.mask[:6].sum()
    loss = cached.teacher_forced_loss(rec, p, served, targets)
    assert abs(float(loss) - float(reference)) < 1e-4 * float(reference)
    grads = [torch.autograd.grad(v, list(p.values())) for v in (loss, reference)]
    assert all(torch.allclose(a, b, rtol=1e-3, atol=1e-5) for a, b in zip(*grads))
    # the guard's greedy decodes (float decoder, a bucket at a time): each prompt's tokens as alone
    got = cached.greedy_capped(rec, served, p, list(range(6)))
    with torch.no_grad():
        for i, window, cross in windows():
            want = greedy(dec, window, tok.prompt, tok.eot, tok.no_speech, list(tok.suppress),
                          list(rec.model.cfg.suppress_ids_begin), rec.options, cached._budget(rec, served, i),
                          cross=cross)[0]
            assert got[i].tokens == cached.cut_repetition(want.tokens)


def test_the_supervised_guard_decodes_with_the_served_int8_decoder(rec, hard):
    """The supervised guard's greedy decodes (before and after, `SUPERVISED_GUARD_SERVED`) run on the
    decoder the recognizer serves, its int8 copy: the same tokens as the float decoder's path given
    that copy, not the float decoder's own (which the pseudo-labels' greedy proof is about)."""
    (audios, texts), _ = hard
    assert rec.int8 == "decoder" and A.SUPERVISED_GUARD_SERVED
    served = cached.encode_frozen(rec, audios, 8000, None, as_served=True, bucket=16)
    plain, every = A.plain_whisper_params(rec), list(range(len(audios)))
    int8 = cached.greedy_capped(rec, served, plain, every, served=True)
    fp32 = cached.greedy_capped(rec, served, plain, every)
    own = rec.model.decoder
    rec.model.decoder = rec.infer.decoder
    try:
        want = cached.greedy_capped(rec, served, plain, every)
    finally:
        rec.model.decoder = own
    assert all(int8[i].tokens == want[i].tokens for i in every)
    assert any(int8[i].tokens != fp32[i].tokens for i in every)
    chunks = [every[::2], every[1::2]]
    refs = {i: t for i, t in enumerate(texts)}
    ok, m = A._guard(rec, served, chunks, [plain, plain], plain, refs, True)
    assert m["guard_decoder"] == "int8" and not ok     # the same params before and after: no fewer errors
    assert m["wer_before"] == m["wer_after"]


def test_the_fits_group_a_buckets_prompts_by_width_and_compute_the_same_loss(rec, hard, monkeypatch):
    """A fit step's teacher-forced pass groups a bucket's prompts so that no prompt is padded to more
    than `TIGHT_RATIO` times its own width (the folded cross-attention costs in proportion to it):
    every prompt in exactly one group, and the same loss and gradient as the bucket taken whole."""
    (audios, texts), _ = hard
    served = cached.encode_frozen(rec, audios, 8000, None, as_served=True, bucket=16)
    own = {i: cached.pooled_from(served.live[i], served.pool) for i in range(len(audios))}
    assert max(own.values()) > 2 * min(own.values())       # the prompts' lengths vary enough to split
    subset = list(range(0, len(audios), 2)) + [len(audios) - 1]
    for keep in (None, subset):
        whole = [idx for idx, _ in served.parts(keep)]
        groups = [idx for idx, _ in served.parts(keep, tight=cached.TIGHT_RATIO)]
        assert len(groups) > len(whole)
        assert sorted(i for g in groups for i in g) == sorted(i for g in whole for i in g)
        assert all(max(own[i] for i in g) <= cached.TIGHT_RATIO * min(own[i] for i in g) for g in groups)
    assert [idx for idx, _ in served.parts(subset, tight=1e9)] == [idx for idx, _ in served.parts(subset)]
    with pytest.raises(ValueError, match="at least 1"):
        list(served.parts(subset, tight=0.5))
    targets = cached.make_targets(rec, served, cached.token_targets(rec, texts), None)
    plain = A.plain_whisper_params(rec)
    g = torch.Generator().manual_seed(2)
    p = {k: (v + 0.05 * torch.randn(v.shape, generator=g)).requires_grad_() for k, v in plain.items()}
    losses = []
    for ratio in (None, cached.TIGHT_RATIO):
        monkeypatch.setattr(cached, "TIGHT_RATIO", ratio)
        losses.append(cached.teacher_forced_loss(rec, p, served, targets, subset))
    assert abs(float(losses[0]) - float(losses[1])) < 1e-5 * float(losses[0])
    grads = [torch.autograd.grad(v, list(p.values())) for v in losses]
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(*grads))


def test_the_teacher_forced_pass_tells_where_greedy_decoding_would_choose_the_pseudo_label(rec, hard):
    """Label-free asks whether a greedy pass agrees with each pseudo-label. Where greedy picks the
    pseudo-label's every token in the teacher-forced pass that scores it (`make_targets(greedy_caps=)`),
    the hypothesis it gives is the one greedy decoding returns (tokens, log-prob, no-speech
    probability); a label greedy would not choose, or one the cap would cut, is never claimed."""
    (audios, _), _ = hard
    n, prompt = len(audios), len(rec.tokenizer.prompt)
    served = cached.encode_frozen(rec, audios + audios, 8000, None, as_served=True)   # each prompt twice
    plain = A.plain_whisper_params(rec)
    decoded = cached.greedy_capped(rec, served, plain, list(range(n)))
    beam = cached.decode_cached(rec, served, plain, list(range(n)), beam_size=rec.options.beam_size)
    # labels: greedy's own texts, then the beam output as the product stores it
    texts = [rec.tokenizer.decode(decoded[i].tokens).strip() for i in range(n)] + \
        [rec.tokenizer.decode(beam[i].tokens).strip() for i in range(n)]
    seqs = cached.token_targets(rec, texts)
    wide = {i: 10 ** 4 for i in range(2 * n) if texts[i]}
    got = cached.make_targets(rec, served, seqs, plain, greedy_caps=wide).greedy
    own = [i for i in range(n) if texts[i] and seqs[i][prompt:-1] == decoded[i].tokens]   # tokens round-trip
    assert len(own) >= n // 2 and all(i in got for i in own)
    for i, hyp in got.items():
        want = decoded[i % n]
        assert hyp.tokens == want.tokens
        assert abs(hyp.sum_logprob - want.sum_logprob) < 1e-3 and abs(hyp.no_speech_prob - want.no_speech_prob) < 1e-4
    # a first token greedy would not choose, or a cap the text reaches: not claimed
    i = own[0]
    changed = [list(x) for x in seqs]
    changed[i][prompt] = rec.tokenizer.encode(" zebra")[0]
    assert changed[i][prompt] != seqs[i][prompt]
    assert i not in cached.make_targets(rec, served, changed, plain, greedy_caps=wide).greedy
    assert i not in cached.make_targets(rec, served, seqs, plain, greedy_caps={i: len(decoded[i].tokens)}).greedy
    assert i in cached.make_targets(rec, served, seqs, plain, greedy_caps={i: len(decoded[i].tokens) + 1}).greedy


def test_fits_in_bfloat16_compute_what_autocast_computes_and_fold_within_its_rounding(rec, hard):
    """The fits' decoder copy with bfloat16 linear weights (`bf16_decoder`) computes exactly what
    bfloat16 autocast computes with the model's decoder (autocast casts the same weights at each
    call); folded into the attention the loss and gradient stay within bfloat16's rounding of the
    float32 ones."""
    (audios, texts), _ = hard
    cache = cached.encode_frozen(rec, audios[:6], 8000, None, as_served=True, bucket=3)
    targets = cached.make_targets(rec, cache, cached.token_targets(rec, texts[:6]), None)
    g = torch.Generator().manual_seed(2)
    p = {k: (v + 0.05 * torch.randn(v.shape, generator=g)).requires_grad_()
         for k, v in A.plain_whisper_params(rec).items()}
    copy = cached.bf16_decoder(rec.model.decoder)
    assert copy.token_embedding.weight is rec.model.decoder.token_embedding.weight
    assert copy.blocks[0].cross_attn.key.weight.dtype == torch.bfloat16
    assert rec.model.decoder.blocks[0].cross_attn.key.weight.dtype == torch.float32

    def loss_grad(decoder, bf16, fold):
        cached.FOLD = fold
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = cached.teacher_forced_loss(rec, p, cache, targets, decoder=decoder)
        finally:
            cached.FOLD = True
        return float(loss), torch.autograd.grad(loss, list(p.values()))

    with cached.frozen(rec.model):
        for fold in (False, True):
            a, b = loss_grad(None, True, fold), loss_grad(copy, True, fold)
            assert a[0] == b[0] and all(torch.equal(x, y) for x, y in zip(a[1], b[1]))
        exact, folded = loss_grad(None, False, False), loss_grad(copy, True, True)
    assert abs(folded[0] - exact[0]) < 0.01 * exact[0]
    assert all(float((x - y).norm() / x.norm()) < 0.05 for x, y in zip(exact[1], folded[1]))


def test_a_returning_callers_second_try_reuses_the_encoded_audio_and_only_that_audio(rec, hard):
    """The worker adapts a returning caller twice on the same audio (from the meta-learned start and
    from their profile): the frozen encoder's output is made once. Other audio, even one sample
    changed, is encoded afresh."""
    (audios, _), _ = hard
    A.forget_encoded()
    first = A._encoded(rec, audios[:3], 8000, True)
    assert A._encoded(rec, [a.clone() for a in audios[:3]], 8000, True) is first
    changed = [a.clone() for a in audios[:3]]
    changed[1][100] += 0.01
    other = A._encoded(rec, changed, 8000, True)
    assert other is not first and A._encoded(rec, audios[:3], 8000, True) is not other
    A.forget_encoded()
    assert A._encoded(rec, audios[:3], 8000, True) is not first
    # kept no longer than the audio: the worker's run ends, its audio goes, and so does the cache
    A.forget_encoded()
    run = [a.clone() for a in audios[:3]]
    A._encoded(rec, run, 8000, True)
    assert A._LAST_ENCODED
    del run, changed
    import gc
    gc.collect()
    assert not A._LAST_ENCODED


def test_supervised_adaptation_fits_the_callers_prompts_and_the_guard_judges_held_out_ones(rec, hard):
    (audios, texts), _ = hard
    raw = A.adapt_whisper_caller(rec, audios, texts, 8000, cfg=AdaptationConfig("supervised", guard=False))
    assert raw.metrics["window"] == "served" and raw.metrics["rule"] == A.SUPERVISED_RULE == "meta"
    assert raw.metrics["fit_from"] == "meta-learned init"    # a caller without a profile, supervised
    again = A.adapt_whisper_caller(rec, audios, texts, 8000, start=raw.params, cfg=AdaptationConfig("supervised", guard=False))
    assert again.metrics["fit_from"] == "profile"
    # restart (bench/whisper_returning.py's comparison): fitting ignores the profile, as for a new caller
    anew = A.adapt_whisper_caller(rec, audios, texts, 8000, start=raw.params, restart=True,
                                  cfg=AdaptationConfig("supervised", guard=False))
    assert anew.metrics["fit_from"] == "meta-learned init"
    # (not bit for bit the new caller's fit: the loss's candidate vocabulary comes from the profile's pass)
    def off(p):
        return max(float((p[k] - raw.params[k]).abs().max()) for k in raw.params)
    assert off(anew.params) < 0.1 * off(again.params), (off(anew.params), off(again.params))
    plain = A.plain_whisper_params(rec)
    cache = cached.encode_frozen(rec, audios, 8000, None, as_served=True)
    targets = cached.make_targets(rec, cache, cached.token_targets(rec, texts), plain)
    with torch.no_grad():
        assert cached.teacher_forced_loss(rec, raw.params, cache, targets) < \
            0.97 * cached.teacher_forced_loss(rec, plain, cache, targets)
    r = A.adapt_whisper_caller(rec, audios, texts, 8000)
    m = r.metrics
    assert m["folds"] == 2 and m["held_out"] == ADAPT_PROMPTS and m["utterances"] == ADAPT_PROMPTS
    if r.accepted:
        assert m["wer_after"] < m["wer_before"] and "reason" not in m
        assert all(not torch.equal(r.params[k], plain[k]) for k in plain)
    else:
        assert m["reason"] and all(torch.equal(r.params[k], plain[k]) for k in plain)


def test_a_wrong_first_pass_never_becomes_pseudo_labels(rec, hard):
    """Live failure of issue 18: the first pass said "i" for every segment and the guard accepted a
    profile that copied it (the caller's next call: 99 % WER). Another recognizer's transcripts can
    only remove pseudo-labels (they must agree with Whisper's own), never supply them."""
    (audios, _), _ = hard
    asked = []

    def wrong_first_pass(audio):
        asked.append(audio)
        return Transcript("i")

    r = A.adapt_whisper_caller(rec, audios, None, 8000, first_pass=wrong_first_pass,
                               cfg=AdaptationConfig("label-free", min_confidence=0.0))
    assert len(asked) == r.metrics["confident"] == len(audios)     # every one confident enough, asked
    assert r.metrics["pseudo_labels"] == "own beam search" and r.metrics["agreeing"] == 0
    assert not r.accepted and r.metrics["reason"] == "too few usable utterances"
    plain = A.plain_whisper_params(rec)
    assert all(torch.equal(r.params[k], plain[k]) for k in plain)


def test_wrong_transcripts_to_learn_from_never_yield_a_profile_that_raises_wer(rec, hard):
    """The development prompts with wrong transcripts (each prompt labelled with another prompt's
    text): supervised, the guard compares held-out transcripts with the (wrong) references, which
    adaptation cannot make it match; label-free, Whisper's greedy pass disagrees with them. Either
    way no accepted profile may make the caller's test prompts worse."""
    (audios, texts), (test_audios, test_texts) = hard
    wrong = texts[1:] + texts[:1]
    before = _wer(rec, None, test_audios, test_texts)
    results = {}
    for mode, kw in (("supervised", {}), ("label-free", {"hypotheses": wrong})):
        r = results[mode] = A.adapt_whisper_caller(rec, audios, wrong if mode == "supervised" else None, 8000,
                                                   cfg=AdaptationConfig(mode, min_confidence=0.0), **kw)
        if r.accepted:
            assert _wer(rec, r.params, test_audios, test_texts) <= before + 0.01, (mode, r.metrics)
        else:
            assert r.metrics["reason"]
    assert results["label-free"].metrics["agreeing"] == 0 and not results["label-free"].accepted


def test_the_guards_sanity_bounds_reject_a_profile_that_loses_words_or_collapses(rec, hard):
    """A profile that silences the encoder's output (gain 0): whatever the error counts say, the
    held-out transcripts lose words or collapse, and the guard rejects it, in either mode."""
    (audios, texts), _ = hard
    cache = cached.encode_frozen(rec, audios, 8000, None, as_served=True)
    plain = A.plain_whisper_params(rec)
    dead = {k: torch.zeros_like(v) if k.endswith("weight") else v for k, v in plain.items()}
    chunks = [list(range(0, len(audios), 2)), list(range(1, len(audios), 2))]
    refs = {i: t for i, t in enumerate(texts)}
    ok, m = A._guard(rec, cache, chunks, [dead, dead], plain, refs, True)
    assert not ok and ("lost words" in m["reason"] or "collapsed" in m["reason"]), m
    beam = cached.decode_cached(rec, cache, plain, beam_size=rec.options.beam_size)
    own = {i: rec.tokenizer.decode(h.tokens).strip() for i, h in beam.items() if h.tokens}
    ok, m = A._guard(rec, cache, chunks, [dead, dead], plain, own, False, own)
    assert not ok and ("lost words" in m["reason"] or "collapsed" in m["reason"]), m
    # the same call with the plain model as the "fitted" profile: nothing lost, no gain either
    ok, m = A._guard(rec, cache, chunks, [plain, plain], plain, refs, True)
    assert not ok and m["reason"] == "no fewer held-out word errors" and m["wer_after"] == m["wer_before"]


def test_a_label_free_profile_less_confident_than_the_callers_current_params_is_rejected(rec, hard):
    """Issue 18 (2026-12-06): the label-free guard compared a profile's held-out confidence with the
    meta-learned start's, which is below plain Whisper's, so a profile between the two was accepted
    (one synthetic caller's cost a word). Its "before" is now the caller's current params."""
    (audios, _), _ = hard
    cache = cached.encode_frozen(rec, audios, 8000, None, as_served=True)
    plain = A.plain_whisper_params(rec)
    start = A.caller_settings(rec)["init"]
    chunks = [list(range(0, len(audios), 2)), list(range(1, len(audios), 2))]
    every = sorted(i for c in chunks for i in c)

    def confidence(params):
        d = A._decoded(rec, cache, params, every, beam=True)
        return sum(d[i][1] for i in every) / len(every), {i: d[i][0] for i in every if d[i][0]}

    c_plain, own = confidence(plain)
    c_start, _ = confidence(start)
    # the premise: a profile the old baseline (the start) would have counted as a gain, on the way
    # from plain Whisper to the start (where on it depends on the CPU's rounding: on one machine
    # halfway was already more confident than plain)
    tried = []
    for share in (0.5, 0.75, 0.8, 0.85, 0.9, 0.25, 0.6, 0.7, 0.95):
        between = {k: plain[k] + share * (start[k] - plain[k]) for k in plain}
        c_between, _ = confidence(between)
        tried.append((share, round(c_between, 4)))
        if c_start < c_between < c_plain:
            break
    assert c_start < c_between < c_plain, (c_start, c_plain, tried)
    ok, m = A._guard(rec, cache, chunks, [between, between], plain, own, False, own)
    assert m["before"] == "current" and m["logprob_before"] == pytest.approx(c_plain, abs=1e-3)
    assert not ok and m["reason"] == "held-out confidence did not rise", m
    # and a profile fitted to nothing (the plain params themselves) gains nothing either
    ok, m = A._guard(rec, cache, chunks, [plain, plain], plain, own, False, own)
    assert not ok and m["reason"] == "held-out confidence did not rise", m


def test_a_label_free_profile_that_rewrites_more_held_out_words_than_the_bound_is_rejected(rec, hard, monkeypatch):
    """Issue 18 (2026-12-07): over the live system an unverified caller's label-free profile whose
    held-out served transcripts differed from the unadapted ones in 0.31 of their words (confidence
    up on 12 segments of 16) was accepted under a bound of 0.35 and made call 3 7 % worse. The
    bound (0.25) is checked on the served transcripts of every held-out prompt, before any
    evidence of help: a profile over it is rejected and the caller keeps what they have."""
    assert A.MAX_DIVERGENCE == 0.25
    (audios, _), _ = hard
    cache = cached.encode_frozen(rec, audios, 8000, None, as_served=True)
    plain = A.plain_whisper_params(rec)
    other = A.caller_settings(rec)["init"]           # a profile whose transcripts differ from plain Whisper's
    chunks = [list(range(0, len(audios), 2)), list(range(1, len(audios), 2))]
    beam = A._decoded(rec, cache, plain, sorted(range(len(audios))), beam=True)
    own = {i: t for i, (t, _) in beam.items() if t}
    searched = {i: x for i, x in beam.items() if i in own}
    ok, m = A._guard(rec, cache, chunks, [other, other], plain, own, False, own, searched=searched)
    moved = m["divergence_after"]
    assert m["divergence_before"] == 0.0 and 0 < moved < 1, m
    # just under what it moved: rejected for that, whatever its confidence says
    monkeypatch.setattr(A, "MAX_DIVERGENCE", moved - 0.01)
    ok, m = A._guard(rec, cache, chunks, [other, other], plain, own, False, own, searched=searched)
    assert not ok and m["reason"] == "held-out transcripts diverge from the unadapted model's beam output", m
    assert m["divergence_after"] == moved
    # just over it: the bound lets it by and the evidence of help decides
    monkeypatch.setattr(A, "MAX_DIVERGENCE", moved + 0.01)
    ok, m = A._guard(rec, cache, chunks, [other, other], plain, own, False, own, searched=searched)
    assert "diverge" not in m.get("reason", ""), m


def test_label_free_self_training_and_entropy_minimization_start_from_whispers_own_transcripts(rec, hard):
    """As the product: the segments' stored transcripts (Whisper's beam output) are the pseudo-labels."""
    (audios, _), _ = hard
    full = cached.encode_frozen(rec, audios, 8000, None, as_served=True)
    stored = [rec.tokenizer.decode(h.tokens).strip()
              for _, h in sorted(cached.decode_cached(rec, full, None, beam_size=rec.options.beam_size).items())]
    assert A.LABEL_FREE_RULE == "meta"
    # the default (self-training from the meta-learned start), and SUTA-style entropy with Adam
    for objective, rule in (("ce", None), ("entropy", "adam")):
        r = A.adapt_whisper_caller(rec, audios, None, 8000, objective=objective, hypotheses=stored, rule=rule,
                                   cfg=AdaptationConfig("label-free", min_confidence=A.LABEL_FREE_MIN_CONFIDENCE))
        m = r.metrics
        assert m["objective"] == objective and m["pseudo_labels"] == "own transcripts"
        assert m["rule"] == (rule or "meta")
        assert m["agreeing"] <= m["confident"] <= len(audios)
        assert 0 <= m["greedy_decoded"] <= m["confident"]    # the rest: greedy's verdict from the teacher-forced pass
        if objective == "entropy":
            assert m["utterances"] >= m["agreeing"]
        # the guard decodes the held-out prompts as served (beam search). Its "before" is always the
        # caller's current params (here plain Whisper), whichever start fitting began from: their
        # transcripts are the pseudo-labels themselves (divergence 0), and their confidence is what
        # the fitted profile must beat (not the meta-learned start's, which is lower: issue 18)
        assert m["decodes"] == "beam"
        assert m["before"] == "current" and m["divergence_before"] == 0.0
        # label-free fits a caller without a profile from where they are (LABEL_FREE_ORIGIN)
        assert m["fit_from"] == "plain Whisper"
        if r.accepted:
            assert m["logprob_after"] > m["logprob_before"] and m["more_confident"] > m["less_confident"]
            assert m["sign_p"] <= A.MAX_SIGN_P
            assert m["divergence_after"] <= A.MAX_DIVERGENCE
            assert m["words_after"] >= A.MIN_WORD_RATIO * m["words_before"]
        else:
            assert m["reason"]


def test_bad_input_gets_a_clear_error(rec, hard):
    (audios, texts), _ = hard
    with pytest.raises(ValueError, match="no audio"):
        A.adapt_whisper_caller(rec, [], [], 8000)
    with pytest.raises(ValueError, match="one reference text per utterance"):
        A.adapt_whisper_caller(rec, audios[:2], texts[:1], 8000)
    with pytest.raises(ValueError, match="one reference text per utterance"):
        A.adapt_whisper_caller(rec, audios[:2], None, 8000)
    with pytest.raises(ValueError, match="one hypothesis per utterance"):
        A.adapt_whisper_caller(rec, audios[:2], None, 8000, hypotheses=["a"], cfg=AdaptationConfig("label-free"))
    with pytest.raises(ValueError, match="not a profile of this group"):
        A.adapt_whisper_caller(rec, audios[:2], texts[:2], 8000, start=lora.plain_lora_params(rec))
    with pytest.raises(ValueError, match="objective"):
        A.adapt_whisper_caller(rec, audios[:4], texts[:4], 8000, objective="guess")
    with pytest.raises(ValueError, match="rule"):
        A.adapt_whisper_caller(rec, audios[:4], texts[:4], 8000, rule="newton")
    with pytest.raises(ValueError, match="mode"):
        AdaptationConfig("unsupervised")


def test_the_meta_learned_caller_settings_ship_small_for_exactly_these_weights(rec, tmp_path):
    from asr_core.errors import CheckpointError
    from asr_core.whisper.meta_callers import read_settings, write_settings
    settings = A.caller_settings(rec)
    assert settings is not None and settings["steps"] >= 1 and set(settings["step_sizes"]) == set(cached.GROUP)
    assert all(torch.all(v > 0) for v in settings["step_sizes"].values())
    import os
    shipped = os.path.join(os.path.dirname(A.__file__), "..", "checkpoints", "whisper-tiny-callers.pt")
    assert os.path.getsize(shipped) <= 256 * 1024
    info = {k: settings[k] for k in ("steps", "init", "step_sizes")}
    with pytest.raises(CheckpointError, match="made for other weights"):
        read_settings(write_settings(info, "0" * 64, str(tmp_path / "other.pt")), settings["backbone_sha256"])
    nan = {**info, "step_sizes": {k: v * float("nan") for k, v in info["step_sizes"].items()}}
    with pytest.raises(CheckpointError, match="malformed step_sizes"):
        read_settings(write_settings(nan, settings["backbone_sha256"], str(tmp_path / "nan.pt")),
                      settings["backbone_sha256"])
    (tmp_path / "junk.pt").write_bytes(b"not a settings file")
    with pytest.raises(CheckpointError, match="corrupt or not a settings file"):
        read_settings(str(tmp_path / "junk.pt"), settings["backbone_sha256"])
    with pytest.raises(CheckpointError, match="not found"):
        read_settings(str(tmp_path / "none.pt"), settings["backbone_sha256"])


def test_supervised_fits_run_ten_meta_learned_steps_in_bfloat16_eight_in_float32_label_free_ten(rec, hard,
                                                                                              monkeypatch):
    """Supervised: META_STEPS (10) steps of the meta-learned rule per fold where the fits run in
    bfloat16, as the settings were meta-trained; 8 where they run in float32 (10 cost over 10 s per
    caller on a CPU without bfloat16 dot products). Label-free keeps META_STEPS (10) in both; a step
    count asked for is used in every case."""
    assert (A.META_STEPS, A.SUPERVISED_META_STEPS_FLOAT32) == (10, 8)
    (audios, texts), _ = hard
    passes = []
    real = cached.teacher_forced_loss
    monkeypatch.setattr(cached, "teacher_forced_loss", lambda *a, **k: passes.append(1) or real(*a, **k))
    own = A.plain_whisper_params(rec)
    for bf16, supervised_steps in ((False, 8), (True, 10)):
        monkeypatch.setattr(A, "FIT_BF16", bf16)
        assert A.supervised_meta_steps() == supervised_steps
        passes.clear()
        r = A.adapt_whisper_caller(rec, audios[:6], texts[:6], 8000, cfg=AdaptationConfig("supervised"))
        assert r.metrics["rule"] == "meta" and r.metrics["steps"] == supervised_steps
        assert len(passes) == supervised_steps * r.metrics["folds"]     # one teacher-forced pass a step, per fold
        steps = {mode: A._meta_settings(rec, own, None, AdaptationConfig(mode), 6, from_current=mode == "label-free",
                                        supervised=mode == "supervised")[2] for mode in ("supervised", "label-free")}
        assert steps == {"supervised": supervised_steps, "label-free": 10}
        asked = A._meta_settings(rec, own, None, AdaptationConfig("supervised", steps=3), 3, supervised=True)[2]
        assert asked == 3


def test_evaluate_adapt_keeps_its_json_format_for_the_default_backbone(rec, hard, tmp_path):
    """`python -m asr_core evaluate --adapt all` (no --backbone: the product's recognizer) keeps
    adapt.{method}.wer, seconds_per_speaker and speakers."""
    import json

    import soundfile as sf
    from asr_core.cli import main
    from asr_core.text import normalize
    (audios, texts), (test_audios, test_texts) = hard
    rows = ["speaker\tsplit\taudio\ttext"]
    for split, aa, tt in (("adapt", audios[:4], texts[:4]), ("test", test_audios[:2], test_texts[:2])):
        for i, (a, t) in enumerate(zip(aa, tt)):
            sf.write(tmp_path / f"{split}{i}.wav", a.numpy(), 8000)
            rows.append(f"caller\t{split}\t{split}{i}.wav\t{t}")
    (tmp_path / "m.tsv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "r.json"
    assert main(["evaluate", "--manifest", str(tmp_path / "m.tsv"), "--adapt", "all", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    adapt = result["adapt"]
    assert set(adapt) == {"none", "supervised", "label-free"}
    # it names the settings a caller is adapted with: the caller group's shipped meta-learned ones
    assert result["caller_settings"] == A.caller_settings_path(rec) and \
        result["caller_settings"].endswith("whisper-tiny-callers.pt")
    for method, r in adapt.items():
        assert 0.0 <= r["wer"] and r["seconds_per_speaker"] >= 0.0 and set(r["speakers"]) == {"caller"}
        assert r["speakers"]["caller"]["words"] == sum(len(normalize(t).split()) for t in test_texts[:2])
        if method != "none":
            assert r["seconds_per_speaker"] > 0 and "accepted" in r["speakers"]["caller"]


def test_the_label_free_guard_wants_a_broad_rise_in_held_out_confidence():
    """The evidence of help without labels: the held-out mean log-prob rises, and on so many more
    utterances than it falls on that chance would rarely give as many (one-sided sign test, p at
    most MAX_SIGN_P). Accepted profiles whose rises were 3 up / 7 down and 7 up / 3 down cost a
    synthetic caller 2 and 1.02 points."""
    assert A.MAX_SIGN_P == 0.05
    assert A.sign_test_p(0, 0) == 1.0 and A.sign_test_p(3, 0) == 0.125
    assert A.sign_test_p(7, 3) == pytest.approx(176 / 1024) and A.sign_test_p(12, 4) == pytest.approx(0.0384, abs=1e-4)
    before = [-0.3, -0.2, -0.4, -0.25, -0.35, -0.3, -0.2, -0.3, -0.4, -0.3]
    carried = [b + 0.03 for b in before[:3]] + [b - 0.01 for b in before[3:]]   # mean up, 3 up, 7 down
    assert sum(carried) > sum(before)
    assert A.confidence_verdict(before, carried) == ("held-out confidence rose on too few utterances to be "
                                                     "evidence (3 up, 7 down: p 0.945 by a sign test, at most 0.05)")
    narrow = [b + 0.02 for b in before[:7]] + [b - 0.005 for b in before[7:]]   # 7 up, 3 down: p 0.17
    assert A.confidence_verdict(before, narrow).startswith("held-out confidence rose on too few utterances")
    broad = [b + 0.01 for b in before[:9]] + [before[9] - 0.005]                # 9 up, 1 down: p 0.011
    assert A.confidence_verdict(before, broad) == ""
    unmoved = [b + 0.01 for b in before[:9]] + [before[9]]                      # 9 up, 1 the same: p 0.002
    assert A.confidence_verdict(before, unmoved) == ""
    assert A.confidence_verdict(before, before) == "held-out confidence did not rise"
    outlier = [b + 0.01 for b in before[:9]] + [before[9] - 0.5]               # most up, the mean down
    assert A.confidence_verdict(before, outlier) == "held-out confidence did not rise"


def test_a_fit_step_sees_at_most_fit_batch_utterances_and_every_one_in_turn():
    """A fold of a 30-prompt caller has 15 utterances; each step fits FIT_BATCH of them (the
    meta-learned settings' inner batch), in turn, so that 10 steps see every one."""
    assert A.FIT_BATCH == 8
    fold = list(range(1, 30, 2))                       # 15 utterances
    batches = [A._step_batch(fold, k) for k in range(10)]
    assert all(len(b) == 8 and set(b) <= set(fold) and b == sorted(b) for b in batches)
    assert set().union(*batches[:2]) == set(fold)      # two steps see them all
    assert A._step_batch(fold[:8], 3) == fold[:8] and A._step_batch(None, 0) is None


def test_the_label_free_guard_takes_the_finals_stored_scores_and_decides_the_same(rec, hard, monkeypatch):
    """Issue 18 (cost): the label-free guard's "before" figures are the current params' beam
    search of its held-out prompts, which the product already ran for their finals. A final's
    score (`Transcript.avg_logprob`) is the adaptation's search of its cached window to the bit,
    so the guard takes the stored scores: the same profile, verdict and figures, without searching
    those prompts again. A prompt without a score is searched as before."""
    (audios, _), _ = hard
    finals = [rec.transcribe(a, 8000, word_timestamps=False) for a in audios]
    stored, scores = [t.text for t in finals], [t.avg_logprob for t in finals]
    cache = cached.encode_frozen(rec, audios, 8000, None, as_served=True)
    beam = cached.decode_cached(rec, cache, None, beam_size=rec.options.beam_size)
    said = [i for i in range(len(audios)) if stored[i]]
    assert len(said) > len(audios) // 2
    assert [(rec.tokenizer.decode(beam[i].tokens).strip(), beam[i].avg_logprob) for i in said] \
        == [(stored[i], scores[i]) for i in said]
    searched: list[int] = []
    search = cached.decode_cached

    def counted(rec_, cache_, params, subset=None, **kw):
        searched.append(len(subset) if subset is not None else len(cache_))
        return search(rec_, cache_, params, subset, **kw)

    monkeypatch.setattr(cached, "decode_cached", counted)
    cfg = AdaptationConfig("label-free", min_confidence=A.LABEL_FREE_MIN_CONFIDENCE)
    runs = {}
    for name, given in (("searched", None), ("stored", scores), ("half", [s if i % 4 else None for i, s in
                                                                           enumerate(scores)])):
        searched.clear()
        A.forget_encoded()
        r = A.adapt_whisper_caller(rec, audios, None, 8000, cfg=cfg, hypotheses=stored, hypothesis_scores=given)
        runs[name] = (r, sum(searched))
    (a, n_a), (b, n_b), (c, n_c) = runs["searched"], runs["stored"], runs["half"]
    assert "divergence_before" in a.metrics, a.metrics         # the guard ran
    held_out = a.metrics["held_out"]
    assert a.metrics["before_known"] == 0 and b.metrics["before_known"] == held_out
    assert 0 < c.metrics["before_known"] < held_out
    assert n_a - n_b == held_out and n_a - n_c == c.metrics["before_known"]
    for r in (b, c):
        assert r.accepted == a.accepted and all(torch.equal(r.params[k], a.params[k]) for k in a.params)
        assert {k: v for k, v in r.metrics.items() if k not in ("seconds", "cpu_seconds", "before_known")} == \
            {k: v for k, v in a.metrics.items() if k not in ("seconds", "cpu_seconds", "before_known")}
    with pytest.raises(ValueError, match="one score"):
        A.adapt_whisper_caller(rec, audios, None, 8000, cfg=cfg, hypotheses=stored, hypothesis_scores=scores[:-1])


def test_the_sweeps_jitter_reports_how_far_a_wer_moves_for_reasons_that_are_not_the_method(rec, real_dev, tmp_path):
    """`evaluate_whisper_adaptation(jitter=K)` decodes the test prompts again with K copies of each
    method's params moved by float rounding's size: reproducible copies, their WERs and summary in
    the result (nothing added without it), a real move where the params move more, bad counts refused."""
    import csv

    from asr_core.whisper.adapt_eval import evaluate_whisper_adaptation
    rows = [u for u in read_manifest(str(real_dev), ("test",))][:4]
    manifest = tmp_path / "m.tsv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["speaker", "split", "audio", "text"])
        w.writerows([u.speaker, u.split, u.audio, u.text] for u in rows)
    quiet = open(tmp_path / "progress", "w")
    plain = evaluate_whisper_adaptation(rec, str(manifest), "none", progress=quiet)
    assert "jitter" not in plain["none"] and "wer_jitter" not in plain["none"]["speakers"]["allison"]
    got = [evaluate_whisper_adaptation(rec, str(manifest), "none", progress=quiet, jitter=2) for _ in range(2)]
    j = got[0]["none"]["jitter"]
    assert got[0]["none"]["wer"] == plain["none"]["wer"] and got[1]["none"]["jitter"] == j
    assert len(j["wer"]) == 2 and j["min"] <= j["mean"] <= j["max"] and all(0 <= x <= 2 for x in j["wer"])
    assert got[0]["none"]["speakers"]["allison"]["wer_jitter"] == j["wer"]
    # moved by far more than rounding, the transcripts change: the copies are really decoded
    far = evaluate_whisper_adaptation(rec, str(manifest), "none", progress=quiet, jitter=1, jitter_scale=0.5)
    assert far["none"]["jitter"]["wer"][0] > plain["none"]["wer"]
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="jitter must be a whole number"):
            evaluate_whisper_adaptation(rec, str(manifest), "none", progress=quiet, jitter=bad)
    with pytest.raises(ValueError, match="jitter_scale must be"):
        evaluate_whisper_adaptation(rec, str(manifest), "none", progress=quiet, jitter=1, jitter_scale=float("nan"))
