"""Checkpoints and exact resume: a run killed with SIGKILL and resumed ends with the same model bytes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from textcnn.cli import main

from .conftest import make_corpus, write_csv

SRC = str(Path(__file__).resolve().parents[1] / "src")
FLAGS = ["--epochs", "3", "--batch-size", "16", "--embedding-size", "16", "--feature-size", "8",
         "--window-sizes", "2,3", "--min-freq", "1", "--precision", "float32", "--device", "cpu", "--seed", "5", "-q"]

# Runs `textcnn train` in this process, but stops dead after training step PAUSE_AT (printing
# 'paused' and waiting on stdin) so the test can SIGKILL it at a known point after a checkpoint.
PAUSING = """
import sys
from textcnn import checkpoint, cli
pause_at = int(sys.argv[1])
original = checkpoint.Checkpointer.on_step_end
def on_step_end(self, loop):
    original(self, loop)
    if loop.step == pause_at:
        print("paused", self.saved, flush=True)
        sys.stdin.read()
checkpoint.Checkpointer.on_step_end = on_step_end
sys.exit(cli.main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume")
    return write_csv(d / "train.csv", *make_corpus(300, seed=4)), write_csv(d / "dev.csv", *make_corpus(60, seed=5))


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _train(files, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "textcnn", "train", str(files[0]), "--dev", str(files[1]), "--out", str(out), *FLAGS, *extra]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)


def _killed_run(files, out: Path, pause_at: int, every: str) -> None:
    cmd = [sys.executable, "-c", PAUSING, str(pause_at), "train", str(files[0]), "--dev", str(files[1]),
           "--out", str(out), *FLAGS, "--checkpoint-every", every]
    proc = subprocess.Popen(cmd, env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # blocks until the run reaches the pause (or dies)
        assert line.startswith("paused"), f"the run ended before step {pause_at}: {line!r}"
        assert int(line.split()[1]) >= 1, "no checkpoint was written before the kill"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.stdout.close()
        proc.stdin.close()


@pytest.fixture(scope="module")
def uninterrupted(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("plain") / "model"
    assert _train(files, out).returncode == 0
    return (out / "model.safetensors").read_bytes()


# 19 steps per epoch: a kill mid-epoch 1 (checkpoint at step 6), mid-epoch 2 (checkpoint at the
# end of epoch 1, step 19, and at step 24), and just after the end-of-epoch-2 checkpoint.
@pytest.mark.parametrize("pause_at,every", [(8, "6"), (27, "8"), (39, "100")])
def test_a_killed_run_resumes_to_the_same_bytes(files, uninterrupted, tmp_path, pause_at, every):
    out = tmp_path / "model"
    _killed_run(files, out, pause_at, every)
    assert not (out / "model.safetensors").exists()
    resumed = _train(files, out, "--resume", "--checkpoint-every", every)
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "model.safetensors").read_bytes() == uninterrupted


def test_resume_without_a_checkpoint_says_how_to_make_one(files, tmp_path, capsys):
    argv = ["train", str(files[0]), "--dev", str(files[1]), "--out", str(tmp_path / "m"), *FLAGS, "--resume"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no checkpoint in" in err and "--checkpoint-every N" in err


def test_resume_on_other_data_is_refused(files, tmp_path, capsys):
    out = tmp_path / "m"
    argv = ["train", str(files[0]), "--dev", str(files[1]), "--out", str(out), *FLAGS, "--epochs", "1"]
    assert main([*argv, "--checkpoint-every", "5"]) == 0
    other = write_csv(tmp_path / "other.csv", *make_corpus(300, seed=9))
    argv[1] = str(other)
    assert main([*argv, "--resume"]) == 2
    assert "written by a run on other data or another config" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "x", "0m", "m"])
def test_a_bad_checkpoint_interval_names_the_flag(files, tmp_path, capsys, value):
    argv = ["train", str(files[0]), "--out", str(tmp_path / "m"), *FLAGS, "--checkpoint-every", value]
    assert main(argv) == 2
    assert "--checkpoint-every must be a number of steps" in capsys.readouterr().err


def test_a_damaged_checkpoint_is_refused(files, tmp_path, capsys):
    out = tmp_path / "m"
    argv = ["train", str(files[0]), "--dev", str(files[1]), "--out", str(out), *FLAGS, "--epochs", "1"]
    assert main([*argv, "--checkpoint-every", "5"]) == 0
    blob = out.with_name("m.checkpoint") / "checkpoint.safetensors"
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))
    assert main([*argv, "--resume"]) == 2
    assert "damaged" in capsys.readouterr().err


def test_checkpoint_every_reads_steps_or_minutes():
    from textcnn.checkpoint import parse_every

    assert parse_every("500") == (500, None)
    assert parse_every("10m") == (None, 600.0)
    assert parse_every(" 0.5M ") == (None, 30.0)
