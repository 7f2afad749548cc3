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
from .distributed import World, from_main, parallel_forward, shard, sparse_gradients_supported
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
    max_steps: int | None = None  # stop after this many optimizer steps in all (then a last dev evaluation)
    precision: str = "auto"  # see autocast_dtype
    fingerprint: str = ""  # what the data and config hash to: a checkpoint of another run is refused
    world: World = field(default_factory=World)  # the processes training together (torchrun)


@dataclass
class TrainResult:
    history: list[dict]
    best_epoch: int
    best_score: float
    stopped_early: bool


def _trainable_tables(model: nn.Module) -> list[nn.Embedding]:
    return [m for m in model.modules() if isinstance(m, nn.Embedding) and m.weight.requires_grad]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float,
                   embedding_lr_scale: float = 1.0, sparse: bool = True) -> list[torch.optim.Optimizer]:
    """Adam on dense weights; SparseAdam on embedding tables, which get sparse gradients.

    A step then reads and writes only the embedding rows its batch uses, not the whole table
    (the dense update of a 50,000-word table costs more than the convolutions). No weight decay
    on embeddings; their learning rate is ``lr * embedding_lr_scale``. The tables are the
    ``nn.Embedding`` modules with trainable weights. ``sparse`` False (DDP over nccl, which cannot
    all-reduce sparse gradients) puts the tables in Adam too, with the same learning rate and no decay.
    """
    tables = _trainable_tables(model)
    sparse_ids = {id(m.weight) for m in tables}
    dense = [p for p in model.parameters() if p.requires_grad and id(p) not in sparse_ids]
    if not sparse:
        groups = [{"params": dense}, {"params": [m.weight for m in tables], "lr": lr * embedding_lr_scale, "weight_decay": 0.0}]
        return [torch.optim.Adam([g for g in groups if g["params"]], lr=lr, weight_decay=weight_decay)]
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


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of training steps; None trains in float32.

    'auto' is bfloat16 on CPUs that compute it in hardware (AVX512-BF16 or AMX) and on CUDA GPUs
    that support it, float16 on older GPUs, float32 elsewhere. Runs in float32 and in a reduced
    precision are not bit-identical (they agree within rounding); exact resume and the
    same-seed guarantee hold for float32 on the CPU.
    """
    if precision == "float32":
        return None
    if precision == "bfloat16":
        return torch.bfloat16
    if precision == "float16":
        if device.type != "cuda":
            raise ConfigError("The 'precision' parameter (--precision) is 'float16', which is for CUDA GPUs only. "
                              "Use bfloat16 or float32 on the CPU.")
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if device.type == "cpu" and native_bf16() else None


def training_path(model: nn.Module, device: torch.device, precision: str = "auto") -> str:
    """The words ``--verbose`` uses for the training path."""
    dtype = autocast_dtype(precision, device)
    if dtype is None:
        how = "float32" + (" (no native bfloat16 on this CPU)" if precision == "auto" and device.type == "cpu" else "")
    else:
        how = f"{str(dtype).removeprefix('torch.')} autocast on {device}" + (
            " with a GradScaler" if dtype == torch.float16 else "")
    forward = ("the model's own forward (batch norm)" if training_forward(model) is model else
               "convolutions computed once per distinct word of a batch (GEMM + embedding_bag), max before bias+ReLU")
    return f"{forward}, sparse embedding gradients + SparseAdam, Adam elsewhere, {how}"


def fit_model(
    model: nn.Module,
    train_ids: Sequence[Sequence[int]],
    train_targets: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    evaluate: Callable[[nn.Module], dict],
    s: TrainSettings,
    log: Callable[..., None] | None = None,
    callbacks: Sequence["Callback"] = (),
) -> TrainResult:
    """Trains ``model`` in place and leaves it holding the weights of its best dev epoch.

    ``log(message, level)`` receives progress lines (level 1) and the chosen code path (level 2).
    ``callbacks`` run after the built-in ones (early stopping, then the epoch log); a
    :class:`textcnn.checkpoint.Checkpointer` among them saves and restores the whole loop.
    PyTorch's global random state is left as it was (see :func:`seeded`).

    Raises:
        ConfigError: ``s.monitor`` is not a key of ``evaluate``'s dict.
        TrainingError: the training loss or a dev metric is NaN or infinite.
    """
    log = log or (lambda message, level=1: print(message))
    sparse = sparse_gradients_supported(s.world)
    if not sparse:
        log(f"note: the {s.world.backend} backend cannot all-reduce sparse gradients: the embedding tables train "
            "with dense gradients and Adam on every rank")
    # Every rank draws the same batch order (numpy, s.seed) but its own dropout masks (torch).
    with seeded(s.seed + 7919 * s.world.rank), sparse_embeddings(model) if sparse else contextlib.nullcontext():
        optimizers = make_optimizer(model, s.learning_rate, s.weight_decay, s.embedding_lr_scale, sparse)
        loop = Loop(model=model, optimizers=optimizers, settings=s, rng=np.random.default_rng(s.seed), log=log,
                    forward=parallel_forward(model, training_forward(model), s.world))
        if autocast_dtype(s.precision, s.device) == torch.float16:
            loop.scaler = torch.amp.GradScaler("cuda")
        early = EarlyStopping(s.monitor, s.patience)
        loop.callbacks = [early, EpochLog(log), *callbacks]
        log(f"training path: {training_path(model, s.device, s.precision)}", 2)
        _train_loop(loop, train_ids, train_targets, loss_fn, evaluate)
        return TrainResult(loop.history, early.best_epoch, float(early.best_score), early.stopped_early)


@dataclass
class Loop:
    """The training loop's state: with the model, optimizers and callbacks' states, all a resumed run needs.

    ``epoch`` counts finished epochs, ``step`` optimizer steps in all, ``position`` the batches done
    of the current epoch's shuffled order, which is drawn from ``epoch_rng_state`` (the data
    generator's state when the epoch began).
    """

    model: nn.Module
    optimizers: list
    settings: TrainSettings
    rng: np.random.Generator
    log: Callable[..., None]
    callbacks: list = field(default_factory=list)
    epoch: int = 0
    step: int = 0
    position: int = 0
    epoch_rng_state: dict | None = None
    loss_sum: float = 0.0
    seen: int = 0
    seconds: float = 0.0  # training time of the current epoch so far
    history: list = field(default_factory=list)
    stop: bool = False
    stop_reason: str | None = None
    scaler: object = None  # a GradScaler for float16 autocast on CUDA
    forward: Callable | None = None  # ids (B, T) -> logits (B, C); DistributedDataParallel under torchrun


class Callback:
    """Hooks into the training loop; each returns nothing and may set ``loop.stop``.

    ``state_dict`` / ``load_state_dict`` (JSON values and tensors) let a checkpoint carry the
    callback's own state; ``name`` keys it there.
    """

    name = ""

    def on_train_begin(self, loop: Loop) -> None: ...

    def on_step_end(self, loop: Loop) -> None: ...

    def on_epoch_end(self, loop: Loop, entry: dict) -> None: ...

    def on_train_end(self, loop: Loop) -> None: ...

    def state_dict(self) -> tuple[dict, dict[str, torch.Tensor]]:
        return {}, {}

    def load_state_dict(self, meta: dict, tensors: dict[str, torch.Tensor]) -> None: ...


class EarlyStopping(Callback):
    """Keeps the best dev epoch's weights; stops after ``patience`` epochs without a better score.

    ``monitor`` 'loss' is minimised, anything else maximised; ties go to the lower dev loss.
    At the end of training the model gets the best weights back.
    """

    name = "early_stopping"

    def __init__(self, monitor: str, patience: int) -> None:
        self.monitor, self.patience = monitor, patience
        self.minimise = monitor == "loss"
        self.best_score = math.inf if self.minimise else -math.inf
        self.best_loss, self.best_epoch, self.bad_epochs = math.inf, 0, 0
        self.best_state: dict | None = None
        self.stopped_early = False

    def on_epoch_end(self, loop: Loop, entry: dict) -> None:
        score, loss = entry[f"dev_{self.monitor}"], entry.get("dev_loss", math.inf)
        improved = (score < self.best_score if self.minimise else score > self.best_score) or (
            score == self.best_score and loss < self.best_loss)
        entry["best"] = improved
        if improved:
            self.best_score, self.best_loss, self.best_epoch, self.bad_epochs = score, loss, entry["epoch"], 0
            self.best_state = copy.deepcopy(loop.model.state_dict())
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.stopped_early = loop.epoch < loop.settings.epochs
            loop.stop = True
            loop.stop_reason = (f"early stopping: no better dev {self.monitor} for {self.bad_epochs} epoch(s); "
                                f"best was epoch {self.best_epoch}")

    def on_train_end(self, loop: Loop) -> None:
        if self.best_state is not None:
            loop.model.load_state_dict(self.best_state)

    def state_dict(self) -> tuple[dict, dict[str, torch.Tensor]]:
        meta = {"best_score": self.best_score, "best_loss": self.best_loss, "best_epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs, "stopped_early": self.stopped_early,
                "has_best": self.best_state is not None}
        return meta, dict(self.best_state or {})

    def load_state_dict(self, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.best_score, self.best_loss = float(meta["best_score"]), float(meta["best_loss"])
        self.best_epoch, self.bad_epochs = meta["best_epoch"], meta["bad_epochs"]
        self.stopped_early = meta["stopped_early"]
        self.best_state = dict(tensors) if meta["has_best"] else None


class EpochLog(Callback):
    """One line per epoch (``log`` level 1), and why training stopped early."""

    def __init__(self, log: Callable[..., None]) -> None:
        self.log = log

    def on_epoch_end(self, loop: Loop, entry: dict) -> None:
        self.log(_epoch_line(entry, loop.settings.epochs, loop.settings.monitor))
        if loop.stop_reason:
            self.log(loop.stop_reason)


def _train_loop(loop: Loop, train_ids, targets, loss_fn, evaluate) -> None:
    s = loop.settings
    lengths = train_ids.lengths() if hasattr(train_ids, "lengths") else [len(x) for x in train_ids]
    for cb in loop.callbacks:
        cb.on_train_begin(loop)  # a Checkpointer resuming a run restores the loop here
    while loop.epoch < s.epochs and not loop.stop:
        started = time.perf_counter()
        _run_epoch(loop, train_ids, targets, lengths, loss_fn)
        loop.seconds += time.perf_counter() - started
        _end_epoch(loop, evaluate)
    for cb in loop.callbacks:
        cb.on_train_end(loop)
    loop.model.eval()


def _end_epoch(loop: Loop, evaluate) -> None:
    loop.model.eval()
    dev = from_main(evaluate(loop.model), loop.settings.world)  # rank 0's scores decide for every rank
    train_loss = loop.loss_sum / max(loop.seen, 1)
    epoch = loop.epoch + 1
    _check_scores(dev, train_loss, loop.settings.monitor, epoch)
    entry = {"epoch": epoch, "train_loss": train_loss, "seconds": round(loop.seconds, 3),
             "texts_per_s": round(loop.seen / max(loop.seconds, 1e-9), 1),
             **{f"dev_{k}": v for k, v in dev.items()}, "best": False}
    if loop.settings.max_steps is not None and loop.step >= loop.settings.max_steps:
        entry["texts"] = loop.seen  # a partial epoch, perhaps
    loop.history.append(entry)
    loop.epoch, loop.position, loop.loss_sum, loop.seen, loop.seconds = epoch, 0, 0.0, 0, 0.0
    if loop.settings.max_steps is not None and loop.step >= loop.settings.max_steps:
        loop.stop = True
    for cb in loop.callbacks:
        cb.on_epoch_end(loop, entry)


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


def _run_epoch(loop: Loop, train_ids, targets, lengths, loss_fn) -> None:
    """The rest of the current epoch's batches, from ``loop.position`` on."""
    model, s = loop.model, loop.settings
    model.train()
    if loop.position == 0:
        loop.epoch_rng_state = copy.deepcopy(loop.rng.bit_generator.state)
    else:  # resumed mid-epoch: draw the same order again
        loop.rng.bit_generator.state = copy.deepcopy(loop.epoch_rng_state)
    batches = shard(list(training_batches(lengths, s.batch_size, loop.rng)), s.world)
    bar = tqdm(total=len(train_ids) // s.world.size, initial=loop.seen, desc=f"epoch {loop.epoch + 1}/{s.epochs}", unit="text",
               leave=False, disable=not s.progress, file=sys.stderr, dynamic_ncols=True)
    dtype = autocast_dtype(s.precision, s.device)
    forward = loop.forward
    started = time.perf_counter()
    for batch in batches[loop.position:]:
        if s.max_steps is not None and loop.step >= s.max_steps:
            break
        ids = (train_ids.padded(batch, s.min_len) if hasattr(train_ids, "padded") else
               pad_batch([train_ids[i] for i in batch], s.min_len)).to(s.device)  # (B, T)
        y = targets[torch.from_numpy(batch)].to(s.device)
        # An encoder input: its states, computed once before training (textcnn.encoder.StateStore).
        vectors = train_ids.vectors(batch, ids.shape[1], s.device) if hasattr(train_ids, "vectors") else None
        loss = _step(loop, forward, ids, y, loss_fn, dtype, vectors)
        loop.loss_sum += loss * len(batch)
        loop.seen += len(batch)
        loop.position += 1
        loop.step += 1
        bar.update(len(batch))
        bar.set_postfix(loss=f"{loop.loss_sum / loop.seen:.4f}",
                        texts_s=f"{bar.n / max(time.perf_counter() - started, 1e-9):.0f}")
        for cb in loop.callbacks:
            cb.on_step_end(loop)
        if loop.stop:  # a callback ended training mid-epoch (a time budget): the dev set scores it as it is
            break
    bar.close()


def _step(loop: Loop, forward, ids: torch.Tensor, y: torch.Tensor, loss_fn, dtype,
          vectors: torch.Tensor | None = None) -> float:
    for opt in loop.optimizers:
        opt.zero_grad(set_to_none=True)
    with torch.autocast(ids.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext():
        logits = forward(ids) if vectors is None else forward(ids, vectors)  # (B, C)
    loss = loss_fn(logits.float(), y)
    if loop.scaler is not None:  # float16 on CUDA: scale the loss so small gradients survive
        loop.scaler.scale(loss).backward()
        for opt in loop.optimizers:
            loop.scaler.step(opt)
        loop.scaler.update()
    else:
        loss.backward()
        for opt in loop.optimizers:
            opt.step()
    if loop.settings.max_norm is not None:
        loop.model.apply_max_norm(loop.settings.max_norm)
    return loss.item()


def _epoch_line(e: dict, epochs: int, monitor: str) -> str:
    shown = [f"dev_{k}" for k in ("loss", "accuracy", "macro_f1", "micro_f1")]
    parts = [f"epoch {e['epoch']}/{epochs}", f"train_loss {e['train_loss']:.4f}"]
    parts += [f"{k} {e[k]:.4f}" for k in shown if k in e]
    parts += [f"{e['texts_per_s']:.0f} texts/s", f"{e['seconds']:.1f}s"]
    return "  ".join(parts) + ("  *" if e["best"] else "")
