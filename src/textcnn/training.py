"""The training loop: Adam, length-bucketed batches, early stopping on a dev metric, best weights kept.

Model-agnostic: it needs a module mapping padded ids (B, T) to outputs, a loss, and an
``evaluate(model) -> dict`` callback that scores the dev set. Nothing here knows about text.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .data import pad_batch, training_batches
from .errors import ConfigError, TrainingError
from .fastpath import native_bf16, training_forward


@dataclass
class TrainSettings:
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    patience: int
    monitor: str  # a key of evaluate()'s dict; 'loss' is minimised, anything else maximised
    seed: int
    min_len: int = 1
    max_norm: float | None = None
    embedding_lr_scale: float = 1.0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    progress: bool = True


@dataclass
class TrainResult:
    history: list[dict]
    best_epoch: int
    best_score: float
    stopped_early: bool


def _trainable_tables(model: nn.Module) -> list[nn.Embedding]:
    return [m for m in model.modules() if isinstance(m, nn.Embedding) and m.weight.requires_grad]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float,
                   embedding_lr_scale: float = 1.0) -> list[torch.optim.Optimizer]:
    """Adam on dense weights; SparseAdam on embedding tables, which get sparse gradients.

    A step then reads and writes only the embedding rows its batch uses, not the whole table
    (the dense update of a 50,000-word table costs more than the convolutions). No weight decay
    on embeddings; their learning rate is ``lr * embedding_lr_scale``. The tables are the
    ``nn.Embedding`` modules with trainable weights.
    """
    tables = _trainable_tables(model)
    sparse_ids = {id(m.weight) for m in tables}
    dense = [p for p in model.parameters() if p.requires_grad and id(p) not in sparse_ids]
    optimizers: list[torch.optim.Optimizer] = [torch.optim.Adam(dense, lr=lr, weight_decay=weight_decay)]
    if tables:
        optimizers.append(torch.optim.SparseAdam([m.weight for m in tables], lr=lr * embedding_lr_scale))
    return optimizers


@contextlib.contextmanager
def sparse_embeddings(model: nn.Module):
    """Switches the model's trainable embedding tables to sparse gradients for the block."""
    tables = _trainable_tables(model)
    before = [m.sparse for m in tables]
    for m in tables:
        m.sparse = True
    try:
        yield
    finally:
        for m, was in zip(tables, before):
            m.sparse = was


@contextlib.contextmanager
def seeded(seed: int):
    """Runs the block on a copy of PyTorch's random state seeded with ``seed``; the caller's is restored.

    Results stay reproducible (the same seed gives the same weights) without resetting the global
    generator under the caller's feet.
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def training_path(model: nn.Module, device: torch.device) -> str:
    """The words ``--verbose`` uses for the training path."""
    precision = "float32" if device.type != "cpu" else (
        "bfloat16 autocast (native bf16 CPU)" if native_bf16() else "float32 (no native bfloat16 on this CPU)")
    forward = ("the model's own forward (batch norm)" if training_forward(model) is model else
               "convolutions computed once per distinct word of a batch (GEMM + embedding_bag), max before bias+ReLU")
    return f"{forward}, sparse embedding gradients + SparseAdam, Adam elsewhere, {precision}"


def fit_model(
    model: nn.Module,
    train_ids: Sequence[Sequence[int]],
    train_targets: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    evaluate: Callable[[nn.Module], dict],
    s: TrainSettings,
    log: Callable[..., None] | None = None,
) -> TrainResult:
    """Trains ``model`` in place and leaves it holding the weights of its best dev epoch.

    ``log(message, level)`` receives progress lines (level 1) and the chosen code path (level 2).
    PyTorch's global random state is left as it was (see :func:`seeded`).

    Raises:
        ConfigError: ``s.monitor`` is not a key of ``evaluate``'s dict.
        TrainingError: the training loss or a dev metric is NaN or infinite.
    """
    with seeded(s.seed):
        return _fit(model, train_ids, train_targets, loss_fn, evaluate, s, log or (lambda message, level=1: print(message)))


def _fit(model, train_ids, train_targets, loss_fn, evaluate, s: TrainSettings, log) -> TrainResult:
    rng = np.random.default_rng(s.seed)
    optimizers = make_optimizer(model, s.learning_rate, s.weight_decay, s.embedding_lr_scale)
    log(f"training path: {training_path(model, s.device)}", 2)
    lengths = [len(x) for x in train_ids]
    minimise = s.monitor == "loss"
    best_score, best_epoch, best_state, bad_epochs = math.inf if minimise else -math.inf, 0, None, 0
    best_loss = math.inf
    history: list[dict] = []
    stopped_early = False
    for epoch in range(1, s.epochs + 1):
        started = time.perf_counter()
        with sparse_embeddings(model):
            train_loss = _run_epoch(model, train_ids, train_targets, lengths, loss_fn, optimizers, rng, s, epoch)
        seconds = time.perf_counter() - started
        model.eval()
        dev = evaluate(model)
        _check_scores(dev, train_loss, s.monitor, epoch)
        score = dev[s.monitor]
        # Ties on the monitored metric (common on small dev sets) go to the lower dev loss.
        improved = (score < best_score if minimise else score > best_score) or (
            score == best_score and dev.get("loss", math.inf) < best_loss)
        entry = {"epoch": epoch, "train_loss": train_loss, "seconds": round(seconds, 3),
                 "texts_per_s": round(len(train_ids) / max(seconds, 1e-9), 1),
                 **{f"dev_{k}": v for k, v in dev.items()}, "best": improved}
        history.append(entry)
        log(_epoch_line(entry, s.epochs, s.monitor))
        if improved:
            best_score, best_loss, best_epoch, bad_epochs = score, dev.get("loss", math.inf), epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
            if bad_epochs > s.patience:
                stopped_early = epoch < s.epochs
                log(f"early stopping: no better dev {s.monitor} for {bad_epochs} epoch(s); best was epoch {best_epoch}")
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(history, best_epoch, float(best_score), stopped_early)


def _check_scores(dev: dict, train_loss: float, monitor: str, epoch: int) -> None:
    """Early stopping on a missing or NaN score would silently keep an arbitrary epoch: refuse instead."""
    if monitor not in dev:
        raise ConfigError(f"The 'monitor' parameter (--monitor) is {monitor!r}, but the dev evaluation reports only "
                          f"{', '.join(map(repr, dev))}. Use one of those.")
    bad = {k: v for k, v in {"train_loss": train_loss, **{f"dev_{k}": v for k, v in dev.items()}}.items()
           if isinstance(v, (int, float)) and not math.isfinite(v)}
    if bad:
        raise TrainingError(
            f"Epoch {epoch} gave {', '.join(f'{k}={v}' for k, v in bad.items())}: training diverged or the dev "
            "set is empty, and early stopping cannot compare such scores. Lower --learning-rate "
            "(learning_rate), and check that the dev set (--dev, validation_data) holds texts."
        )


def _run_epoch(model, train_ids, targets, lengths, loss_fn, optimizers, rng, s: TrainSettings, epoch: int) -> float:
    model.train()
    total, seen = 0.0, 0
    bar = tqdm(total=len(train_ids), desc=f"epoch {epoch}/{s.epochs}", unit="text", leave=False,
               disable=not s.progress, file=sys.stderr, dynamic_ncols=True)
    bf16 = s.device.type == "cpu" and native_bf16()
    forward = training_forward(model)
    started = time.perf_counter()
    for batch in training_batches(lengths, s.batch_size, rng):
        ids = pad_batch([train_ids[i] for i in batch], s.min_len).to(s.device)  # (B, T)
        y = targets[torch.from_numpy(batch)].to(s.device)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = forward(ids)  # (B, C)
        loss = loss_fn(logits.float(), y)
        loss.backward()
        for opt in optimizers:
            opt.step()
        if s.max_norm is not None:
            model.apply_max_norm(s.max_norm)
        total += loss.item() * len(batch)
        seen += len(batch)
        bar.update(len(batch))
        bar.set_postfix(loss=f"{total / seen:.4f}", texts_s=f"{seen / max(time.perf_counter() - started, 1e-9):.0f}")
    bar.close()
    return total / max(seen, 1)


def _epoch_line(e: dict, epochs: int, monitor: str) -> str:
    shown = [f"dev_{k}" for k in ("loss", "accuracy", "macro_f1", "micro_f1")]
    parts = [f"epoch {e['epoch']}/{epochs}", f"train_loss {e['train_loss']:.4f}"]
    parts += [f"{k} {e[k]:.4f}" for k in shown if k in e]
    parts += [f"{e['texts_per_s']:.0f} texts/s", f"{e['seconds']:.1f}s"]
    return "  ".join(parts) + ("  *" if e["best"] else "")
