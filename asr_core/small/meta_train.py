"""`python -m asr_core meta-train`: meta-learn the adaptive group's starting point (and step sizes).

Tasks are training speakers: support = `support` utterances, query = `query` other
utterances of the same speaker. Starts from a trained checkpoint; resumable
(`meta_state_<algo>.pt`); keeps the checkpoint whose dev-speaker query loss after
adaptation is lowest. The written checkpoint is the base checkpoint with the
adaptive group replaced by the learned init, and an `adapt` section in its meta:
{algo, steps, step_sizes (tensors for metasgd, else a number)}.

`--label-free` meta-learns what the product uses for callers nobody has verified: the support
set's labels are the model's own confident transcripts (beam search + LM from the model a caller
without a profile gets, kept from `min_confidence`, as the product's pseudo-labels), the query's
are the references. Only the init and step sizes of that adaptation are learned (first-order);
the written checkpoint is the input one, unchanged, plus `adapt.label_free`.
"""
from __future__ import annotations

import json
import os
import random
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass

import torch

from asr_core.small.checkpoint import load_checkpoint, save_checkpoint
from asr_core.manifest import read_manifest
from asr_core.meta import (ALGORITHMS, Batch, MetaLearner, adapt, adaptation_init, ctc_loss, detached, initial_params,
                           load_params, log_probs)
from asr_core.text import encode
from asr_core.small.train import _features


@dataclass(frozen=True)
class MetaTrainConfig:
    manifest: str
    checkpoint: str
    out: str
    algo: str = "metasgd"
    inner_steps: int = 3
    inner_lr: float = 1.0
    lhuc_lr: float = 50.0
    support: int = 5
    query: int = 5
    meta_batch: int = 4
    outer_steps: int = 300
    outer_lr: float = 3e-3
    learn_base: bool = False
    base_lr: float = 1e-5
    eval_every: int = 50
    seed: int = 0
    threads: int = 0
    max_speakers: int = 0
    adapter_rank: int = 0       # > 0: add feed-forward adapters of this rank to a checkpoint without them
    adapter_lr: float = 2.0
    label_free: bool = False    # meta-learn adaptation on the model's own confident transcripts
    min_confidence: float = 0.75

    def __post_init__(self) -> None:
        if self.algo not in ALGORITHMS:
            raise ValueError(f"algo must be one of {ALGORITHMS}, got {self.algo!r}")
        for name in ("inner_steps", "support", "query", "meta_batch", "outer_steps", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.adapter_rank < 0:
            raise ValueError(f"adapter_rank must be >= 0, got {self.adapter_rank}")
        if min(self.inner_lr, self.outer_lr, self.lhuc_lr, self.adapter_lr, self.base_lr) <= 0:
            raise ValueError("learning rates must be > 0")
        if self.label_free and (self.learn_base or self.adapter_rank or self.algo not in ("metasgd", "fomaml")):
            raise ValueError("label-free meta-training learns only the adaptation of a meta-learned checkpoint: "
                             "algo metasgd or fomaml, without --learn-base or --adapter-rank")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {self.min_confidence}")


def _by_speaker(data, utts) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, (_f, _l, text) in enumerate(data):
        groups[utts[i]].append(i)
    return groups


def _batch(data, idx: list[int]) -> Batch:
    feats = [data[i][0].float() for i in idx]
    return Batch(torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), torch.tensor([f.shape[0] for f in feats]),
                 torch.cat([data[i][1] for i in idx]), torch.tensor([data[i][1].numel() for i in idx]))


def _load_split(model, manifest: str, split: str, max_speakers: int):
    utts = read_manifest(manifest, (split,))
    if max_speakers:
        keep = sorted({u.speaker for u in utts})[:max_speakers]
        utts = [u for u in utts if u.speaker in keep]
    data, speakers = [], []
    for u in utts:  # _features drops unusable utterances; keep speakers aligned
        got = _features(model, [u], "cpu")
        if got:
            data.append(got[0])
            speakers.append(u.speaker)
    return data, speakers


def dev_query_loss(model, learner: MetaLearner, tasks: list[tuple[Batch, Batch]], steps: int) -> float:
    """Mean query loss on dev speakers after adapting on their support; +inf without dev speakers
    (then every evaluation saves: the last checkpoint is kept)."""
    if not tasks:
        return float("inf")
    sizes = {k: v.detach() for k, v in learner.step_sizes().items()}
    total = 0.0
    for support, query in tasks:
        adapted = adapt(model, initial_params(model), support, steps, sizes)
        with torch.no_grad():
            total += float(ctc_loss(model, detached(adapted), query))
    return total / max(1, len(tasks))


def meta_train(cfg: MetaTrainConfig, log=sys.stderr) -> str:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    os.makedirs(cfg.out, exist_ok=True)
    model, base_meta, start, sup, label_free = _start_model(cfg)
    t0 = time.time()
    data, spk = _load_split(model, cfg.manifest, "train", cfg.max_speakers)
    dev_data, dev_spk = _load_split(model, cfg.manifest, "dev", 0)
    groups = {s: ix for s, ix in _by_speaker(data, spk).items() if len(ix) >= cfg.support + cfg.query}
    if not groups:
        raise ValueError(f"no training speaker has {cfg.support + cfg.query} utterances")
    support_batch = _batch
    if cfg.label_free:
        support_batch = _PseudoLabels(model, start, cfg.checkpoint, cfg.min_confidence).batch
    dev_tasks = _dev_tasks(dev_data, dev_spk, support_batch)
    print(f"meta-train {cfg.algo}{' label-free' if cfg.label_free else ''}: {len(groups)} train speakers, "
          f"{len(dev_tasks)} dev speakers, features in {time.time() - t0:.0f}s", file=log, flush=True)
    learner = MetaLearner(model, cfg.algo, cfg.inner_lr, cfg.learn_base, lhuc_lr=cfg.lhuc_lr,
                          adapter_lr=cfg.adapter_lr, init_sizes=_initial_step_sizes(cfg, model, sup, label_free))
    opt = _outer_optimizer(cfg, learner)
    name = f"{cfg.algo}_label_free" if cfg.label_free else cfg.algo
    state_path, best_path = os.path.join(cfg.out, f"meta_state_{name}.pt"), os.path.join(cfg.out, f"{name}.pt")
    step, best = 0, float("inf")
    if os.path.exists(state_path):
        st = torch.load(state_path, weights_only=True)
        model.load_state_dict(st["model"])
        learner.load_state_dict(st["learner"], strict=False)
        opt.load_state_dict(st["opt"])
        step, best = st["step"], st["best"]
        print(f"resumed at outer step {step}", file=log, flush=True)
    if step == 0:
        best = dev_query_loss(model, learner, dev_tasks, cfg.inner_steps)
        print(f"step 0: dev query loss after {cfg.inner_steps} steps {best:.4f}", file=log, flush=True)
        _save(model, learner, cfg, best_path, base_meta, best, step, start)
    speakers = sorted(groups)
    t_start = time.time()
    while step < cfg.outer_steps:
        opt.zero_grad(set_to_none=True)
        qsum = 0.0
        for support, query in _tasks(cfg, rng, groups, speakers, data, support_batch):
            qsum += float(learner.task_loss(support, query, cfg.inner_steps, scale=1.0 / cfg.meta_batch))
        opt.step()
        step += 1
        if step % 10 == 0:
            el = time.time() - t_start
            print(f"step {step}/{cfg.outer_steps} query loss {qsum / cfg.meta_batch:.4f} {el:.0f}s", file=log, flush=True)
        if step % cfg.eval_every == 0 or step == cfg.outer_steps:
            dev = dev_query_loss(model, learner, dev_tasks, cfg.inner_steps)
            print(f"step {step}: dev query loss after adaptation {dev:.4f} (best {best:.4f})", file=log, flush=True)
            if dev < best or dev == float("inf"):
                best = dev
                _save(model, learner, cfg, best_path, base_meta, best, step, start)
            torch.save({"model": model.state_dict(), "learner": learner.state_dict(), "opt": opt.state_dict(),
                        "step": step, "best": best}, state_path + ".part")
            os.replace(state_path + ".part", state_path)
    return best_path


def _start_model(cfg: MetaTrainConfig):
    """The checkpoint's model (with adapters when asked), set to the adaptive group meta-training
    continues from; returns (model, its metadata, the group before meta-learning, the supervised
    adaptation's metadata, the label-free one's)."""
    model, base_meta = load_checkpoint(cfg.checkpoint or None)
    if cfg.adapter_rank and model.cfg.adapter_rank not in (0, cfg.adapter_rank):
        raise ValueError(f"the checkpoint already has rank-{model.cfg.adapter_rank} adapters, not {cfg.adapter_rank}")
    if cfg.adapter_rank and not model.cfg.adapter_rank:
        model = model.with_adapters(cfg.adapter_rank, seed=cfg.seed)
    start = initial_params(model)  # the adaptive group before meta-learning: what no-profile callers get
    sup = base_meta.get("adapt") or {}
    label_free = sup.get("label_free") or {}
    if cfg.label_free and not sup.get("init"):
        raise ValueError(f"{cfg.checkpoint or 'the shipped checkpoint'} has no meta-learned adaptation to start "
                         "label-free meta-training from")
    # continue from a previous meta-learned init (label-free: its own, else the supervised one)
    load_params(model, label_free.get("init") or adaptation_init(model, base_meta))
    model.eval()  # no dropout: adaptation behaves as in serving
    return model, base_meta, start, sup, label_free


def _dev_tasks(dev_data, dev_spk: list[str], support_batch) -> list[tuple[Batch, Batch]]:
    """(support, query) of each dev speaker with 4 or more utterances: the first half adapts."""
    dev_groups = {s: ix for s, ix in _by_speaker(dev_data, dev_spk).items() if len(ix) >= 4}
    dev_tasks = [(support_batch(dev_data, ix[: len(ix) // 2]), _batch(dev_data, ix[len(ix) // 2:]))
                 for ix in dev_groups.values()]
    return [(su, q) for su, q in dev_tasks if su is not None]


def _initial_step_sizes(cfg: MetaTrainConfig, model, sup: dict, label_free: dict) -> dict | None:
    """Where label-free meta-training starts its step sizes; None (the learner's own) when supervised."""
    if cfg.label_free and label_free.get("step_sizes"):  # continue from earlier label-free step sizes
        return {k: v.clone() for k, v in label_free["step_sizes"].items()}
    if cfg.label_free:  # from the supervised step sizes, all but the feature transform's cut to a tenth
        own = dict(model.named_parameters())
        return {k: (v if isinstance(v, torch.Tensor) else torch.full_like(own[k], v))
                * (1.0 if k.startswith("input_adapter.") else 0.1) for k, v in _sizes(model, sup).items()}
    return None


def _outer_optimizer(cfg: MetaTrainConfig, learner: MetaLearner) -> torch.optim.Optimizer:
    groups_opt = []
    for g in learner.outer_parameters():
        lr = cfg.base_lr if g["name"] == "base" else cfg.outer_lr
        groups_opt.append({"params": g["params"], "lr": lr})
    return torch.optim.Adam(groups_opt) if cfg.algo != "reptile" else torch.optim.SGD(groups_opt)


def _tasks(cfg: MetaTrainConfig, rng: random.Random, groups: dict[str, list[int]], speakers: list[str], data,
           support_batch) -> list[tuple[Batch, Batch]]:
    """One meta-batch of (support, query) tasks: distinct speakers; label-free, speakers drawn until
    `meta_batch` tasks have a confident pseudo-label to adapt on (as a product run without one stops)."""
    if not cfg.label_free:
        return [(_batch(data, ix[: cfg.support]), _batch(data, ix[cfg.support:]))
                for s in rng.sample(speakers, min(cfg.meta_batch, len(speakers)))
                for ix in [rng.sample(groups[s], cfg.support + cfg.query)]]
    tasks: list[tuple[Batch, Batch]] = []
    for _ in range(100 * cfg.meta_batch):
        ix = rng.sample(groups[rng.choice(speakers)], cfg.support + cfg.query)
        support = support_batch(data, ix[: cfg.support])
        if support is not None:
            tasks.append((support, _batch(data, ix[cfg.support:])))
            if len(tasks) == min(cfg.meta_batch, len(speakers)):
                return tasks
    raise ValueError(f"the training speakers' utterances give too few pseudo-labels with confidence >= "
                     f"{cfg.min_confidence}: nothing to meta-learn label-free adaptation from")


def _save(model, learner: MetaLearner, cfg: MetaTrainConfig, path: str, base_meta: dict, dev_loss: float, step: int,
          start: dict[str, torch.Tensor]) -> None:
    """The checkpoint keeps the adaptive group's pre-meta-learning values `start` in the model (what
    callers without a profile get) and the learned init in its adapt section. Label-free: the input
    checkpoint as it was (weights, supervised adaptation) plus `adapt.label_free`."""
    meta = {k: v for k, v in base_meta.items() if k not in ("sha256", "path", "adapt")}
    learned = initial_params(model)
    section = {"algo": cfg.algo, "steps": cfg.inner_steps, "init": learned,
               "step_sizes": {k: v.detach().clone() for k, v in learner.step_sizes().items()}}
    run = dict(asdict(cfg), dev_query_loss=round(dev_loss, 4), outer_step=step)
    if cfg.label_free:
        meta["meta_train_label_free"] = run
        section = dict(base_meta["adapt"], label_free=section)
    else:
        meta["base_sha256"] = base_meta.get("base_sha256", base_meta.get("sha256"))
        meta["meta_train"] = run
    load_params(model, start)
    try:
        save_checkpoint(model, path, meta=meta, adapt=section)
    finally:
        load_params(model, learned)
    with open(os.path.join(cfg.out, f"{cfg.algo}{'_label_free' if cfg.label_free else ''}.json"), "w") as f:
        json.dump({"step": step, "dev_query_loss": dev_loss}, f)


def _sizes(model, adapt: dict) -> dict[str, torch.Tensor | float]:
    sizes = adapt.get("step_sizes")
    return sizes if isinstance(sizes, dict) else {k: float(sizes) for k in model.adaptive_parameter_names()}


class _PseudoLabels:
    """Support batches labelled as the product labels a caller's audio without references: the
    transcripts (beam search + LM) of the model a caller without a profile gets, kept from
    `min_confidence`. Each utterance is decoded once."""

    def __init__(self, model, params: dict[str, torch.Tensor], checkpoint: str | None, min_confidence: float):
        from asr_core.small.recognizer import Recognizer
        self.model, self.params, self.min_confidence = model, detached(params), min_confidence
        self.decoder = Recognizer.load(checkpoint)  # the product's decoder (lexicon + LM) for these log-probs
        self.done: dict[tuple[int, int], tuple[str, float]] = {}

    def label(self, data, i: int) -> tuple[str, float]:
        key = (id(data), i)
        if key not in self.done:
            with torch.no_grad():
                logp, lens = log_probs(self.model, self.params, _batch(data, [i]))
            t = self.decoder.decode(logp[0, : int(lens[0])])
            self.done[key] = (t.text, t.confidence)
        return self.done[key]

    def batch(self, data, idx: list[int]) -> Batch | None:
        """The confident utterances of `idx` with their pseudo-labels; None if there are none."""
        keep = [(i, text) for i in idx for text, conf in [self.label(data, i)] if text and conf >= self.min_confidence]
        keep = [(i, text) for i, text in keep if encode(text)]
        if not keep:
            return None
        feats = [data[i][0].float() for i, _ in keep]
        ids = [torch.tensor(encode(text), dtype=torch.int32) for _, text in keep]
        return Batch(torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), torch.tensor([f.shape[0] for f in feats]),
                     torch.cat(ids), torch.tensor([x.numel() for x in ids]))
