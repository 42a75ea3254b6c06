"""Meta-learning on a tiny model and a tiny synthetic task: real numbers, real assertions."""
import pytest
import torch

from asr_core.meta import ALGORITHMS, Batch, MetaLearner, adapt, ctc_loss, detached, initial_params, make_batch
from asr_core.small.model import ModelConfig, StreamingCTC
from asr_core.profile import Profile, ProfileError


def _tone_batch(model, freq, texts, seed):
    g = torch.Generator().manual_seed(seed)
    audios = []
    for i, _ in enumerate(texts):
        t = torch.arange(4000) / 8000
        audios.append(0.3 * torch.sin(2 * torch.pi * (freq + 40 * i) * t) + 0.02 * torch.randn(4000, generator=g))
    return make_batch(model, audios, texts)


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    model = StreamingCTC(ModelConfig(d_model=24, n_blocks=2, right_context=(1, 0), dropout=0.0))
    support = _tone_batch(model, 500, ["yes", "no", "yes no"], 1)
    query = _tone_batch(model, 520, ["no yes", "yes"], 2)
    return model, support, query


def test_adapt_reduces_the_support_loss_without_touching_the_model(tiny):
    model, support, _ = tiny
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    p0 = initial_params(model)
    loss0 = float(ctc_loss(model, p0, support).detach())
    p3 = adapt(model, p0, support, steps=3, step_sizes=0.5)
    assert float(ctc_loss(model, p3, support).detach()) < loss0
    assert all(torch.equal(before_state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_each_algorithm_reduces_the_query_loss_after_adaptation(tiny, algo):
    model, support, query = tiny
    learner = MetaLearner(model, algo, inner_lr=0.3)
    opt = torch.optim.Adam([p for g in learner.outer_parameters() for p in g["params"]], lr=0.05)

    def query_after_adaptation():
        adapted = adapt(model, initial_params(model), support, 2, detached_sizes(learner))
        return float(ctc_loss(model, detached(adapted), query).detach())

    before = query_after_adaptation()
    for _ in range(15):
        opt.zero_grad()
        learner.task_loss(support, query, steps=2)
        opt.step()
    assert query_after_adaptation() < before


def detached_sizes(learner):
    s = learner.step_sizes()
    return {k: v.detach() for k, v in s.items()} if isinstance(s, dict) else s


def test_metasgd_learns_step_sizes_shaped_like_the_group(tiny):
    model, support, query = tiny
    learner = MetaLearner(model, "metasgd", inner_lr=0.3)
    sizes = learner.step_sizes()
    own = dict(model.named_parameters())
    assert set(sizes) == set(model.adaptive_parameter_names())
    assert all(sizes[k].shape == own[k].shape for k in sizes)


def test_adapt_gives_the_same_result_in_training_and_serving(tiny):
    model, support, _ = tiny
    own = dict(model.named_parameters())
    live = {k: own[k] for k in model.adaptive_parameter_names()}          # meta-training: attached to the init
    served = adapt(model, initial_params(model), support, 2, 0.4)        # serving: detached copy
    trained = adapt(model, live, support, 2, 0.4)
    assert all(torch.allclose(served[k], trained[k].detach(), atol=1e-6) for k in served)


def test_empty_batch_and_negative_steps_are_refused(tiny):
    model, support, _ = tiny
    with pytest.raises(ValueError, match="empty batch"):
        adapt(model, initial_params(model), support.subset([]), 1, 0.1)
    with pytest.raises(ValueError, match="steps must be"):
        adapt(model, initial_params(model), support, -1, 0.1)


def test_profile_round_trip_and_corrupt_profiles(tiny):
    model, support, _ = tiny
    params = detached(adapt(model, initial_params(model), support, 1, 0.1))
    shapes = {k: tuple(v.shape) for k, v in params.items()}
    data = Profile("abc123", params, version=3, metrics={"wer_before": 0.2, "nan": float("nan")}).to_bytes()
    assert len(data) < 256 * 1024
    back = Profile.from_bytes(data, model_version="abc123", shapes=shapes)
    assert back.version == 3 and back.metrics["wer_before"] == 0.2
    assert all(torch.equal(back.params[k], params[k]) for k in params)
    with pytest.raises(ProfileError, match="corrupt"):
        Profile.from_bytes(data[: len(data) // 2], model_version="abc123", shapes=shapes)
    with pytest.raises(ProfileError, match="empty"):
        Profile.from_bytes(b"", model_version="abc123", shapes=shapes)
    with pytest.raises(ProfileError, match="not for the current model"):
        Profile.from_bytes(data, model_version="other", shapes=shapes)
    wrong = dict(shapes, **{next(iter(shapes)): (1, 2)})
    with pytest.raises(ProfileError, match="wrong shape"):
        Profile.from_bytes(data, model_version="abc123", shapes=wrong)
    bad = dict(params)
    bad[next(iter(bad))] = torch.full_like(bad[next(iter(bad))], float("inf"))
    with pytest.raises(ProfileError, match="non-finite"):
        Profile.from_bytes(Profile("abc123", bad).to_bytes(), model_version="abc123", shapes=shapes)


def test_autograd_ctc_matches_torch_ctc(tiny):
    import torch.nn.functional as F
    from asr_core.meta import ctc_loss_autograd, log_probs
    model, support, _ = tiny
    logp, lens = log_probs(model, initial_params(model), support)
    ref = F.ctc_loss(logp.transpose(0, 1), support.labels, lens, support.label_lens, zero_infinity=True)
    assert torch.allclose(ctc_loss_autograd(logp, support.labels, lens, support.label_lens), ref, rtol=1e-4)


def test_meta_train_keeps_the_base_values_in_the_model_and_the_learned_init_apart(tmp_path):
    """`meta-train --adapter-rank`: the written checkpoint recognizes callers without a profile with
    the pre-meta values (adapters off), and carries the learned init in its adapt section."""
    from asr_core.small.checkpoint import BASE_CTC_CHECKPOINT, load_checkpoint
    from asr_core.corpus.build import CorpusConfig, build_corpus
    from asr_core.meta import adaptation_init
    from asr_core.small.meta_train import MetaTrainConfig, meta_train

    manifest = build_corpus(CorpusConfig(out=str(tmp_path / "c"), seed=4, train_speakers=2, dev_speakers=1,
                                         test_speakers=0, train_utts=4, dev_utts=4, workers=2))
    out = meta_train(MetaTrainConfig(manifest=manifest, checkpoint=BASE_CTC_CHECKPOINT, out=str(tmp_path / "m"),
                                     algo="metasgd", support=2, query=2, meta_batch=1, outer_steps=2, eval_every=1,
                                     adapter_rank=2, outer_lr=0.05, threads=1))
    model, meta = load_checkpoint(out)
    base, _ = load_checkpoint(BASE_CTC_CHECKPOINT)
    own, init = initial_params(model), adaptation_init(model, meta)
    assert model.cfg.adapter_rank == 2 and set(init) == set(own)
    base_own = dict(base.named_parameters())
    for k, v in own.items():  # the pre-meta values: the base model's own, adapters' B at zero
        assert torch.equal(v, base_own[k].half().float()) if k in base_own else not v.abs().any(), k
    assert any(not torch.allclose(init[k], own[k]) for k in own)  # meta-learning moved the init


def test_label_free_meta_training_adds_its_section_and_leaves_the_rest(tmp_path):
    """`meta-train --label-free` from the shipped checkpoint: support sets labelled by the model's own
    confident transcripts; the written checkpoint has the same weights and supervised adaptation,
    plus an `adapt.label_free` section that the product's label-free adaptation then starts from."""
    from asr_core.adaptation import AdaptationConfig, adapt_caller, adaptation_settings
    from asr_core.audio import load_audio
    from asr_core.small.checkpoint import load_checkpoint
    from asr_core.corpus.build import CorpusConfig, build_corpus
    from asr_core.manifest import read_manifest
    from asr_core.small.meta_train import MetaTrainConfig, meta_train
    from asr_core.small.recognizer import Recognizer

    with pytest.raises(ValueError, match="label-free meta-training learns only the adaptation"):
        MetaTrainConfig(manifest="m.tsv", checkpoint=None, out="o", label_free=True, learn_base=True)
    manifest = build_corpus(CorpusConfig(out=str(tmp_path / "c"), seed=5, train_speakers=3, dev_speakers=1,
                                         test_speakers=0, train_utts=6, dev_utts=4, workers=2))
    out = meta_train(MetaTrainConfig(manifest=manifest, checkpoint=None, out=str(tmp_path / "m"), label_free=True,
                                     support=3, query=3, meta_batch=2, outer_steps=2, eval_every=1, outer_lr=0.05,
                                     min_confidence=0.3, threads=1))
    assert out.endswith("metasgd_label_free.pt")
    model, meta = load_checkpoint(out)
    shipped, ship_meta = load_checkpoint()
    assert all(torch.equal(v, shipped.state_dict()[k]) for k, v in model.state_dict().items())
    for part in ("init", "step_sizes"):
        assert all(torch.equal(v, ship_meta["adapt"][part][k]) for k, v in meta["adapt"][part].items())
    lf = meta["adapt"]["label_free"]
    assert lf["steps"] == 3 and meta["meta_train_label_free"]["outer_step"] in (0, 1, 2)
    # the step sizes started from the supervised ones, all but the feature transform's cut to a tenth
    sup = ship_meta["adapt"]["step_sizes"]
    assert lf["step_sizes"]["blocks.0.lhuc"].mean() < sup["blocks.0.lhuc"].mean() * 0.5

    # label-free meta-training again from that checkpoint continues from its label-free settings
    again = meta_train(MetaTrainConfig(manifest=manifest, checkpoint=out, out=str(tmp_path / "m2"), label_free=True,
                                       support=3, query=3, meta_batch=2, outer_steps=1, eval_every=1, outer_lr=0.01,
                                       min_confidence=0.3, threads=1))
    lf2 = load_checkpoint(again)[1]["adapt"]["label_free"]
    assert torch.allclose(lf2["step_sizes"]["blocks.0.lhuc"], lf["step_sizes"]["blocks.0.lhuc"], rtol=0.05)

    rec = Recognizer.load(out, decoder="greedy")
    steps, sizes, init = adaptation_settings(rec, "label-free")
    assert steps == 3 and all(torch.equal(sizes[k], lf["step_sizes"][k]) for k in sizes)
    assert all(torch.equal(init[k], lf["init"][k]) for k in init)
    audios = [load_audio(u.audio, 8000) for u in read_manifest(manifest, ("dev",))]
    r = adapt_caller(rec, audios, None, cfg=AdaptationConfig("label-free", min_confidence=0.0, guard=False))
    labelled = [(a, t.text) for a in audios for t in [rec.transcribe(a, 8000)] if t.text]
    expected = adapt(rec.model, lf["init"], make_batch(rec.model, [a for a, _ in labelled], [t for _, t in labelled]),
                     3, sizes)
    assert r.accepted and all(torch.allclose(r.params[k], expected[k], atol=1e-5) for k in expected)
