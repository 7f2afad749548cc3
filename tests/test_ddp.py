"""Two training processes under torchrun (gloo on the CPU): one model written, as good as one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from textcnn import load
from textcnn.cli import main

from .conftest import trec_like, write_csv

SRC = str(Path(__file__).resolve().parents[1] / "src")
FLAGS = ["--epochs", "3", "--batch-size", "32", "--embedding-size", "16", "--feature-size", "16",
         "--window-sizes", "2,3", "--learning-rate", "0.01", "--device", "cpu", "--precision", "float32", "-q"]
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp")
    return (write_csv(d / "train.csv", *trec_like(5400, 1)), write_csv(d / "dev.csv", *trec_like(500, 2)),
            d / "test.csv", trec_like(500, 3))


def test_two_gloo_processes_write_one_model_as_good_as_one_process(files, tmp_path):
    train, dev, _, test = files
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "textcnn", "train", str(train), "--dev", str(dev), "--out", str(out), *FLAGS]
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("saved the model to") == 1  # rank 0 only
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]  # no second or half-written copy
    two = load(out).score(*test)

    assert main(["train", str(train), "--dev", str(dev), "--out", str(tmp_path / "one"), *FLAGS]) == 0
    one = load(tmp_path / "one").score(*test)
    assert two > 0.8 and abs(two - one) < 0.05, (one, two)
