import pytest
import torch
from hypothesis import given, settings, strategies as st

from asr_core.small.model import ModelConfig, StreamingCTC


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, n_blocks=3, right_context=(1, 1, 0), dropout=0.0)
    return StreamingCTC(cfg).eval()


def _stream(model, audio, chunk):
    state, outs = model.initial_state(), []
    for i in range(0, audio.numel(), chunk):
        out, state = model.step(audio[i:i + chunk], state)
        outs.append(out)
    out, state = model.step(audio[:0], state, flush=True)
    outs.append(out)
    return torch.cat(outs)


@pytest.fixture(scope="module")
def adapted_model(model):
    """The same model with rank-2 adapters whose B matrices are non-zero (as after adaptation)."""
    m = model.with_adapters(2)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith(("_b",)):
                p.normal_(0, 0.3, generator=torch.Generator().manual_seed(len(name)))
    return m.eval()


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 6000), chunk=st.integers(1, 3000), seed=st.integers(0, 1000))
def test_streaming_output_equals_whole_utterance_output(model, n, chunk, seed):
    audio = torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 0.3
    with torch.no_grad():
        whole, lengths = model(audio[None], torch.tensor([n]))
    streamed = _stream(model, audio, chunk)
    assert streamed.shape[0] == int(lengths[0]) == whole.shape[1]
    assert torch.allclose(streamed, whole[0], atol=1e-4)


@settings(max_examples=10, deadline=None)
@given(n=st.integers(0, 6000), chunk=st.integers(1, 3000), seed=st.integers(0, 1000))
def test_streaming_with_adapters_equals_whole_utterance_output(adapted_model, n, chunk, seed):
    audio = torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 0.3
    with torch.no_grad():
        whole, _ = adapted_model(audio[None], torch.tensor([n]))
    assert torch.allclose(_stream(adapted_model, audio, chunk), whole[0], atol=1e-4)


def test_adding_adapters_changes_nothing_until_they_adapt(model, adapted_model):
    audio = torch.randn(3000, generator=torch.Generator().manual_seed(3)) * 0.3
    with_adapters = model.with_adapters(2)
    with torch.no_grad():
        before, _ = model(audio[None], torch.tensor([3000]))
        after, _ = with_adapters(audio[None], torch.tensor([3000]))
        moved, _ = adapted_model(audio[None], torch.tensor([3000]))
    assert torch.allclose(before, after, atol=1e-6)
    assert not torch.allclose(before, moved, atol=1e-3)
    names = with_adapters.adaptive_parameter_names()
    assert set(model.adaptive_parameter_names()) < set(names)
    assert {n.rsplit(".", 1)[-1] for n in names} >= {"ff1_b", "ff2_b"}  # B per caller; A is shared
    assert not any(n.endswith("_a") for n in names)
    assert with_adapters.cfg.adapter_rank == 2 and model.cfg.adapter_rank == 0
    with pytest.raises(ValueError, match="already has rank-2 adapters"):
        with_adapters.with_adapters(2)


def test_batched_forward_ignores_padding(model):
    a, b = torch.randn(4000) * 0.2, torch.randn(2500) * 0.2
    batch = torch.zeros(2, 4000)
    batch[0], batch[1, :2500] = a, b
    with torch.no_grad():
        out, lens = model(batch, torch.tensor([4000, 2500]))
        alone, _ = model(b[None], torch.tensor([2500]))
    assert torch.allclose(out[1, : int(lens[1])], alone[0], atol=1e-4)


def test_adaptive_group_is_small_and_named(model):
    names = model.adaptive_parameter_names()
    params = dict(model.named_parameters())
    assert all(n in params for n in names)
    assert sum(params[n].numel() for n in names) < 10_000


@pytest.mark.parametrize("kwargs, message", [
    ({"sample_rate": 44100}, "expected sample_rate 8000 or 16000, got 44100"),
    ({"n_blocks": 2}, "right_context has 8 entries for 2 blocks"),
    ({"dropout": 1.5}, "dropout must be in"),
    ({"adapter_rank": -1}, "adapter_rank must be >= 0, got -1"),
])
def test_config_validation_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)
