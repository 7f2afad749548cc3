"""The FastAPI application behind ``textcnn serve`` (imported only once fastapi is known to be there).

A request passes, outermost first: :class:`~textcnn.server_metrics.MetricsMiddleware` (counts and
times it), :class:`TrustedHosts` (400 for a Host header not in ``allowed_hosts``: a DNS-rebinding page
cannot read the API), :class:`Admission` (for POST /v1/predict and /v1/explain: 415 unless the body
is ``application/json``, 503 with ``Retry-After`` past ``max_queue`` requests, before the body is
read), :class:`BodyLimit` (413), :class:`FastPredict` and FastAPI's routes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import re
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, ValidationError, field_validator
from starlette.exceptions import HTTPException

from .card import card_facts, public_settings, read_facts
from .data import to_python
from .errors import ModelFormatError, TextCNNError
from .runtime import load_predictor
from .server_core import (LOCAL_HOSTS, LimitExceeded, MicroBatcher, ModelWorkers, ServerSettings, ServerUnavailable,
                          log, queue_full, static_dir, versions)
from .server_metrics import MetricsMiddleware, ServerMetrics

MODEL_ENDPOINTS = ("/v1/predict", "/v1/explain")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _unicode_texts(texts: list[str]) -> list[str]:
    """A JSON escape can smuggle a lone surrogate into a str; no answer holding it could be encoded."""
    for i, text in enumerate(texts):
        if match := _SURROGATE.search(text):
            raise ValueError(f"texts[{i}] holds a lone surrogate (U+{ord(match.group()):04X}) at character "
                             f"{match.start()}, which is not Unicode text. Send valid UTF-8 text.")
    return texts


class PredictRequest(BaseModel):
    texts: list[str] = Field(description="The texts to classify.", examples=[["How many people live in Tokyo?"]])
    top_k: int = Field(1, ge=1, description="Also list the K most probable labels.")

    _check_texts = field_validator("texts")(_unicode_texts)


class ExplainRequest(BaseModel):
    texts: list[str] = Field(description="The texts to explain.", examples=[["How many people live in Tokyo?"]])
    classes: list[str] | None = Field(None, description="Labels to explain (repeats are dropped); default every class.")

    _check_texts = field_validator("texts")(_unicode_texts)


class Runtime:
    """What the application holds while it runs: the model, its batcher and workers, the metrics and the
    count of admitted model requests. ``on_fatal`` is called once if the batcher dies (``textcnn serve``
    then shuts down)."""

    def __init__(self, settings: ServerSettings, on_fatal: Callable[[], None] | None) -> None:
        self.settings, self.on_fatal = settings, on_fatal
        self.pending = 0  # predict/explain requests admitted and not yet answered
        self.metrics = ServerMetrics(lambda: self.pending)
        self.clf = None
        self.card: dict | None = None  # the model card's facts, for /v1/metadata
        self.batcher: MicroBatcher | None = None
        self.workers: ModelWorkers | None = None

    def start(self, clf) -> None:
        s = self.settings
        self.clf = clf
        self.workers = ModelWorkers(s.workers)
        if s.batching:
            self.batcher = MicroBatcher(clf, s.batch_wait_ms, s.max_batch, s.max_queue,
                                        on_batch=self.metrics.observe_batch, on_death=self._batcher_died)
            self.batcher.start()

    async def stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.stop()
        if self.workers is not None:
            self.workers.stop()

    def _batcher_died(self, error: BaseException) -> None:
        log.error("textcnn serve: the batcher task died (%s: %s); /v1/health now answers 503 and the server "
                  "shuts down so that its supervisor can start a fresh one.", type(error).__name__, error)
        if self.on_fatal is not None:
            self.on_fatal()

    @property
    def dead(self) -> str | None:
        """Why the server can no longer answer predictions, or None."""
        return None if self.batcher is None or self.batcher.death is None else self.batcher.death_message()

    async def predict_records(self, texts: list[str], top_k: int) -> list[dict]:
        if not texts:
            return []
        if self.batcher is not None:
            return await self.batcher.predict_records(texts, top_k)
        self.metrics.observe_batch(1, len(texts))
        return await self.workers.run(self.clf.predict_records, texts, top_k)

    async def explain(self, texts: list[str], classes: list[str] | None) -> list[dict]:
        return await self.workers.run(_explain_within, self.clf, texts, classes, self.settings.max_explain_cost)


def _explain_within(clf, texts: list[str], classes: list[str] | None, max_cost: int) -> list[dict]:
    """``clf.explain``, refused before any work when its answer would pass ``max_explain_cost`` (runs in a worker)."""
    if not hasattr(clf, "model_"):  # textcnn.runtime (no PyTorch): its explain answers that it needs PyTorch
        return clf.explain(texts, classes=classes)
    from .explain import explain_cost  # imports torch: only where a PyTorch model is served

    cost = explain_cost(clf, texts, classes=classes)
    if cost > max_cost:
        raise LimitExceeded(422, "max_explain_cost", max_cost,
                            f"This explanation would hold {cost} n-gram scores (texts x classes x tokens x window "
                            f"sizes); the limit is max_explain_cost={max_cost} (the server's --max-explain-cost). "
                            "Ask for fewer texts or classes per request.")
    return clf.explain(texts, classes=classes)


# A refused body up to this size is read and dropped before the 413 goes out, so a client that writes
# its whole body before reading (most do) sees the answer instead of a broken pipe. Past it: answer, close.
DRAIN_BYTES = 16 * 2**20


def _json(body: dict, status: int, headers: dict | None = None, close: bool = False) -> JSONResponse:
    headers = {**(headers or {}), **({"Connection": "close"} if close else {})}
    return JSONResponse(body, status_code=status, headers=headers or None)


def _error_response(e: Exception, log_it: bool = True) -> JSONResponse:
    """The JSON answer for an error a request caused (or met). Unexpected errors are logged (``log_it``)."""
    if isinstance(e, LimitExceeded):
        return _json(e.body(), e.status, e.headers())
    if isinstance(e, ServerUnavailable):
        return _json({"detail": str(e)}, 503)
    if isinstance(e, TextCNNError):
        return _json({"detail": str(e)}, 422)
    if log_it:
        log.error("textcnn serve: a request failed", exc_info=e)
    return _json({"detail": f"The server failed on this request ({type(e).__name__}). It is logged; "
                            "other requests are not affected."}, 500)


class _BodyTooLarge(HTTPException):
    """Raised while the body streams in; an HTTPException so FastAPI's body parsing passes it on."""

    def __init__(self, error: LimitExceeded, close: bool) -> None:
        super().__init__(status_code=error.status, detail=error.message)
        self.error, self.close = error, close

    def response(self) -> JSONResponse:
        return _json(self.error.body(), self.error.status, close=self.close)


def _body_limit_error(max_bytes: int) -> LimitExceeded:
    return LimitExceeded(413, "max_body_bytes", max_bytes,
                         f"The request body is larger than max_body_bytes={max_bytes} bytes "
                         "(the server's --max-body-bytes). Send fewer or shorter texts per request.")


async def _drain(receive) -> bool:
    """Reads and drops the rest of a body; False if it passes DRAIN_BYTES or the client goes away."""
    seen = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return False
        seen += len(message.get("body", b""))
        if seen > DRAIN_BYTES:
            return False
        if not message.get("more_body", False):
            return True


async def _refuse(scope, receive, send, body: dict, status: int, headers: dict | None = None) -> None:
    """Answers a request without reading its body into memory: drained when small, else the connection closes."""
    declared = dict(scope["headers"]).get(b"content-length")
    small = declared is None or (declared.isdigit() and int(declared) <= DRAIN_BYTES)
    drained = small and await _drain(receive)
    await _json(body, status, headers, close=not drained)(scope, receive, send)


class BodyLimit:
    """ASGI middleware: 413 for a declared Content-Length over the limit, and for a streamed body that passes it."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            error = _body_limit_error(self.max_bytes)
            return await _refuse(scope, receive, send, error.body(), error.status)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    drained = not message.get("more_body", False) or await _drain(receive)
                    raise _BodyTooLarge(_body_limit_error(self.max_bytes), close=not drained)
            return message

        return await self.app(scope, limited_receive, send)


class Admission:
    """ASGI middleware for POST /v1/predict and /v1/explain, before their bodies are read: 415 unless the
    Content-Type is application/json (a cross-site form or ``text/plain`` fetch cannot use the API), and
    503 with ``Retry-After`` once ``max_queue`` of them are in the server. Memory is bounded by
    ``max_queue x max_body_bytes`` (and whatever uvicorn buffers per connection)."""

    def __init__(self, app, runtime: Runtime) -> None:
        self.app, self.runtime = app, runtime

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in MODEL_ENDPOINTS:
            return await self.app(scope, receive, send)
        runtime = self.runtime
        content_type = dict(scope["headers"]).get(b"content-type", b"")
        if content_type.split(b";")[0].strip().lower() != b"application/json" and scope["method"] == "POST":
            got = content_type.decode("latin-1") or "none"
            return await _refuse(scope, receive, send, {
                "detail": f"{scope['path']} takes a JSON body: send the header 'Content-Type: application/json' "
                          f"(got: {got})."}, 415)
        if runtime.pending >= runtime.settings.max_queue:
            error = queue_full(runtime.settings.max_queue)
            return await _refuse(scope, receive, send, error.body(), error.status, error.headers())
        runtime.pending += 1
        try:
            await self.app(scope, receive, send)
        finally:
            runtime.pending -= 1


def _host_name(header: bytes) -> str:
    """The host part of a Host header, lower-cased, without port or IPv6 brackets."""
    host = header.decode("latin-1").strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class TrustedHosts:
    """ASGI middleware: a JSON 400 for a Host header the server does not answer to. ``*`` allows any;
    ``*.example.com`` allows its subdomains."""

    def __init__(self, app, allowed: tuple[str, ...]) -> None:
        self.app, self.any = app, "*" in allowed
        self.names = {h.strip("[]").lower() for h in allowed if not h.startswith("*.")}
        self.suffixes = tuple(h[1:].lower() for h in allowed if h.startswith("*."))
        self.allowed = allowed

    async def __call__(self, scope, receive, send):
        if self.any or scope["type"] != "http":
            return await self.app(scope, receive, send)
        host = _host_name(dict(scope["headers"]).get(b"host", b""))
        if host in self.names or (self.suffixes and host.endswith(self.suffixes)):
            return await self.app(scope, receive, send)
        await _refuse(scope, receive, send, {
            "detail": f"The Host header {host!r} is not one this server answers to ({', '.join(self.allowed)}). "
                      "Start it with --allowed-hosts naming that host (or '*' for any).",
            "limit": "allowed_hosts", "value": list(self.allowed)}, 400)


async def predict_response(runtime: Runtime, body: PredictRequest) -> JSONResponse:
    """POST /v1/predict, for the FastAPI route and for :class:`FastPredict` alike."""
    check_limits(body.texts, runtime.settings)
    return JSONResponse({"predictions": await runtime.predict_records(body.texts, body.top_k)})


class FastPredict:
    """ASGI middleware: POST /v1/predict parsed by pydantic and answered here, without FastAPI's routing
    and dependency machinery (much of a small request's cost). The FastAPI route of the same path
    documents the endpoint in OpenAPI and answers with the same :func:`predict_response`; errors keep
    FastAPI's shapes."""

    def __init__(self, app, runtime: Runtime) -> None:
        self.app, self.runtime = app, runtime

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/v1/predict" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        try:
            raw = await _read_body(receive)
            response = await predict_response(self.runtime, PredictRequest.model_validate_json(raw))
        except _BodyTooLarge as e:
            response = e.response()
        except ValidationError as e:
            response = _invalid([{**err, "loc": ["body", *err["loc"]]} for err in e.errors(include_url=False)])
        except Exception as e:  # noqa: BLE001 - every other error becomes its JSON answer
            response = _error_response(e)
        await response(scope, receive, send)


def _invalid(errors: list[dict]) -> JSONResponse:
    """FastAPI's 422 shape, without echoing the input (it may be large, or not encodable)."""
    keep = ("type", "loc", "msg")
    return JSONResponse({"detail": [{k: err[k] for k in keep if k in err} for err in errors]}, status_code=422)


async def _read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def check_limits(texts: list[str], settings: ServerSettings) -> None:
    if len(texts) > settings.max_texts:
        raise LimitExceeded(422, "max_texts", settings.max_texts,
                            f"The request holds {len(texts)} texts; the limit is max_texts={settings.max_texts} "
                            "(the server's --max-texts). Split it into several requests.")
    for i, text in enumerate(texts):
        if len(text) > settings.max_text_chars:
            raise LimitExceeded(422, "max_text_chars", settings.max_text_chars,
                                f"texts[{i}] has {len(text)} characters; the limit is max_text_chars="
                                f"{settings.max_text_chars} (the server's --max-text-chars). Shorten it.")


def build_app(clf_or_dir, settings: ServerSettings, on_fatal: Callable[[], None] | None = None) -> FastAPI:
    """The application; ``settings.allowed_hosts`` None means the loopback names."""
    runtime = Runtime(settings, on_fatal)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        clf = load_predictor(clf_or_dir) if isinstance(clf_or_dir, (str, Path)) else clf_or_dir
        clf.predict_records(["warm-up"])  # builds the prediction tables and loads the kernel before the first request
        runtime.start(clf)
        runtime.card = model_card(clf_or_dir, clf)
        app.state.clf = clf
        yield
        await runtime.stop()

    app = FastAPI(title="textcnn", summary="TextCNN text classification: predictions and exact n-gram explanations.",
                  version=versions()["textcnn"], lifespan=lifespan, **_no_telemetry())
    app.state.runtime = runtime
    app.add_middleware(FastPredict, runtime=runtime)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Admission, runtime=runtime)
    app.add_middleware(TrustedHosts, allowed=settings.allowed_hosts or LOCAL_HOSTS)
    app.add_middleware(MetricsMiddleware, metrics=runtime.metrics)  # added last: runs first
    _add_error_handlers(app)
    _add_routes(app, runtime)
    app.mount("/static", StaticFiles(directory=str(static_dir())), name="static")
    return app


def _no_telemetry() -> dict:
    """FastAPI >= 0.165 traces every request through OpenTelemetry by default: a third of the cost of a
    small request here, for spans nobody collects. Off where the option exists."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}}


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(_BodyTooLarge)
    async def body_too_large(request: Request, exc: _BodyTooLarge):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return _invalid(exc.errors())

    async def as_json(request: Request, exc: Exception):
        return _error_response(exc, log_it=False)  # starlette re-raises an unhandled error: uvicorn logs it

    for error in (LimitExceeded, ServerUnavailable, TextCNNError, Exception):
        app.add_exception_handler(error, as_json)


def public_config(clf) -> dict:
    """The model's config without server file paths: pretrained vectors named by their file's basename."""
    return public_settings(clf.config_.to_dict())


def model_card(clf_or_dir, clf) -> dict | None:
    """The model card's facts (textcnn.card): as saved with the model (with its test metrics), or
    from the classifier served from memory; None for a runtime predictor without a saved card."""
    if isinstance(clf_or_dir, (str, Path)):
        with contextlib.suppress(ModelFormatError):
            if (facts := read_facts(clf_or_dir)) is not None:
                return facts
    return card_facts(clf) if hasattr(clf, "model_") else None


def _add_routes(app: FastAPI, runtime: Runtime) -> None:
    settings = runtime.settings

    @app.post("/v1/predict", summary="Classify texts")
    async def predict(body: PredictRequest):
        """Labels and probabilities per text, as ``textcnn predict --format jsonl`` prints them."""
        return await predict_response(runtime, body)

    @app.post("/v1/explain", summary="Explain predictions down to the winning n-grams")
    async def explain(body: ExplainRequest):
        """Per text and class: the logit split exactly into the bias and the n-grams that won the max-pools."""
        check_limits(body.texts, settings)
        return JSONResponse({"explanations": await runtime.explain(body.texts, body.classes)})

    @app.get("/v1/health", summary="Liveness and readiness")
    async def health():
        if runtime.dead:
            return JSONResponse({"status": "unavailable", "model_loaded": True, "detail": runtime.dead}, status_code=503)
        return {"status": "ok", "model_loaded": runtime.clf is not None}

    @app.get("/v1/metadata", summary="Labels, config, limits and versions")
    async def metadata():
        clf = runtime.clf
        return {
            "labels": [to_python(c) for c in clf.classes_],
            "multi_label": bool(clf.multi_label_),
            "thresholds": None if clf.thresholds_ is None else [float(t) for t in clf.thresholds_],
            "config": public_config(clf),
            "tokenizer": clf.tokenizer_.spec(),
            "vocab_size": len(clf.vocab_),
            "parameters": sum(p.numel() for p in clf.model_.parameters()) if hasattr(clf, "model_") else None,
            "limits": dataclasses.asdict(settings),
            "versions": versions(),
            "card": runtime.card,
        }

    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def metrics():
        body, content_type = runtime.metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(str(static_dir() / "index.html"))
