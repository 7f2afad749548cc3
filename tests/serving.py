"""Helpers for the explain, server and browser tests: a tiny corpus, a real ``textcnn serve`` process,
a real uvicorn server in a thread (for fault injection), and waiting on conditions instead of sleeping."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable

import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from textcnn import TextCNNClassifier
from textcnn.server import create_app

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
    defaults = dict(embedding_size=16, feature_size=8, window_sizes=(2, 3), epochs=4, batch_size=16,
                    ngram_features=512, ngram_embedding_size=8, verbose=0)  # a small n-gram channel: fast saves
    return TextCNNClassifier(**{**defaults, **params}).fit(texts, labels)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(method: str, url: str, body=None, timeout: float = 30.0,
            headers: dict | None = None) -> tuple[int, dict, dict | str]:
    """One request with the standard library; returns (status, headers, parsed JSON body or text)."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as res:
            status, head, raw = res.status, dict(res.headers), res.read()
    except urllib.error.HTTPError as e:
        status, head, raw = e.code, dict(e.headers), e.read()
    return status, head, json.loads(raw) if head.get("content-type", "").startswith("application/json") else raw.decode()


def http(method: str, url: str, body=None, timeout: float = 30.0, headers: dict | None = None) -> tuple[int, dict]:
    """One request; returns (status, parsed JSON body)."""
    status, _, answer = request(method, url, body, timeout, headers)
    return status, answer


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30.0):
    """Polls ``condition`` until it is true (and returns it); fails after ``timeout`` seconds naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def metrics(url: str) -> dict[tuple, float]:
    """GET /metrics parsed: {(sample name, sorted label items): value}."""
    status, text = http("GET", url + "/metrics")
    assert status == 200, text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


class InProcessServer:
    """The application from :func:`textcnn.server.create_app` under a real uvicorn server, in a thread of
    this process: the test can hold the model or break it (``Gated``) while real HTTP requests arrive."""

    def __init__(self, clf, settings, **kwargs) -> None:
        self.app = create_app(clf, settings, **kwargs)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def runtime(self):
        return self.app.state.runtime

    def __enter__(self) -> "InProcessServer":
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive(), "uvicorn to start")
        assert self.server.started, "uvicorn did not start"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)


class Gated:
    """A real classifier whose model calls wait while ``release`` is clear, and fail on the text
    ``fail_on`` (with an exception of type ``error``). Records each call's texts and thread name."""

    def __init__(self, clf) -> None:
        self.clf = clf
        self.release = threading.Event()
        self.release.set()
        self.calls: list[list[str]] = []
        self.threads: list[str] = []
        self.fail_on: str | None = None
        self.error: type[BaseException] = RuntimeError

    def __getattr__(self, name):
        return getattr(self.clf, name)

    def _enter(self, texts) -> None:
        self.calls.append(list(texts))
        self.threads.append(threading.current_thread().name)
        assert self.release.wait(30), "the test never released the model"
        if self.fail_on is not None and self.fail_on in texts:
            raise self.error(f"injected fault on {self.fail_on!r}")

    def predict_records(self, texts, top_k: int = 1):
        self._enter(texts)
        return self.clf.predict_records(texts, top_k)

    def explain(self, texts, *, classes=None):
        self._enter(texts)
        return self.clf.explain(texts, classes=classes)


def in_threads(fn: Callable, args: list) -> tuple[list, list[threading.Thread]]:
    """Starts ``fn(arg)`` for each arg in its own thread; returns the results list (filled as they end) and the threads."""
    results = [None] * len(args)

    def call(i, arg):
        results[i] = fn(arg)

    threads = [threading.Thread(target=call, args=(i, a), daemon=True) for i, a in enumerate(args)]
    for t in threads:
        t.start()
    return results, threads


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
            time.sleep(0.05)
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
