"""The FastAPI application behind ``textcnn serve`` (imported only once fastapi is known to be there)."""

from __future__ import annotations

import dataclasses
import inspect
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException

from .data import to_python
from .errors import TextCNNError
from .server import LimitExceeded, MicroBatcher, ServerSettings, load_for_serving, static_dir, versions


class PredictRequest(BaseModel):
    texts: list[str] = Field(description="The texts to classify.", examples=[["How many people live in Tokyo?"]])
    top_k: int = Field(1, ge=1, description="Also list the K most probable labels.")


class ExplainRequest(BaseModel):
    texts: list[str] = Field(description="The texts to explain.", examples=[["How many people live in Tokyo?"]])
    classes: list[str] | None = Field(None, description="Labels to explain; default every class.")


# A refused body up to this size is read and dropped before the 413 goes out, so a client that writes
# its whole body before reading (most do) sees the answer instead of a broken pipe. Past it: answer, close.
DRAIN_BYTES = 16 * 2**20


class _BodyTooLarge(HTTPException):
    """Raised while the body streams in; an HTTPException so FastAPI's body parsing passes it on."""

    def __init__(self, error: LimitExceeded, close: bool) -> None:
        super().__init__(status_code=error.status, detail=error.message)
        self.error, self.close = error, close

    def response(self) -> JSONResponse:
        return JSONResponse(self.error.body(), status_code=self.error.status,
                            headers={"Connection": "close"} if self.close else None)


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


class BodyLimit:
    """ASGI middleware: 413 for a declared Content-Length over the limit, and for a streamed body that passes it."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            drained = int(declared) <= DRAIN_BYTES and await _drain(receive)
            response = _BodyTooLarge(_body_limit_error(self.max_bytes), close=not drained).response()
            return await response(scope, receive, send)
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


async def predict_response(app, body: PredictRequest, settings: ServerSettings) -> JSONResponse:
    """POST /v1/predict, for the FastAPI route and for :class:`FastPredict` alike."""
    check_limits(body.texts, settings)
    clf, batcher = app.state.clf, app.state.batcher
    if not body.texts:
        records = []
    elif batcher is not None:
        records = await batcher.predict_records(body.texts, body.top_k)
    else:
        records = await run_in_threadpool(clf.predict_records, body.texts, body.top_k)
    return JSONResponse({"predictions": records})


class FastPredict:
    """ASGI middleware: POST /v1/predict parsed by pydantic and answered here, without FastAPI's routing
    and dependency machinery (much of a small request's cost). The FastAPI route of the same path
    documents the endpoint in OpenAPI and answers with the same :func:`predict_response`; errors keep
    FastAPI's shapes."""

    def __init__(self, app, settings: ServerSettings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/v1/predict" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        try:
            raw = await _read_body(receive)
            response = await predict_response(scope["app"], PredictRequest.model_validate_json(raw), self.settings)
        except _BodyTooLarge as e:
            response = e.response()
        except ValidationError as e:
            errors = [{**err, "loc": ["body", *err["loc"]]} for err in e.errors(include_url=False, include_context=False, include_input=False)]
            response = JSONResponse({"detail": errors}, status_code=422)
        except LimitExceeded as e:
            response = JSONResponse(e.body(), status_code=e.status)
        except TextCNNError as e:
            response = JSONResponse({"detail": str(e)}, status_code=422)
        await response(scope, receive, send)


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


def build_app(clf_or_dir, settings: ServerSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        clf = load_for_serving(clf_or_dir) if isinstance(clf_or_dir, (str, Path)) else clf_or_dir
        app.state.clf = clf
        clf.predict_records(["warm-up"])  # builds the prediction tables and loads the kernel before the first request
        app.state.batcher = MicroBatcher(clf, settings.batch_wait_ms, settings.max_batch) if settings.batching else None
        if app.state.batcher:
            app.state.batcher.start()
        yield
        if app.state.batcher:
            await app.state.batcher.stop()

    app = FastAPI(title="textcnn", summary="TextCNN text classification: predictions and exact n-gram explanations.",
                  version=versions()["textcnn"], lifespan=lifespan, **_no_telemetry())
    app.add_middleware(FastPredict, settings=settings)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)  # added last: runs first
    _add_error_handlers(app)
    _add_routes(app, settings)
    app.mount("/static", StaticFiles(directory=str(static_dir())), name="static")
    return app


def _no_telemetry() -> dict:
    """FastAPI >= 0.165 traces every request through OpenTelemetry by default: a third of the cost of a
    small request here, for spans nobody collects. Off where the option exists."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}}


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LimitExceeded)
    async def limit_exceeded(request: Request, exc: LimitExceeded):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(_BodyTooLarge)
    async def body_too_large(request: Request, exc: _BodyTooLarge):
        return exc.response()

    @app.exception_handler(TextCNNError)
    async def bad_input(request: Request, exc: TextCNNError):
        return JSONResponse({"detail": str(exc)}, status_code=422)


def _add_routes(app: FastAPI, settings: ServerSettings) -> None:
    @app.post("/v1/predict", summary="Classify texts")
    async def predict(body: PredictRequest, request: Request):
        """Labels and probabilities per text, as ``textcnn predict --format jsonl`` prints them."""
        return await predict_response(request.app, body, settings)

    @app.post("/v1/explain", summary="Explain predictions down to the winning n-grams")
    async def explain(body: ExplainRequest, request: Request):
        """Per text and class: the logit split exactly into the bias and the n-grams that won the max-pools."""
        check_limits(body.texts, settings)
        clf = request.app.state.clf
        explanations = await run_in_threadpool(clf.explain, body.texts, classes=body.classes)
        return JSONResponse({"explanations": explanations})

    @app.get("/v1/health", summary="Liveness and readiness")
    async def health(request: Request):
        return {"status": "ok", "model_loaded": getattr(request.app.state, "clf", None) is not None}

    @app.get("/v1/metadata", summary="Labels, config, limits and versions")
    async def metadata(request: Request):
        clf = request.app.state.clf
        return {
            "labels": [to_python(c) for c in clf.classes_],
            "multi_label": bool(clf.multi_label_),
            "thresholds": None if clf.thresholds_ is None else [float(t) for t in clf.thresholds_],
            "config": clf.config_.to_dict(),
            "tokenizer": clf.tokenizer_.spec(),
            "vocab_size": len(clf.vocab_),
            "parameters": sum(p.numel() for p in clf.model_.parameters()) if hasattr(clf, "model_") else None,
            "limits": dataclasses.asdict(settings),
            "versions": versions(),
        }

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(str(static_dir() / "index.html"))


