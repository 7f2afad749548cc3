"""The server under load and faults: a real uvicorn server in a thread of the test, over a real classifier
whose model calls the test holds on an event (``Gated``), so queues fill deterministically."""

from __future__ import annotations

import logging
import threading

import pytest
from .serving import Gated, InProcessServer, free_port, http, in_threads, metrics, request, train_tiny, wait_for

from textcnn.server import ServerSettings, run_server


@pytest.fixture(scope="module")
def trained():
    return train_tiny(epochs=3)


@pytest.fixture
def gated(trained):
    g = Gated(trained)
    yield g
    g.release.set()  # never leave a worker waiting


def _predict(url):
    return lambda text: http("POST", url + "/v1/predict", {"texts": [text]})


def _join(threads) -> None:
    for t in threads:
        t.join(30)
        assert not t.is_alive(), "a request hung"


def _hold_first_call(gated: Gated, srv: InProcessServer, text: str = "who was the first king ?"):
    """Sends one predict request and waits until the model holds it; returns its results and threads."""
    gated.release.clear()
    calls = len(gated.calls)
    first = in_threads(_predict(srv.url), [text])
    wait_for(lambda: len(gated.calls) > calls, "the first request to reach the model")
    return first


def test_concurrent_requests_are_batched(gated):
    """Requests that arrive while the model is busy go into one model call, and /metrics shows it."""
    with InProcessServer(gated, ServerSettings()) as srv:
        (first, t0) = _hold_first_call(gated, srv)
        results, threads = in_threads(_predict(srv.url), ["who is it ?", "where is paris ?", "how many kings ?"])
        wait_for(lambda: srv.runtime.batcher.queue.qsize() == 3, "three requests queued behind the first")
        gated.release.set()
        _join(t0 + threads)
        assert [r[0] for r in first + results] == [200] * 4
        assert sorted(gated.calls[-1]) == sorted(["who is it ?", "where is paris ?", "how many kings ?"])
        m = metrics(srv.url)
    assert m[("textcnn_batch_requests_count", ())] == 2
    assert m[("textcnn_batch_requests_sum", ())] == 4
    assert m[("textcnn_batch_requests_bucket", (("le", "2.0"),))] == 1  # the batch of 3 is past le=2
    assert m[("textcnn_batch_texts_bucket", (("le", "4.0"),))] == 2


def test_one_failing_text_fails_only_its_own_request(gated):
    gated.fail_on = "poison"
    with InProcessServer(gated, ServerSettings()) as srv:
        first, t0 = _hold_first_call(gated, srv)
        results, threads = in_threads(_predict(srv.url), ["who is it ?", "poison", "how many kings ?"])
        wait_for(lambda: srv.runtime.batcher.queue.qsize() == 3, "three requests queued")
        gated.release.set()
        _join(t0 + threads)
        statuses = [r[0] for r in results]
        assert first[0][0] == 200
        assert statuses == [200, 500, 200]
        assert "RuntimeError" in results[1][1]["detail"]
        assert results[0][1]["predictions"][0]["text"] == "who is it ?"
        assert http("GET", srv.url + "/v1/health")[0] == 200  # the batcher lives on


class Crash(BaseException):
    """Not an Exception: nothing in the batcher catches it, so its task dies."""


def test_a_dead_batcher_turns_health_to_503(gated, caplog):
    gated.fail_on, gated.error = "crash", Crash
    with InProcessServer(gated, ServerSettings()) as srv, caplog.at_level(logging.ERROR, "textcnn.server"):
        assert http("GET", srv.url + "/v1/health")[0] == 200
        first, t0 = _hold_first_call(gated, srv, "crash")
        queued, threads = in_threads(_predict(srv.url), ["who is it ?"])
        wait_for(lambda: srv.runtime.batcher.queue.qsize() == 1, "a request queued behind the crash")
        gated.release.set()
        _join(t0 + threads)
        # Neither the request in the dying batch nor the one queued behind it hangs.
        assert first[0][0] == 503 and queued[0][0] == 503
        status, body = http("GET", srv.url + "/v1/health")
        assert status == 503 and "batcher stopped" in body["detail"]
        assert http("POST", srv.url + "/v1/predict", {"texts": ["who"]})[0] == 503
    assert any("batcher task died (Crash" in r.getMessage() for r in caplog.records)


def test_a_dead_batcher_stops_textcnn_serve_with_status_1(gated):
    gated.fail_on, gated.error = "crash", Crash
    port, status = free_port(), []
    server = threading.Thread(target=lambda: status.append(run_server(gated, host="127.0.0.1", port=port)), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            return http("GET", url + "/v1/health", timeout=2)[0] == 200
        except OSError:
            return False

    wait_for(up, "the server to start")
    assert http("POST", url + "/v1/predict", {"texts": ["crash"]})[0] == 503
    server.join(30)
    assert not server.is_alive() and status == [1]


def test_past_max_queue_the_server_answers_503_with_retry_after(gated):
    with InProcessServer(gated, ServerSettings(max_queue=2)) as srv:
        first, t0 = _hold_first_call(gated, srv)
        second, t1 = in_threads(_predict(srv.url), ["who is it ?"])
        wait_for(lambda: srv.runtime.pending == 2, "two requests in the server")
        for path in ("/v1/predict", "/v1/explain"):
            status, headers, body = request("POST", srv.url + path, {"texts": ["where is it ?"]})
            assert status == 503 and headers["retry-after"] == "1"
            assert (body["limit"], body["value"]) == ("max_queue", 2) and "--max-queue" in body["detail"]
        assert http("GET", srv.url + "/v1/health")[0] == 200  # health is not queued behind the model
        assert metrics(srv.url)[("textcnn_queue_depth", ())] == 2
        gated.release.set()
        _join(t0 + t1)
        assert first[0][0] == 200 and second[0][0] == 200
        assert http("POST", srv.url + "/v1/predict", {"texts": ["who"]})[0] == 200  # recovered


@pytest.mark.parametrize("path, settings", [
    ("/v1/explain", ServerSettings(workers=1)),
    ("/v1/predict", ServerSettings(workers=1, batching=False)),
])
def test_explain_and_unbatched_predict_run_on_the_bounded_workers(gated, path, settings):
    """Not on starlette's 40-thread pool: with one worker held, the next call waits for it."""
    with InProcessServer(gated, settings) as srv:
        gated.release.clear()
        calls = len(gated.calls)
        results, threads = in_threads(lambda t: http("POST", srv.url + path, {"texts": [t]}), ["who is it ?", "where ?", "how many ?"])
        wait_for(lambda: srv.runtime.pending == 3, "three requests in the server")
        wait_for(lambda: len(gated.calls) == calls + 1, "one request on the model")
        # The other two wait for the one worker (with a thread each, they would be on the model too).
        wait_for(lambda: srv.runtime.workers.executor._work_queue.qsize() == 2, "two calls waiting for the worker")
        assert len(gated.calls) == calls + 1
        gated.release.set()
        _join(threads)
        assert [r[0] for r in results] == [200] * 3
        assert set(gated.threads[calls:]) == {"textcnn-model_0"}
