"""`python -m asr_core train`: CTC training of the streaming model, on CPU or GPU, resumable.

Features are computed once and kept in memory; SpecAugment and a random gain
(a shift in the log domain) augment them. Every epoch: a dev-set greedy WER, a
resumable training state (`train_state.pt`) and the best checkpoint so far.
"""
from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from asr_core.audio import load_audio
from asr_core.small.checkpoint import load_checkpoint, save_checkpoint
from asr_core.small.decoder import greedy_decode
from asr_core.manifest import read_manifest
from asr_core.metrics import wer
from asr_core.small.model import ModelConfig, StreamingCTC
from asr_core.text import encode


@dataclass(frozen=True)
class TrainConfig:
    manifest: str
    out: str
    epochs: int = 12
    lr: float = 2e-3
    warmup_steps: int = 300
    batch_frames: int = 12000          # feature frames (10 ms) per batch
    weight_decay: float = 0.01
    seed: int = 0
    threads: int = 0                   # 0 = torch default
    device: str = "cpu"
    d_model: int = 256
    n_blocks: int = 8
    max_train_utts: int = 0            # 0 = all; for tiny smoke runs
    init: str = ""                     # start from this checkpoint's weights

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_frames < 100 or self.lr <= 0:
            raise ValueError("epochs >= 1, batch_frames >= 100 and lr > 0 are required")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda, got {self.device!r}")


def _features(model: StreamingCTC, utts, device: str) -> list[tuple[torch.Tensor, torch.Tensor, str]]:
    out = []
    with torch.no_grad():
        for i, u in enumerate(utts):
            audio = load_audio(u.audio, model.cfg.sample_rate)
            feats = model.features(audio[None])[0].half()          # (frames, n_mels)
            labels = torch.tensor(encode(u.text), dtype=torch.int32)
            if feats.shape[0] >= 8 and labels.numel() > 0 and labels.numel() * model.cfg.stack < feats.shape[0]:
                out.append((feats, labels, u.text))
            if (i + 1) % 1000 == 0:
                print(f"features: {i + 1}/{len(utts)}", file=sys.stderr, flush=True)
    return out


def _batches(data, batch_frames: int, rng: random.Random) -> list[list[int]]:
    order = sorted(range(len(data)), key=lambda i: data[i][0].shape[0])
    batches, cur, longest = [], [], 0
    for i in order:
        n = data[i][0].shape[0]
        if cur and max(longest, n) * (len(cur) + 1) > batch_frames:
            batches.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, n)
    if cur:
        batches.append(cur)
    rng.shuffle(batches)
    return batches


def _collate(data, idx: list[int], device: str):
    feats = [data[i][0].float() for i in idx]
    frames = torch.tensor([f.shape[0] for f in feats])
    x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    labels = torch.cat([data[i][1] for i in idx])
    label_lens = torch.tensor([data[i][1].numel() for i in idx])
    return x.to(device), frames.to(device), labels.to(device), label_lens.to(device)


def spec_augment(x: torch.Tensor, frames: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """x: (batch, frames, n_mels) normalized features; 2 frequency masks, time masks ~5 % of length."""
    b, t, m = x.shape
    x = x.clone()
    for i in range(b):
        for _ in range(2):
            w = int(torch.randint(0, 9, (1,), generator=rng))
            f0 = int(torch.randint(0, max(1, m - w), (1,), generator=rng))
            x[i, :, f0:f0 + w] = 0.0
        n = int(frames[i])
        for _ in range(max(1, n // 200)):
            w = int(torch.randint(0, min(20, max(1, n // 10)) + 1, (1,), generator=rng))
            t0 = int(torch.randint(0, max(1, n - w), (1,), generator=rng))
            x[i, t0:t0 + w] = 0.0
    return x


def _lr(step: int, total: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    p = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def evaluate_greedy(model: StreamingCTC, data, device: str) -> float:
    model.eval()
    pairs = []
    with torch.no_grad():
        for i in range(0, len(data), 16):
            idx = list(range(i, min(i + 16, len(data))))
            x, frames, _, _ = _collate(data, idx, device)
            logp, lens = model.encode(model.input_adapter((x - model.feat_mean) / model.feat_std), frames)
            for j, k in enumerate(idx):
                pairs.append((data[k][2], greedy_decode(logp[j, : lens[j]].cpu()).text))
    model.train()
    return wer(pairs)


def _initial_model(cfg: TrainConfig) -> StreamingCTC:
    """The model training starts from: `cfg.init`'s checkpoint, else a new one of the configured size."""
    if cfg.init:
        model, _ = load_checkpoint(cfg.init)
        return model
    return StreamingCTC(ModelConfig(d_model=cfg.d_model, n_blocks=cfg.n_blocks,
                                    right_context=ModelConfig().right_context[:cfg.n_blocks]
                                    + (0,) * max(0, cfg.n_blocks - 8)))


def _train_and_dev_features(cfg: TrainConfig, model: StreamingCTC, log) -> tuple[list, list]:
    train_utts = read_manifest(cfg.manifest, ("train",))
    if cfg.max_train_utts:
        train_utts = train_utts[: cfg.max_train_utts]
    dev_utts = read_manifest(cfg.manifest, ("dev",))
    if not train_utts:
        raise ValueError(f"{cfg.manifest}: no train utterances")
    t0 = time.time()
    data, dev = _features(model, train_utts, cfg.device), _features(model, dev_utts, cfg.device)
    print(f"features: {len(data)} train / {len(dev)} dev utterances in {time.time() - t0:.0f} s", file=log, flush=True)
    return data, dev


def _train_step(model: StreamingCTC, opt: torch.optim.Optimizer, data, idx: list[int], cfg: TrainConfig,
                grng: torch.Generator, *, lr: float) -> float:
    """One optimizer step on the batch `idx` (random gain and SpecAugment); returns its CTC loss."""
    x, frames, labels, label_lens = _collate(data, idx, cfg.device)
    x = (x - model.feat_mean) / model.feat_std
    x = x + (torch.rand(x.shape[0], 1, 1, generator=grng).to(x.device) - 0.5) * 0.5  # gain
    x = spec_augment(x, frames, grng)
    logp, lens = model.encode(model.input_adapter(x), frames)
    loss = F.ctc_loss(logp.transpose(0, 1), labels, lens, label_lens, zero_infinity=True)
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    opt.step()
    return float(loss.detach())


def train(cfg: TrainConfig, log=sys.stderr) -> str:
    """Train (or resume) and return the path of the best checkpoint."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    os.makedirs(cfg.out, exist_ok=True)
    state_path, best_path = os.path.join(cfg.out, "train_state.pt"), os.path.join(cfg.out, "best.pt")
    model = _initial_model(cfg)
    data, dev = _train_and_dev_features(cfg, model, log)
    if not cfg.init:
        allf = torch.cat([d[0].float() for d in data[:3000]])
        model.feat_mean.copy_(allf.mean(0))
        model.feat_std.copy_(allf.std(0) + 1e-3)
    model.to(cfg.device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng, grng = random.Random(cfg.seed), torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = len(_batches(data, cfg.batch_frames, random.Random(0)))
    total, step, epoch0, best = steps_per_epoch * cfg.epochs, 0, 0, float("inf")
    if os.path.exists(state_path):
        st = torch.load(state_path, map_location=cfg.device, weights_only=True)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, epoch0, best = st["step"], st["epoch"], st["best"]
        rng.seed(cfg.seed + epoch0)
        print(f"resumed at epoch {epoch0}, step {step}, best dev WER {best:.3f}", file=log, flush=True)
    meta_base = {"train_config": asdict(cfg), "train_utterances": len(data),
                 "train_hours": round(sum(d[0].shape[0] for d in data) * model.cfg.hop_length / model.cfg.sample_rate / 3600, 2)}
    for epoch in range(epoch0, cfg.epochs):
        t_ep, loss_sum, n_b = time.time(), 0.0, 0
        for bi, idx in enumerate(_batches(data, cfg.batch_frames, rng)):
            loss = _train_step(model, opt, data, idx, cfg, grng, lr=_lr(step, total, cfg))
            step, loss_sum, n_b = step + 1, loss_sum + loss, n_b + 1
            if bi % 50 == 0:
                el = time.time() - t_ep
                print(f"epoch {epoch + 1}/{cfg.epochs} batch {bi}/{steps_per_epoch} loss {loss_sum / n_b:.3f} "
                      f"lr {_lr(step, total, cfg):.2e} {el:.0f}s eta-epoch {el / (bi + 1) * (steps_per_epoch - bi - 1):.0f}s",
                      file=log, flush=True)
        dev_wer = evaluate_greedy(model, dev, cfg.device) if dev else loss_sum / max(n_b, 1)
        print(f"epoch {epoch + 1} done in {time.time() - t_ep:.0f}s: train loss {loss_sum / max(n_b, 1):.3f}, "
              f"dev greedy WER {dev_wer:.3f}", file=log, flush=True)
        if dev_wer <= best:
            best = dev_wer
            save_checkpoint(model.cpu(), best_path, meta=dict(meta_base, epoch=epoch + 1, dev_greedy_wer=round(dev_wer, 4)))
            model.to(cfg.device)
        save_checkpoint(model.cpu(), os.path.join(cfg.out, "last.pt"), meta=dict(meta_base, epoch=epoch + 1))
        model.to(cfg.device)
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "epoch": epoch + 1,
                    "best": best}, state_path + ".part")
        os.replace(state_path + ".part", state_path)
        with open(os.path.join(cfg.out, "history.jsonl"), "a") as f:
            f.write(json.dumps({"epoch": epoch + 1, "step": step, "loss": loss_sum / max(n_b, 1), "dev_wer": dev_wer}) + "\n")
    return best_path
