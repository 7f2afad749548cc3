"""``textcnn serve``: a REST server and web page over a saved model (FastAPI + uvicorn, extra ``serve``).

Endpoints: ``POST /v1/predict``, ``POST /v1/explain``, ``GET /v1/health``, ``GET /v1/metadata``, the
OpenAPI docs at ``/docs`` and the web page at ``/``. The model loads once, in the lifespan.

Concurrent predict requests are batched on the server (:class:`MicroBatcher`): while one batch runs
on the model, the requests that arrive queue up and go in the next batch, up to ``max_batch`` texts;
under load (the last batch held several requests) a batch also waits up to ``batch_wait_ms`` for
company, while a lone client is answered at once. Limits on texts per request, characters per
text and body bytes answer JSON 422 / 413 naming the limit and its value. uvicorn handles SIGTERM:
it stops accepting connections and finishes the requests in flight before the lifespan ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import platform
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

from .errors import missing_dependency


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    """Request limits and batching. Each field is a ``textcnn serve`` flag of the same name."""

    max_texts: int = 256
    max_text_chars: int = 20_000
    max_body_bytes: int = 1_000_000
    batching: bool = True
    batch_wait_ms: float = 2.0
    max_batch: int = 256


_FLAG_HELP = {
    "max_texts": "most texts in one request",
    "max_text_chars": "most characters in one text",
    "max_body_bytes": "largest request body in bytes",
    "batching": "batch concurrent predict requests together on the server",
    "batch_wait_ms": "how long a batch waits for more requests, in milliseconds",
    "max_batch": "most texts in one server-side batch",
}


def add_serve_flags(parser: argparse.ArgumentParser) -> None:
    """--host, --port and one flag per :class:`ServerSettings` field."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on [127.0.0.1]")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on [8000]")
    for f in dataclasses.fields(ServerSettings):
        name = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            parser.add_argument(name, action=argparse.BooleanOptionalAction, default=f.default,
                                help=f"{_FLAG_HELP[f.name]} [{f.default}]")
        else:
            parser.add_argument(name, type=int if f.type == "int" else float, default=f.default,
                                help=f"{_FLAG_HELP[f.name]} [{f.default}]")


def check_settings(settings: ServerSettings) -> None:
    from .errors import ConfigError

    for f in dataclasses.fields(ServerSettings):
        value = getattr(settings, f.name)
        if f.type != "bool" and value < (0 if f.name == "batch_wait_ms" else 1):
            bound = ">= 0" if f.name == "batch_wait_ms" else ">= 1"
            raise ConfigError(f"--{f.name.replace('_', '-')} must be {bound}. Got {value} instead.")


def check_port_free(host: str, port: int) -> None:
    """A clear error before loading anything when the address is taken (uvicorn would only log it)."""
    from .errors import ConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            s.bind((host, port))
        except OSError as e:
            raise ConfigError(f"Cannot listen on {host}:{port}: {e.strerror}. Choose another --port or --host, "
                              "or stop the program that uses it.") from None


def _import_serving():
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise missing_dependency(e.name or "fastapi", "serve", "'textcnn serve'") from e


def run_server(model_dir, *, host: str = "127.0.0.1", port: int = 8000, settings: ServerSettings = ServerSettings(),
               runtime: str = "torch") -> None:
    """Loads the model and serves it until SIGINT/SIGTERM (requests in flight are finished first).

    ``runtime``: "torch" (the classifier), "onnx" or "onnx-int8" (the exported graph via textcnn.runtime).
    """
    _import_serving()
    import uvicorn

    check_settings(settings)
    check_port_free(host, port)
    clf = load_for_serving(model_dir, runtime)  # a bad model directory fails here, as a clean CLI error, before binding
    app = create_app(clf, settings)
    print(f"serving {model_dir} on http://{host}:{port}  (API docs: /docs)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


def load_for_serving(model_dir, runtime: str = "torch"):
    """The classifier, or the PyTorch-free predictor of textcnn.runtime (same predict_records and attributes)."""
    if runtime == "torch":
        from . import load

        return load(model_dir)
    from . import runtime as onnx_runtime

    return onnx_runtime.load(model_dir, int8=runtime == "onnx-int8")


class LimitExceeded(Exception):
    """A request over one of the server's limits; becomes a JSON 413 or 422."""

    def __init__(self, status: int, limit: str, value: int, message: str) -> None:
        super().__init__(message)
        self.status, self.limit, self.value, self.message = status, limit, value, message

    def body(self) -> dict:
        return {"detail": self.message, "limit": self.limit, "value": self.value}


class MicroBatcher:
    """Gathers concurrent predict calls into one model call, in a single worker thread."""

    def __init__(self, clf, wait_ms: float, max_batch: int) -> None:
        self.clf, self.wait, self.max_batch = clf, wait_ms / 1000.0, max_batch
        self.queue: asyncio.Queue = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="textcnn-batch")
        self.task: asyncio.Task | None = None
        self.busy = False

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.executor.shutdown(wait=True)

    async def predict_records(self, texts: list[str], top_k: int) -> list[dict]:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, top_k, future))
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
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            texts = [t for item in batch for t in item[0]]
            top_k = max(item[1] for item in batch)
            try:
                records = await loop.run_in_executor(self.executor, self.clf.predict_records, texts, top_k)
            except Exception as e:  # noqa: BLE001 - handed to every waiting request
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            start = 0
            for item_texts, k, future in batch:
                part = records[start:start + len(item_texts)]
                start += len(item_texts)
                if not future.done():
                    future.set_result([{**r, "top_k": r["top_k"][:k]} for r in part])


def create_app(clf_or_dir, settings: ServerSettings = ServerSettings()):
    """The FastAPI application. ``clf_or_dir``: a fitted classifier, or a model directory to load at start-up."""
    _import_serving()
    from .server_app import build_app

    return build_app(clf_or_dir, settings)


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
