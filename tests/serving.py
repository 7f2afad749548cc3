"""Helpers for the explain, server and browser tests: a tiny corpus and a real ``textcnn serve`` process."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from textcnn import TextCNNClassifier

QUESTION_WORDS = {
    "NUM": ["how many", "how much", "what year"],
    "LOC": ["where is", "where was", "what country"],
    "HUM": ["who was", "who is", "who wrote"],
}
FILLER = ["the", "first", "city", "river", "film", "king", "old", "big", "of", "in", "paris", "book"]


def tiny_corpus(n: int = 240, seed: int = 0) -> tuple[list[str], list[str]]:
    """Question-like texts whose class is given by their question words."""
    rng = random.Random(seed)
    labels = sorted(QUESTION_WORDS)
    texts, y = [], []
    for i in range(n):
        label = labels[i % len(labels)]
        words = [rng.choice(FILLER) for _ in range(rng.randint(1, 6))]
        texts.append(f"{rng.choice(QUESTION_WORDS[label])} {' '.join(words)} ?")
        y.append(label)
    return texts, y


def train_tiny(**params) -> TextCNNClassifier:
    texts, labels = tiny_corpus()
    defaults = dict(embedding_size=16, feature_size=8, window_sizes=(2, 3), epochs=4, batch_size=16, verbose=0)
    return TextCNNClassifier(**{**defaults, **params}).fit(texts, labels)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body=None, timeout: float = 30.0) -> tuple[int, dict]:
    """One request with the standard library; returns (status, parsed JSON body)."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class Server:
    """``textcnn serve`` in a subprocess on a free loopback port; started, awaited and stopped with SIGTERM."""

    def __init__(self, model_dir: Path, *flags: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [sys.executable, "-m", "textcnn", "serve", str(model_dir), "--host", "127.0.0.1",
               "--port", str(self.port), *flags]
        self.proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"textcnn serve exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if http("GET", self.url + "/v1/health", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"textcnn serve did not answer /v1/health in {timeout} s:\n{self.log.read_text()}")

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode

    def __enter__(self) -> "Server":
        try:
            self.wait_ready()
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
