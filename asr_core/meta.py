"""Per-caller adaptation and meta-learning over the model's speaker-adaptive group.

Functional throughout: parameters are a dict name -> tensor applied with
`torch.func.functional_call`; the shared model is never modified by adaptation.

    adapt(model, params, batch, steps, step_sizes)         # serving and the inner loop
    meta_step(model, tasks, algo, ...)                      # one outer update

Algorithms (speakers as tasks: support = adaptation utterances, query = others):
  maml     second order: the inner loop is differentiated through (create_graph=True)
  fomaml   first order: the query gradient at the adapted point updates the init
  reptile  the init moves toward the adapted parameters: init += eps * (adapted - init)
  metasgd  like fomaml, plus learned per-parameter step sizes (tensors shaped like the group)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asr_core.small.model import ADAPTER_NAMES, StreamingCTC
from asr_core.text import encode

ALGORITHMS = ("maml", "fomaml", "reptile", "metasgd")


@dataclass
class Batch:
    """Utterances of one speaker as features. feats: (batch, frames, n_mels) raw log-mel."""
    feats: Tensor
    frames: Tensor          # (batch,)
    labels: Tensor          # (sum of label lengths,) int32; empty for label-free batches
    label_lens: Tensor      # (batch,)

    def __len__(self) -> int:
        return self.feats.shape[0]

    def subset(self, idx: list[int]) -> "Batch":
        offs = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(self.label_lens.long(), 0)])
        labels = torch.cat([self.labels[offs[i]:offs[i + 1]] for i in idx]) if idx else self.labels[:0]
        t = int(self.frames[idx].max()) if idx else 0
        return Batch(self.feats[idx, :t], self.frames[idx], labels, self.label_lens[idx])


def make_batch(model: StreamingCTC, audios: list[Tensor], texts: list[str] | None = None) -> Batch:
    """(samples,) audios at the model's rate (+ reference texts, or None for label-free) -> Batch."""
    with torch.no_grad():
        feats = [model.features(a[None])[0] for a in audios]
    frames = torch.tensor([f.shape[0] for f in feats])
    x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True) if feats else torch.zeros(0, 0, model.cfg.n_mels)
    ids = [torch.tensor(encode(t), dtype=torch.int32) for t in texts] if texts is not None else []
    labels = torch.cat(ids) if ids else torch.zeros(0, dtype=torch.int32)
    label_lens = torch.tensor([i.numel() for i in ids]) if ids else torch.zeros(len(feats), dtype=torch.long)
    return Batch(x, frames, labels, label_lens)


class _Encoder(nn.Module):
    """Features -> log-probs, as a module so functional_call can swap the adaptive group."""

    def __init__(self, model: StreamingCTC):
        super().__init__()
        self.model = model

    def forward(self, feats: Tensor, frames: Tensor) -> tuple[Tensor, Tensor]:
        m = self.model
        return m.encode(m.input_adapter((feats - m.feat_mean) / m.feat_std), frames)


def log_probs(model: StreamingCTC, params: dict[str, Tensor], batch: Batch) -> tuple[Tensor, Tensor]:
    """(batch, T, vocab) log-probs and lengths with `params` in place of the model's own."""
    return torch.func.functional_call(_Encoder(model), {f"model.{k}": v for k, v in params.items()},
                                      (batch.feats, batch.frames), strict=False)


def ctc_loss(model: StreamingCTC, params: dict[str, Tensor], batch: Batch, twice_differentiable: bool = False) -> Tensor:
    logp, lens = log_probs(model, params, batch)
    if twice_differentiable:
        return ctc_loss_autograd(logp, batch.labels, lens, batch.label_lens)
    return F.ctc_loss(logp.transpose(0, 1), batch.labels, lens, batch.label_lens, zero_infinity=True)


_NEG = -1e4  # "log zero" that keeps gradients finite


def ctc_loss_autograd(logp: Tensor, labels: Tensor, lens: Tensor, label_lens: Tensor) -> Tensor:
    """CTC loss written with plain tensor ops, so it can be differentiated twice (second-order MAML).

    Same value as F.ctc_loss(reduction="mean", zero_infinity=True): per utterance -log p(labels)
    divided by its label length, averaged. logp: (batch, T, vocab).
    """
    losses, offset = [], 0
    for b in range(logp.shape[0]):
        n, t_len = int(label_lens[b]), int(lens[b])
        tgt = labels[offset:offset + n].long()
        offset += n
        ext = torch.zeros(2 * n + 1, dtype=torch.long)
        ext[1::2] = tgt
        lp = logp[b, :t_len][:, ext]                                  # (T, S)
        s_len = ext.numel()
        skip = torch.zeros(s_len, dtype=torch.bool)
        skip[2:] = (ext[2:] != 0) & (ext[2:] != ext[:-2])
        alpha = torch.full((s_len,), _NEG).index_put((torch.tensor([0]),), lp[0, :1])
        if s_len > 1:
            alpha = alpha.index_put((torch.tensor([1]),), lp[0, 1:2])
        for t in range(1, t_len):
            prev1 = torch.cat([alpha.new_full((1,), _NEG), alpha[:-1]])
            prev2 = torch.where(skip, torch.cat([alpha.new_full((2,), _NEG), alpha[:-2]]), alpha.new_full((s_len,), _NEG))
            alpha = torch.logsumexp(torch.stack([alpha, prev1, prev2]), dim=0) + lp[t]
        ll = torch.logsumexp(alpha[-2:], dim=0) if s_len > 1 else alpha[-1]
        loss = -ll / max(n, 1)
        losses.append(torch.where(torch.isfinite(loss) & (loss < -_NEG / 2), loss, loss.new_zeros(())))
    return torch.stack(losses).mean()


def entropy_loss(model: StreamingCTC, params: dict[str, Tensor], batch: Batch, twice_differentiable: bool = True) -> Tensor:
    """Mean per-frame posterior entropy (label-free test-time adaptation)."""
    logp, lens = log_probs(model, params, batch)
    mask = (torch.arange(logp.shape[1])[None, :] < lens[:, None]).float()
    ent = -(logp.exp() * logp).sum(-1)
    return (ent * mask).sum() / mask.sum().clamp(min=1)


LOSSES = {"ctc": ctc_loss, "entropy": entropy_loss}


def initial_params(model: StreamingCTC) -> dict[str, Tensor]:
    """The model's current values of its adaptive group, detached (a caller with no profile)."""
    own = dict(model.named_parameters())
    return {k: own[k].detach().clone() for k in model.adaptive_parameter_names()}


def adaptation_init(model: StreamingCTC, meta: dict) -> dict[str, Tensor]:
    """Where adaptation starts for a caller with no profile: the checkpoint's meta-learned init
    (its `adapt` section), else the model's own values."""
    init = (meta.get("adapt") or {}).get("init")
    return {k: v.detach().clone() for k, v in init.items()} if init else initial_params(model)


def load_params(model: StreamingCTC, params: dict[str, Tensor]) -> None:
    """Copy `params` (names of the model's parameters) into the model in place. Meta-training uses
    it to move a checkpoint's adaptation init into the model and the pre-meta values back out."""
    own = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in params.items():
            own[k].copy_(v)


def adapt(model: nn.Module, params: dict[str, Tensor], batch: Batch, steps: int,
          step_sizes: dict[str, Tensor] | float, *, loss="ctc", create_graph: bool = False) -> dict[str, Tensor]:
    """`steps` gradient steps on `batch` from `params`: p <- p - step_size * grad. Returns new params.

    Used unchanged by meta-training (params connected to the init, create_graph for MAML)
    and by production adaptation (detached params). `loss` is "ctc", "entropy", or any
    callable (model, params, batch[, twice_differentiable=...]) -> scalar tensor, so other
    models (e.g. a Whisper backbone) adapt through the same function.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if len(batch) == 0:
        raise ValueError("cannot adapt on an empty batch")
    fn = loss if callable(loss) else LOSSES[loss]
    params = {k: (v if v.requires_grad else v.detach().requires_grad_()) for k, v in params.items()}
    with torch.enable_grad():
        for _ in range(steps):
            value = fn(model, params, batch, twice_differentiable=True) if create_graph else fn(model, params, batch)
            grads = torch.autograd.grad(value, list(params.values()), create_graph=create_graph, allow_unused=True)
            params = {k: p - (step_sizes[k] if isinstance(step_sizes, dict) else step_sizes)
                      * (g if g is not None else torch.zeros_like(p))
                      for (k, p), g in zip(params.items(), grads)}
    return params


def detached(params: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in params.items()}


class MetaLearner(nn.Module):
    """Holds what meta-learning learns beside the model: per-parameter log step sizes (Meta-SGD)."""

    def __init__(self, model: StreamingCTC, algo: str, inner_lr: float, learn_base: bool = False,
                 lhuc_lr: float | None = None, adapter_lr: float | None = None,
                 init_sizes: dict[str, Tensor] | None = None):
        """inner_lr: step size of the inner loop (the initial value for metasgd); lhuc_lr, adapter_lr:
        separate step sizes for the LHUC scales and the feed-forward adapters (their gradients differ
        in scale from the feature transform's by orders of magnitude). init_sizes: per-parameter
        starting step sizes instead (e.g. an earlier meta-learned set)."""
        super().__init__()
        if algo not in ALGORITHMS:
            raise ValueError(f"algo must be one of {ALGORITHMS}, got {algo!r}")
        if inner_lr <= 0 or any(v is not None and v <= 0 for v in (lhuc_lr, adapter_lr)):
            raise ValueError(f"inner step sizes must be > 0, got {inner_lr}, {lhuc_lr}, {adapter_lr}")
        self.model, self.algo, self.inner_lr, self.learn_base = model, algo, inner_lr, learn_base
        own = dict(model.named_parameters())
        def size(name: str) -> float:
            if lhuc_lr is not None and name.endswith(".lhuc"):
                return lhuc_lr
            if adapter_lr is not None and name.rsplit(".", 1)[-1] in ADAPTER_NAMES:
                return adapter_lr
            return inner_lr

        if init_sizes is not None:
            if set(init_sizes) != set(model.adaptive_parameter_names()) or any(
                    init_sizes[k].shape != own[k].shape or not (init_sizes[k] > 0).all() for k in init_sizes):
                raise ValueError("init_sizes must be positive step sizes for exactly the model's adaptive group")
            log_init = {k.replace(".", "__"): nn.Parameter(v.detach().float().log().clone()) for k, v in init_sizes.items()}
        else:
            log_init = {k.replace(".", "__"): nn.Parameter(torch.full_like(own[k], math.log(size(k))))
                        for k in model.adaptive_parameter_names()}
        self.log_lr = nn.ParameterDict(log_init)
        self.log_lr.requires_grad_(algo == "metasgd")

    def step_sizes(self) -> dict[str, Tensor]:
        """Per-parameter step sizes: learned for metasgd, fixed otherwise."""
        sizes = {k.replace("__", "."): v.exp() for k, v in self.log_lr.items()}
        return sizes if self.algo == "metasgd" else {k: v.detach() for k, v in sizes.items()}

    def outer_parameters(self) -> list[dict]:
        own = dict(self.model.named_parameters())
        names = set(self.model.adaptive_parameter_names())
        groups = [{"params": [own[k] for k in sorted(names)], "name": "init"}]
        if self.algo == "metasgd":
            groups.append({"params": list(self.log_lr.parameters()), "name": "step_sizes"})
        if self.learn_base and self.algo != "reptile":
            groups.append({"params": [p for k, p in own.items() if k not in names], "name": "base"})
        return groups

    def task_loss(self, support: Batch, query: Batch, steps: int, scale: float = 1.0) -> Tensor:
        """Accumulates meta-gradients (times `scale`) for one task into .grad; returns the query loss
        after adaptation."""
        own = dict(self.model.named_parameters())
        init = {k: own[k] for k in self.model.adaptive_parameter_names()}
        if self.algo == "reptile":
            joint = _concat(support, query)
            adapted = adapt(self.model, detached(init), joint, steps, self.step_sizes())
            for k, p in init.items():  # the Reptile direction, given to the outer optimizer as a gradient
                g = (p.detach() - adapted[k].detach()) * scale
                p.grad = g if p.grad is None else p.grad + g
            with torch.no_grad():
                return ctc_loss(self.model, detached(adapted), query)
        adapted = adapt(self.model, init, support, steps, self.step_sizes(), create_graph=self.algo == "maml")
        q = ctc_loss(self.model, adapted, query)
        (q * scale).backward()
        return q.detach()


def _concat(a: Batch, b: Batch) -> Batch:
    t = max(a.feats.shape[1], b.feats.shape[1])
    pad = lambda x: F.pad(x, (0, 0, 0, t - x.shape[1]))  # noqa: E731
    return Batch(torch.cat([pad(a.feats), pad(b.feats)]), torch.cat([a.frames, b.frames]),
                 torch.cat([a.labels, b.labels]), torch.cat([a.label_lens, b.label_lens]))
