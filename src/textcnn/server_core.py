"""The parts of ``textcnn serve`` that need neither FastAPI nor uvicorn: settings, refusals, the
micro-batcher and the bounded model workers.

Both :mod:`textcnn.server` (the CLI and run layer) and :mod:`textcnn.server_app` (the FastAPI
application) import this module; neither imports the other at module level, so there is no cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import platform
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any, Callable

log = logging.getLogger("textcnn.server")

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
RETRY_AFTER_S = 1  # what a 503 tells the client to wait before trying again


def cores() -> int:
    """CPU cores this process may run on."""
    with contextlib.suppress(AttributeError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    """Request limits, overload limits, batching and logging. Each field is a ``textcnn serve`` flag
    of the same name (``allowed_hosts``: comma-separated)."""

    max_texts: int = 256
    max_text_chars: int = 20_000
    max_body_bytes: int = 1_000_000
    max_explain_cost: int = 100_000
    max_queue: int = 256
    max_connections: int = 1024
    workers: int = dataclasses.field(default_factory=cores)
    batching: bool = True
    batch_wait_ms: float = 2.0
    max_batch: int = 256
    access_log: bool = False
    allowed_hosts: tuple[str, ...] | None = None


FLAG_HELP = {
    "max_texts": "most texts in one request",
    "max_text_chars": "most characters in one text",
    "max_body_bytes": "largest request body in bytes",
    "max_explain_cost": "most n-gram scores one explain request may ask for (texts x classes x tokens x window sizes)",
    "max_queue": "most predict/explain requests in the server at once (read, queued or running); past it: 503",
    "max_connections": "most open connections and requests (uvicorn's limit_concurrency); past it uvicorn answers 503",
    "workers": "threads that run explain and --no-batching predictions (default: one per core)",
    "batching": "batch concurrent predict requests together on the server",
    "batch_wait_ms": "how long a batch waits for more requests, in milliseconds",
    "max_batch": "most texts in one server-side batch",
    "access_log": "log one line per request to standard output",
    "allowed_hosts": "comma-separated Host names to answer, or '*' for any (default: localhost, 127.0.0.1, ::1 "
                     "when bound to a loopback address, else any)",
}


class LimitExceeded(Exception):
    """A request over one of the server's limits; becomes a JSON 413, 422 or 503 naming the limit."""

    def __init__(self, status: int, limit: str, value: int, message: str) -> None:
        super().__init__(message)
        self.status, self.limit, self.value, self.message = status, limit, value, message

    def body(self) -> dict:
        return {"detail": self.message, "limit": self.limit, "value": self.value}

    def headers(self) -> dict | None:
        """A 503 says when to come back."""
        return {"Retry-After": str(RETRY_AFTER_S)} if self.status == 503 else None


class ServerUnavailable(Exception):
    """The server cannot answer any more (its batcher died); becomes a JSON 503."""


def queue_full(max_queue: int) -> LimitExceeded:
    return LimitExceeded(503, "max_queue", max_queue,
                         f"The server is busy: {max_queue} requests are already waiting for the model "
                         f"(max_queue={max_queue}, the server's --max-queue). Retry after {RETRY_AFTER_S} s.")


class MicroBatcher:
    """Gathers concurrent predict calls into one model call, in a single worker thread.

    If a batch fails, each of its requests is run again alone, so only the request whose texts fail
    gets the error. If the batcher task itself ends (a bug, or an error outside the model call),
    ``on_death`` is called with the exception and every waiting request gets :class:`ServerUnavailable`.
    """

    def __init__(self, clf, wait_ms: float, max_batch: int, max_queue: int,
                 on_batch: Callable[[int, int], None] | None = None,
                 on_death: Callable[[BaseException], None] | None = None) -> None:
        self.clf, self.wait, self.max_batch = clf, wait_ms / 1000.0, max_batch
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=max_queue)
        self.max_queue = max_queue
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="textcnn-batch")
        self.task: asyncio.Task | None = None
        self.busy = False
        self.stopping = False
        self.on_batch, self.on_death = on_batch, on_death
        self.death: BaseException | None = None
        self.current: list[tuple] = []  # the batch on the model now

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())
        self.task.add_done_callback(self._ended)

    async def stop(self) -> None:
        self.stopping = True
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.executor.shutdown(wait=True)

    def _ended(self, task: asyncio.Task) -> None:
        if self.stopping:
            return
        self.death = (task.exception() if not task.cancelled() else None) or asyncio.CancelledError("cancelled")
        waiting = list(self.current)
        while not self.queue.empty():
            waiting.append(self.queue.get_nowait())
        for *_, future in waiting:
            if not future.done():
                future.set_exception(ServerUnavailable(self.death_message()))
        if self.on_death is not None:
            self.on_death(self.death)

    def death_message(self) -> str:
        return f"The server's batcher stopped ({type(self.death).__name__}: {self.death}); the server is shutting down."

    async def predict_records(self, texts: list[str], top_k: int) -> list[dict]:
        if self.death is not None:
            raise ServerUnavailable(self.death_message())
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((texts, top_k, future))
        except asyncio.QueueFull:
            raise queue_full(self.max_queue) from None
        return await future

    async def _gather(self) -> list[tuple]:
        """The next batch: what is queued, plus what arrives within the wait window while under load."""
        batch = [await self.queue.get()]
        size = len(batch[0][0])
        loop = asyncio.get_running_loop()
        # A lone client would only lose the window: wait only when the last batch had company.
        deadline = loop.time() + (self.wait if self.busy else 0.0)
        while size < self.max_batch:
            if self.queue.empty():
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), left)
                except asyncio.TimeoutError:
                    break
            else:
                item = self.queue.get_nowait()
            batch.append(item)
            size += len(item[0])
        self.busy = len(batch) > 1
        return batch

    async def _run(self) -> None:
        while True:
            self.current = batch = await self._gather()
            texts = [t for item in batch for t in item[0]]
            if self.on_batch is not None:
                self.on_batch(len(batch), len(texts))
            if len(batch) == 1:
                await self._answer_alone(batch[0])
                continue
            try:
                records = await self._predict(texts, max(item[1] for item in batch))
            except Exception:  # noqa: BLE001 - find the request that fails; the others are answered
                for item in batch:
                    await self._answer_alone(item)
                continue
            start = 0
            for item_texts, k, future in batch:
                part = records[start:start + len(item_texts)]
                start += len(item_texts)
                if not future.done():
                    future.set_result([{**r, "top_k": r["top_k"][:k]} for r in part])

    async def _predict(self, texts: list[str], top_k: int) -> list[dict]:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.clf.predict_records, texts, top_k)

    async def _answer_alone(self, item: tuple) -> None:
        texts, k, future = item
        try:
            records = await self._predict(texts, k)
        except Exception as e:  # noqa: BLE001 - handed to the request that caused it
            if not future.done():
                future.set_exception(e)
            return
        if not future.done():
            future.set_result(records)


class ModelWorkers:
    """A thread pool sized to the cores for explain and unbatched predict calls. It never holds more
    than ``max_queue`` calls: the server admits at most that many model requests at once."""

    def __init__(self, workers: int) -> None:
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="textcnn-model")

    async def run(self, fn: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def stop(self) -> None:
        self.executor.shutdown(wait=True)


def versions() -> dict[str, Any]:
    import fastapi
    import uvicorn

    from . import __version__

    out = {"textcnn": __version__, "fastapi": fastapi.__version__, "uvicorn": uvicorn.__version__,
           "python": platform.python_version()}
    for package in ("torch", "onnxruntime"):  # whichever this process runs the model with (--runtime)
        if package in sys.modules:
            out[package] = sys.modules[package].__version__
    return out


def static_dir():
    return resources.files("textcnn") / "static"
