"""Per-caller adaptation with the shipped checkpoint on a synthesized caller never seen in training."""
import random

import pytest
import torch

from asr_core.adaptation import AdaptationConfig, adapt_caller, guarded_adaptation
from asr_core.corpus.sentences import sentences
from asr_core.corpus.synth import render
from asr_core.meta import adaptation_init, initial_params
from asr_core.profile import Profile
from asr_core.small.recognizer import Recognizer


@pytest.fixture(scope="module")
def caller(unseen_speaker):
    texts = sentences(random.Random(11), 6)
    return [torch.from_numpy(render(unseen_speaker, t, seed=100 + i)) for i, t in enumerate(texts)], texts


def test_supervised_adaptation_is_kept_only_with_fewer_errors_on_held_out_utterances(recognizer, caller):
    audios, texts = caller
    r = adapt_caller(recognizer, audios, texts, cfg=AdaptationConfig("supervised", holdout=2))
    m = r.metrics
    # 3 chunks of 2: every one of the 6 utterances judged once by an adaptation on the other 4
    assert m["utterances"] == 6 and m["held_out"] == 6 and m["folds"] == 3 and m["steps"] >= 1
    assert r.accepted == (m["wer_after"] < m["wer_before"])
    if not r.accepted:
        start = initial_params(recognizer.model)
        assert all(torch.equal(r.params[k], start[k]) for k in start)


def test_the_guard_holds_out_each_chunk_in_turn(recognizer, caller):
    """Each chunk is recognized by an adaptation that never saw it; an accepted profile is refit on all."""
    audios, texts = caller
    fits, seen = [], []
    start = adaptation_init(recognizer.model, recognizer.meta)

    def fit(a, t, p):
        fits.append(list(t))
        return p

    def transcribe(a, p):
        seen.append((next(i for i, x in enumerate(audios) if x is a), p is start))
        return recognizer.decode(recognizer.log_probs(a, p))

    r = guarded_adaptation(audios, texts, start=start, baseline=initial_params(recognizer.model),
                           cfg=AdaptationConfig("supervised", holdout=2, folds=3), steps=1, sample_rate=8000,
                           transcribe=transcribe, fit=fit)
    chunks = [[4, 5], [2, 3], [0, 1]]
    assert fits[:3] == [[t for i, t in enumerate(texts) if i not in c] for c in chunks]
    assert sorted(i for i, adapted in seen if adapted) == list(range(6))      # each judged once, adapted
    assert sorted(i for i, adapted in seen if not adapted) == list(range(6))  # ... and as the caller is now
    assert len(fits) == (4 if r.accepted else 3) and (not r.accepted or fits[3] == texts)


def test_the_label_free_guard_judges_all_utterances_and_learns_from_the_confident_ones(recognizer, caller):
    """Own pseudo-labels: 5 chunks of 2 of all the utterances, confident or not, are each recognized
    by an adaptation on the confident pseudo-labels outside the chunk; the update is kept only if
    their mean confidence does not fall, then refit on every confident pseudo-label."""
    from asr_core.transcript import Transcript, Word

    def said(text, confidence):
        return Transcript(text, [Word(w, 0.0, 0.1, confidence) for w in text.split()])

    audios = caller[0] + [a.clone() for a in caller[0][:4]]   # 10 utterances
    index = {id(a): i for i, a in enumerate(audios)}
    base, adapted = {"who": "base"}, {"who": "adapted"}
    unsure = {1, 6}                                         # first-pass confidence below the threshold
    fits = []

    def transcribe(a, p):
        i = index[id(a)]
        if p is base:
            return said(f"words {i}", 0.5 if i in unsure else 0.9)
        return said(f"words {i}", 0.95)  # the adaptation makes every one surer

    def fit(a, t, p):
        fits.append(sorted(int(x.split()[1]) for x in t))
        return adapted

    r = guarded_adaptation(audios, None, start=base, cfg=AdaptationConfig("label-free"), steps=1, sample_rate=8000,
                           transcribe=transcribe, fit=fit)
    confident = [i for i in range(10) if i not in unsure]
    chunks = [[8, 9], [6, 7], [4, 5], [2, 3], [0, 1]]
    assert fits[:5] == [[i for i in confident if i not in c] for c in chunks]
    m = r.metrics
    assert m["held_out"] == 10 and m["folds"] == 5 and m["utterances"] == 8 and m["pseudo_labels"] == "own"
    assert m["conf_before"] == pytest.approx((8 * 0.9 + 2 * 0.5) / 10) and m["conf_after"] == pytest.approx(0.95)
    assert r.accepted and r.params is adapted and fits[5] == confident

    # the same update making the held-out utterances less sure is not kept
    fits.clear()
    r = guarded_adaptation(audios, None, start=base, cfg=AdaptationConfig("label-free"), steps=1, sample_rate=8000,
                           transcribe=lambda a, p: said(f"words {index[id(a)]}", 0.6 if p is adapted else 0.9),
                           fit=fit)
    assert not r.accepted and r.params is base and len(fits) == 5


def test_an_update_that_changes_nothing_is_not_kept(recognizer, caller):
    """A tie on held-out utterances is no evidence that adaptation helps."""
    audios, texts = caller
    start = initial_params(recognizer.model)
    r = adapt_caller(recognizer, audios, texts, start=start, cfg=AdaptationConfig("supervised", steps=0, holdout=2))
    assert not r.accepted and r.metrics["wer_after"] == r.metrics["wer_before"]


def test_guard_rejects_a_harmful_update(recognizer, caller):
    audios, texts = caller
    harmful = Recognizer(recognizer.model, dict(recognizer.meta, adapt={"steps": 3, "step_sizes": 500.0}),
                         recognizer.beam)
    r = adapt_caller(harmful, audios, texts, cfg=AdaptationConfig("supervised", holdout=2))
    assert not r.accepted and r.metrics["wer_after"] > r.metrics["wer_before"]
    start = initial_params(recognizer.model)
    assert all(torch.equal(r.params[k], start[k]) for k in start)


def test_label_free_adaptation_runs_without_references(recognizer, caller):
    audios, _ = caller
    r = adapt_caller(recognizer, audios, None, cfg=AdaptationConfig("label-free", min_confidence=0.5))
    assert r.metrics["mode"] == "label-free"
    assert "conf_before" in r.metrics or r.metrics.get("reason")


def test_label_free_adaptation_changes_only_the_feature_transform(recognizer, caller):
    """A checkpoint without meta-learned label-free settings: without references only the per-mel-bin
    feature transform adapts (noisy pseudo-labels must not be learned by the adapters' tens of
    thousands of values or the LHUC scales); the rest of the profile is the meta-learned init."""
    audios, _ = caller
    assert "label_free" in recognizer.meta["adapt"]  # the shipped one has them (tests/asr_core/test_meta.py)
    plain = {k: v for k, v in recognizer.meta["adapt"].items() if k != "label_free"}
    recognizer = Recognizer(recognizer.model, dict(recognizer.meta, adapt=plain), recognizer.beam)
    r = adapt_caller(recognizer, audios, None, cfg=AdaptationConfig("label-free", min_confidence=0.0, guard=False))
    init = adaptation_init(recognizer.model, recognizer.meta)
    fixed = [k for k in init if not k.startswith("input_adapter.")]
    assert any(k.endswith(("ff1_b", "ff2_b")) for k in fixed), "the shipped model has feed-forward adapters"
    assert any(k.endswith(".lhuc") for k in fixed)
    assert all(torch.equal(r.params[k], init[k]) for k in fixed)
    assert all(not torch.equal(r.params[k], init[k]) for k in ("input_adapter.scale", "input_adapter.bias"))


def test_a_caller_without_profile_adapts_from_the_meta_learned_init(recognizer, caller):
    audios, texts = caller
    init, base = adaptation_init(recognizer.model, recognizer.meta), initial_params(recognizer.model)
    assert any(not torch.equal(init[k], base[k]) for k in init)  # the init is only good after adaptation
    r = adapt_caller(recognizer, audios, texts, cfg=AdaptationConfig("supervised", steps=0, guard=False))
    assert all(torch.equal(r.params[k], init[k]) for k in init)


def test_profile_from_adaptation_is_small_and_loads_back(recognizer, caller):
    audios, texts = caller
    r = adapt_caller(recognizer, audios, texts)
    data = Profile(recognizer.meta["sha256"], r.params, metrics=r.metrics).to_bytes()
    assert len(data) <= 256 * 1024
    shapes = {k: tuple(v.shape) for k, v in initial_params(recognizer.model).items()}
    p = Profile.from_bytes(data, model_version=recognizer.meta["sha256"], shapes=shapes)
    text = recognizer.transcribe(audios[0], 8000, params=p.params).text
    assert isinstance(text, str)


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "magic"}, "mode must be one of"),
    ({"steps": -1}, "steps must be in"),
    ({"min_confidence": 2.0}, "min_confidence"),
    ({"folds": 0}, "folds must be in"),
])
def test_bad_adaptation_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdaptationConfig(**kwargs)


def test_adapting_with_no_audio_or_missing_references_is_refused(recognizer, caller):
    audios, _ = caller
    with pytest.raises(ValueError, match="no audio"):
        adapt_caller(recognizer, [], [])
    with pytest.raises(ValueError, match="one reference text per utterance"):
        adapt_caller(recognizer, audios, ["only one"])
