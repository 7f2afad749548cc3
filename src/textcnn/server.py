"""``textcnn serve``: a REST server and web page over a saved model (FastAPI + uvicorn, extra ``serve``).

Endpoints: ``POST /v1/predict``, ``POST /v1/explain``, ``GET /v1/health``, ``GET /v1/metadata``,
``GET /metrics`` (Prometheus), the OpenAPI docs at ``/docs`` and the web page at ``/``. The model
loads once, in the lifespan.

This module is the command-line and run layer: flags, checks, and uvicorn. The application is in
:mod:`textcnn.server_app` (imported when a server is made, since FastAPI is an optional dependency);
settings, the micro-batcher and the workers are in :mod:`textcnn.server_core`, which both use.

Concurrent predict requests are batched on the server (:class:`~textcnn.server_core.MicroBatcher`):
while one batch runs on the model, the requests that arrive queue up and go in the next batch, up to
``max_batch`` texts; under load (the last batch held several requests) a batch also waits up to
``batch_wait_ms`` for company, while a lone client is answered at once. Explain and ``--no-batching``
calls run on ``--workers`` threads (one per core by default).

Limits and failure behaviour (each limit is a flag; refusals are JSON ``{"detail", "limit", "value"}``):

* texts per request, characters per text: 422; body bytes: 413; explain cost (texts x classes x
  tokens x window sizes, ``--max-explain-cost``): 422;
* ``--max-queue`` predict/explain requests in the server at once; past it 503 with ``Retry-After``,
  before the body is read. ``--max-connections`` is uvicorn's ``limit_concurrency``: past it uvicorn
  itself answers a plain-text 503 and closes the connection;
* a Content-Type other than ``application/json`` on predict/explain: 415; a Host header not in
  ``--allowed-hosts``: 400;
* a batch that fails is run again request by request: only the request that fails gets the error
  (422 for a TextCNNError, else a JSON 500, logged);
* if the batcher task dies, ``/v1/health`` answers 503, waiting and new predict requests get 503, an
  error line is logged and the server shuts down (finishing requests in flight) and exits with status
  1, so that its supervisor starts a fresh one: a process in an unknown state is not kept alive.

uvicorn handles SIGTERM: it stops accepting connections and finishes the requests in flight before the
lifespan ends.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import logging
import socket
import sys
from pathlib import Path

from .errors import ConfigError, missing_dependency
from .runtime import load_predictor
from .server_core import FLAG_HELP, LOCAL_HOSTS, ServerSettings, log, static_dir  # noqa: F401 - static_dir: public

_NON_NEGATIVE = ("batch_wait_ms",)


def add_serve_flags(parser: argparse.ArgumentParser) -> None:
    """--host, --port and one flag per :class:`ServerSettings` field."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on [127.0.0.1]")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on [8000]")
    defaults = ServerSettings()
    for f in dataclasses.fields(ServerSettings):
        name, default = "--" + f.name.replace("_", "-"), getattr(defaults, f.name)
        shown = "localhost names on loopback, else any" if default is None else default
        if f.type == "bool":
            parser.add_argument(name, action=argparse.BooleanOptionalAction, default=default,
                                help=f"{FLAG_HELP[f.name]} [{shown}]")
        elif f.name == "allowed_hosts":
            parser.add_argument(name, type=_host_list, default=None, metavar="HOSTS", help=FLAG_HELP[f.name])
        else:
            parser.add_argument(name, type=int if f.type == "int" else float, default=default,
                                help=f"{FLAG_HELP[f.name]} [{shown}]")


def _host_list(value: str) -> tuple[str, ...]:
    hosts = tuple(h.strip() for h in value.split(",") if h.strip())
    if not hosts:
        raise argparse.ArgumentTypeError("give at least one host name, or '*' for any")
    return hosts


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """The settings given by :func:`add_serve_flags`' flags, with ``allowed_hosts`` resolved for ``--host``."""
    settings = ServerSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ServerSettings)})
    return resolve_allowed_hosts(settings, args.host)


def resolve_allowed_hosts(settings: ServerSettings, host: str) -> ServerSettings:
    """Unset ``allowed_hosts``: the localhost names when bound to a loopback address, else any host."""
    if settings.allowed_hosts is not None:
        return settings
    return dataclasses.replace(settings, allowed_hosts=LOCAL_HOSTS if _is_loopback(host) else ("*",))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_settings(settings: ServerSettings) -> None:
    for f in dataclasses.fields(ServerSettings):
        value = getattr(settings, f.name)
        if f.type in ("int", "float") and value < (0 if f.name in _NON_NEGATIVE else 1):
            bound = ">= 0" if f.name in _NON_NEGATIVE else ">= 1"
            raise ConfigError(f"--{f.name.replace('_', '-')} must be {bound}. Got {value} instead.")
    for pattern in settings.allowed_hosts or ():
        if "*" in pattern[1:] or (pattern.startswith("*") and pattern != "*" and not pattern.startswith("*.")):
            raise ConfigError(f"--allowed-hosts: {pattern!r} is not a host name, '*' or '*.domain'.")


def check_port_free(host: str, port: int) -> None:
    """A clear error before loading anything when the address is taken (uvicorn would only log it)."""
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
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise missing_dependency(e.name or "fastapi", "serve", "'textcnn serve'") from e


def run_server(model, *, host: str = "127.0.0.1", port: int = 8000, settings: ServerSettings = ServerSettings(),
               runtime: str = "torch") -> int:
    """Loads the model (a directory, or a fitted classifier) and serves it until SIGINT/SIGTERM (requests
    in flight are finished first). Returns the exit status: 0, or 1 if the server stopped on a fault.

    ``runtime``: "torch" (the classifier), "onnx" or "onnx-int8" (the exported graph via textcnn.runtime).
    """
    _import_serving()

    settings = resolve_allowed_hosts(settings, host)
    check_settings(settings)
    check_port_free(host, port)
    # a bad model directory fails here, before binding
    clf = load_predictor(model, runtime) if isinstance(model, (str, Path)) else model
    server = make_server(clf, host=host, port=port, settings=settings)
    print(f"serving {model if isinstance(model, (str, Path)) else 'a classifier'} on http://{host}:{port}  "
          "(API docs: /docs)", flush=True)
    server.run()
    if not server.started or server.config.app.state.runtime.dead:
        return 1
    return 0


def make_server(clf, *, host: str, port: int, settings: ServerSettings):
    """A ``uvicorn.Server`` over :func:`create_app`, which stops itself if the batcher dies."""
    import uvicorn

    _configure_logging()
    holder = {}
    app = create_app(clf, settings, on_fatal=lambda: setattr(holder["server"], "should_exit", True))
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=settings.access_log,
                            limit_concurrency=settings.max_connections)
    if settings.access_log:  # log_level="warning" keeps uvicorn quiet, but the access lines are wanted
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    holder["server"] = uvicorn.Server(config)
    return holder["server"]


def _configure_logging() -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s:  %(message)s"))
        log.addHandler(handler)


def create_app(clf_or_dir, settings: ServerSettings = ServerSettings(), on_fatal=None):
    """The FastAPI application. ``clf_or_dir``: a fitted classifier, or a model directory to load at
    start-up. ``settings.allowed_hosts`` None answers only the localhost names."""
    _import_serving()
    from .server_app import build_app

    check_settings(settings)
    return build_app(clf_or_dir, settings, on_fatal)
