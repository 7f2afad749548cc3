"""Checkpoints of the training loop, and exact resume from them.

A checkpoint is a directory of two files, swapped into place whole (:mod:`textcnn.atomicdir`), so
a process killed at any moment leaves the previous checkpoint or the new one, never half of one:

* ``checkpoint.safetensors``: the weights (``model.*``), the best dev epoch's weights (``best.*``),
  every optimizer's tensors (``optim.I.PARAM.NAME``: Adam's and SparseAdam's moments and steps)
  and PyTorch's CPU random state (``torch_rng``, uint8).
* ``checkpoint.json``: the format, the run's fingerprint (config, vocabulary, classes and data),
  the loop's position (epoch, step, batches done of the epoch's shuffled order, the data
  generator's state when the epoch began and now), the running loss, the history, the
  optimizers' settings and the callbacks' own state (early stopping's best score...), and the
  SHA-256 of the safetensors file.

No pickle: tensors in safetensors, everything else JSON. On the CPU in float32, a run resumed
from a checkpoint ends with the same bytes of ``model.safetensors`` as a run never interrupted.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors

from .atomicdir import read_files, replace_dir, write_file
from .errors import ConfigError, TextCNNError
from .serialization import safetensors_bytes
from .training import Callback, Loop

FORMAT = 1
TENSORS, META = "checkpoint.safetensors", "checkpoint.json"


class CheckpointError(TextCNNError, ValueError):
    """A checkpoint is missing, damaged, or belongs to another run."""


def parse_every(text: str) -> tuple[int | None, float | None]:
    """``--checkpoint-every``: '500' (steps) or '10m' (minutes) -> (steps, seconds)."""
    raw = text.strip().lower()
    try:
        if raw.endswith("m"):
            minutes = float(raw[:-1])
            if minutes > 0:
                return None, minutes * 60
        elif int(raw) >= 1:
            return int(raw), None
    except ValueError:
        pass
    raise ConfigError(f"--checkpoint-every must be a number of steps (e.g. 500) or of minutes (e.g. 10m). "
                      f"Got {text!r} instead.")


class Checkpointer(Callback):
    """Writes a checkpoint every ``every_steps`` steps and/or ``every_seconds`` seconds, and at each epoch end.

    With ``resume``, ``on_train_begin`` restores the loop from the checkpoint in ``directory``
    (a CheckpointError names what is wrong when there is none, or it was written by a run on
    other data or another config). ``write`` False (ranks other than 0) restores but never writes.
    """

    name = "checkpointer"

    def __init__(self, directory, *, every_steps: int | None = None, every_seconds: float | None = None,
                 resume: bool = False, write: bool = True) -> None:
        self.directory = Path(directory)
        self.every_steps, self.every_seconds = every_steps, every_seconds
        self.resume, self.write = resume, write
        self.last_time = time.monotonic()
        self.saved = 0  # checkpoints written by this process

    def on_train_begin(self, loop: Loop) -> None:
        self.last_time = time.monotonic()
        if self.resume:
            restore(loop, self.directory)
            loop.log(f"resumed from {self.directory}: epoch {loop.epoch + 1}, step {loop.step}, "
                     f"batch {loop.position} of the epoch")

    def on_step_end(self, loop: Loop) -> None:
        due_steps = self.every_steps is not None and loop.step % self.every_steps == 0
        due_time = self.every_seconds is not None and time.monotonic() - self.last_time >= self.every_seconds
        if due_steps or due_time:
            self.save(loop)

    def on_epoch_end(self, loop: Loop, entry: dict) -> None:
        self.save(loop)

    def save(self, loop: Loop) -> None:
        if self.write:
            save(loop, self.directory)
            self.saved += 1
        self.last_time = time.monotonic()


def save(loop: Loop, directory: Path) -> None:
    """Writes the loop's checkpoint to ``directory``, replacing the previous one in one step."""
    tensors = {f"model.{k}": v for k, v in loop.model.state_dict().items()}
    tensors["torch_rng"] = torch.get_rng_state()
    optimizers = []
    for i, opt in enumerate(loop.optimizers):
        state = opt.state_dict()
        kept = {}
        for pid, values in state["state"].items():
            kept[str(pid)] = {}
            for name, value in values.items():
                if torch.is_tensor(value):
                    tensors[f"optim.{i}.{pid}.{name}"] = value
                    kept[str(pid)][name] = {"tensor": True}
                else:
                    kept[str(pid)][name] = value
        optimizers.append({"param_groups": state["param_groups"], "state": kept})
    callbacks = {}
    for cb in loop.callbacks:
        if cb.name:
            meta, own = cb.state_dict()
            callbacks[cb.name] = meta
            tensors.update({f"{cb.name}.{k}": v for k, v in own.items()})
    blob = safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, {"format": "pt"})
    meta = {
        "format": FORMAT, "fingerprint": loop.settings.fingerprint, "epoch": loop.epoch, "step": loop.step,
        "position": loop.position, "epoch_rng_state": loop.epoch_rng_state, "rng_state": loop.rng.bit_generator.state,
        "loss_sum": loop.loss_sum, "seen": loop.seen, "seconds": loop.seconds, "history": loop.history,
        "stop": loop.stop, "stop_reason": loop.stop_reason,
        "optimizers": optimizers, "callbacks": callbacks, "sha256": hashlib.sha256(blob).hexdigest(),
        "scaler": None if loop.scaler is None else {k: _plain(v) for k, v in loop.scaler.state_dict().items()},
    }
    data = json.dumps(meta).encode()

    def write(tmp: Path) -> None:
        write_file(tmp / TENSORS, blob)
        write_file(tmp / META, data)

    replace_dir(directory, write)


def _plain(value):
    return value.item() if torch.is_tensor(value) else value


def restore(loop: Loop, directory: Path) -> None:
    """Puts the loop (model, optimizers, random states, position, callbacks) back as ``directory`` saved it."""
    meta, tensors = read(directory)
    if meta["fingerprint"] != loop.settings.fingerprint:
        raise CheckpointError(
            f"The checkpoint in '{directory}' was written by a run on other data or another config (its "
            "fingerprint differs), so it cannot be resumed here. Train with the same files and flags as that run, "
            "or drop --resume (and remove the directory) to start over.")
    loop.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    for i, (opt, saved) in enumerate(zip(loop.optimizers, meta["optimizers"])):
        state = {int(pid): {name: tensors[f"optim.{i}.{pid}.{name}"] if isinstance(v, dict) else v
                            for name, v in values.items()} for pid, values in saved["state"].items()}
        opt.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    for cb in loop.callbacks:
        if cb.name in meta["callbacks"]:
            prefix = f"{cb.name}."
            cb.load_state_dict(meta["callbacks"][cb.name],
                               {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    if loop.scaler is not None and meta.get("scaler"):
        loop.scaler.load_state_dict(meta["scaler"])
    torch.set_rng_state(tensors["torch_rng"])
    loop.rng.bit_generator.state = meta["rng_state"]
    for key in ("epoch", "step", "position", "epoch_rng_state", "loss_sum", "seen", "seconds", "history",
                "stop", "stop_reason"):
        setattr(loop, key, meta[key])


def read(directory: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The checkpoint's JSON and tensors; CheckpointError when there is none or it is damaged."""
    directory = Path(directory)
    if not (directory / META).is_file():
        raise CheckpointError(f"--resume: no checkpoint in '{directory}' ({META} is missing). Train once with "
                              "--checkpoint-every N (or drop --resume), or point --checkpoint-dir at the run's checkpoints.")
    blobs = read_files(directory, [TENSORS, META])
    for name, blob in blobs.items():
        if isinstance(blob, OSError):
            raise CheckpointError(f"Cannot read {directory / name}: {blob.strerror or blob}. Start over without --resume.")
    try:
        meta = json.loads(blobs[META])
    except ValueError as e:
        raise CheckpointError(f"{directory / META} is not valid JSON ({e}). Start over without --resume.") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{directory / META} has checkpoint format {meta.get('format')!r}; this textcnn reads "
                              f"format {FORMAT}. Resume with the textcnn version that wrote it, or start over.")
    if hashlib.sha256(blobs[TENSORS]).hexdigest() != meta["sha256"]:
        raise CheckpointError(f"{directory / TENSORS} does not match its SHA-256 in {META}: the checkpoint is "
                              "damaged. Start over without --resume.")
    return meta, load_safetensors(blobs[TENSORS])
