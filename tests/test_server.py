"""The REST server over real HTTP: a ``textcnn serve`` subprocess on 127.0.0.1, stopped with SIGTERM."""

from __future__ import annotations

import http.client as httpclient
import json
import signal
import socket
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from .serving import InProcessServer, Server, http, metrics, tiny_corpus, train_tiny, wait_for

import textcnn
from textcnn.cli import main
from textcnn.server import ServerSettings, resolve_allowed_hosts, static_dir

TEXTS, _ = tiny_corpus(40, seed=7)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("serve") / "model"
    train_tiny(epochs=6).save(path)
    return path


@pytest.fixture(scope="module")
def clf(model_dir):
    return textcnn.load(model_dir)


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    """Default limits, batching on."""
    with Server(model_dir, log=tmp_path_factory.mktemp("log") / "server.log") as srv:
        yield srv


@pytest.fixture(scope="module")
def small_server(model_dir, tmp_path_factory):
    """Small limits, batching off, an access log."""
    flags = ["--max-texts", "4", "--max-text-chars", "100", "--max-body-bytes", "2000", "--no-batching",
             "--max-explain-cost", "100", "--access-log"]
    with Server(model_dir, *flags, log=tmp_path_factory.mktemp("log") / "server.log") as srv:
        yield srv


def test_health_and_metadata(server, clf):
    assert http("GET", server.url + "/v1/health") == (200, {"status": "ok", "model_loaded": True})
    status, meta = http("GET", server.url + "/v1/metadata")
    assert status == 200
    assert meta["labels"] == list(clf.classes_)
    assert meta["config"]["window_sizes"] == list(clf.config_.window_sizes)
    assert meta["versions"]["textcnn"] == textcnn.__version__ and "torch" in meta["versions"]
    assert meta["limits"]["max_texts"] == 256 and meta["limits"]["batching"] is True
    assert meta["vocab_size"] == len(clf.vocab_)


@pytest.mark.parametrize("which", ["server", "small_server"])
def test_predict_matches_the_python_api(which, request, clf):
    srv = request.getfixturevalue(which)
    texts = TEXTS[:3]
    status, body = http("POST", srv.url + "/v1/predict", {"texts": texts, "top_k": 2})
    assert status == 200
    expected = clf.predict_records(texts, top_k=2)
    assert [r["label"] for r in body["predictions"]] == [r["label"] for r in expected]
    for got, want in zip(body["predictions"], expected):
        assert got["text"] == want["text"]
        assert [t["label"] for t in got["top_k"]] == [t["label"] for t in want["top_k"]]
        assert got["probability"] == pytest.approx(want["probability"], abs=1e-5)
    assert http("POST", srv.url + "/v1/predict", {"texts": []}) == (200, {"predictions": []})


def test_explain_matches_the_python_api(server, clf):
    status, body = http("POST", server.url + "/v1/explain", {"texts": [TEXTS[0]], "classes": ["LOC"]})
    assert status == 200
    got, want = body["explanations"][0], clf.explain([TEXTS[0]], classes=["LOC"])[0]
    assert got["tokens"] == want["tokens"]
    assert got["classes"][0]["logit"] == pytest.approx(want["classes"][0]["logit"], abs=1e-5)
    assert got["classes"][0]["token_scores"] == pytest.approx(want["classes"][0]["token_scores"], abs=1e-5)


@pytest.mark.parametrize("which", ["server", "small_server"])
def test_concurrent_requests_give_the_same_answers(which, request):
    srv = request.getfixturevalue(which)
    payloads = [{"texts": TEXTS[i % 37:i % 37 + 1 + i % 3], "top_k": 1 + i % 3} for i in range(48)]
    single = [http("POST", srv.url + "/v1/predict", p)[1] for p in payloads]
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda p: http("POST", srv.url + "/v1/predict", p)[1], payloads))
    for a, b in zip(single, together):
        assert [r["text"] for r in a["predictions"]] == [r["text"] for r in b["predictions"]]
        assert [[t["label"] for t in r["top_k"]] for r in a["predictions"]] == \
               [[t["label"] for t in r["top_k"]] for r in b["predictions"]]
        for ra, rb in zip(a["predictions"], b["predictions"]):
            assert [t["probability"] for t in ra["top_k"]] == pytest.approx([t["probability"] for t in rb["top_k"]], abs=1e-5)


# ----- limits and bad requests -----

@pytest.mark.parametrize("path", ["/v1/predict", "/v1/explain"])
def test_too_many_texts(small_server, path):
    status, body = http("POST", small_server.url + path, {"texts": ["a"] * 5})
    assert status == 422
    assert body["limit"] == "max_texts" and body["value"] == 4
    assert "5 texts; the limit is max_texts=4 (the server's --max-texts)" in body["detail"]


def test_too_long_text(small_server):
    status, body = http("POST", small_server.url + "/v1/predict", {"texts": ["ok", "x" * 101]})
    assert status == 422
    assert (body["limit"], body["value"]) == ("max_text_chars", 100)
    assert "texts[1] has 101 characters; the limit is max_text_chars=100" in body["detail"]


def test_body_too_large_by_content_length(small_server):
    status, body = http("POST", small_server.url + "/v1/predict", {"texts": ["word " * 500]})
    assert status == 413
    assert (body["limit"], body["value"]) == ("max_body_bytes", 2000)
    assert "larger than max_body_bytes=2000 bytes (the server's --max-body-bytes)" in body["detail"]


def test_body_too_large_when_streamed_without_length(small_server):
    conn = httpclient.HTTPConnection("127.0.0.1", small_server.port, timeout=10)
    chunks = (b'{"texts": ["' if i == 0 else b"y" * 500 for i in range(10))
    conn.request("POST", "/v1/predict", body=chunks, headers={"Content-Type": "application/json"}, encode_chunked=True)
    res = conn.getresponse()
    assert res.status == 413
    assert json.loads(res.read())["limit"] == "max_body_bytes"
    conn.close()


def test_a_megabyte_text_is_refused(server):
    body = json.dumps({"texts": ["a" * 1_000_000]}).encode()
    status, answer = http("POST", server.url + "/v1/predict", body)
    assert status == 413 and answer["limit"] == "max_body_bytes" and answer["value"] == 1_000_000
    assert http("GET", server.url + "/v1/health")[0] == 200


def test_a_huge_declared_body_is_refused_without_waiting_for_it(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100000000\r\n\r\n{\"texts\": [\"")
        answer = b""
        while chunk := sock.recv(65536):  # the server answers and closes: it does not wait for 100 MB
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413")
    assert b'"limit":"max_body_bytes"' in answer


@pytest.mark.parametrize("payload, where", [
    ({"texts": ["a"], "top_k": 0}, "top_k"),
    ({"texts": "a single string"}, "texts"),
    ({"text": ["a"]}, "texts"),
])
def test_invalid_requests_get_422(server, payload, where):
    status, body = http("POST", server.url + "/v1/predict", payload)
    assert status == 422
    assert any(where in map(str, err["loc"]) for err in body["detail"])


def test_invalid_json_gets_422(server):
    status, body = http("POST", server.url + "/v1/predict", b'{"texts": [')
    assert status == 422 and body["detail"][0]["type"] == "json_invalid"


def test_repeated_classes_are_explained_once(server):
    """20,000 copies of one class (a 200 KB body) once gave a 104 MB answer after 10 s of CPU."""
    status, body = http("POST", server.url + "/v1/explain", {"texts": [TEXTS[0]], "classes": ["HUM"] * 20_000})
    assert status == 200
    assert [c["label"] for c in body["explanations"][0]["classes"]] == ["HUM"]


def test_explain_cost_limit(small_server, clf):
    # 2 texts of 4 tokens x (2 window sizes + the n-gram channel's 2) x 3 classes = 96 <= 100; one more token passes it
    ok = http("POST", small_server.url + "/v1/explain", {"texts": ["who was the king", "where is the river"]})
    assert ok[0] == 200 and len(ok[1]["explanations"][0]["classes"]) == 3
    status, body = http("POST", small_server.url + "/v1/explain", {"texts": ["who was the old king", "where is the river"]})
    assert status == 422
    assert (body["limit"], body["value"]) == ("max_explain_cost", 100)
    assert "108 n-gram scores" in body["detail"] and "--max-explain-cost" in body["detail"]
    one = http("POST", small_server.url + "/v1/explain", {"texts": ["who was the old king", "where is the river"],
                                                          "classes": ["HUM", "HUM"]})
    assert one[0] == 200  # one distinct class: 36


@pytest.mark.parametrize("path", ["/v1/predict", "/v1/explain"])
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""])
def test_json_endpoints_refuse_other_content_types(server, path, content_type):
    """A cross-site page may POST text/plain or a form without a preflight: it must not reach the model."""
    status, body = http("POST", server.url + path, {"texts": ["who was the king"]}, headers={"Content-Type": content_type})
    assert status == 415
    assert "Content-Type: application/json" in body["detail"]
    ok = http("POST", server.url + path, {"texts": ["who"]}, headers={"Content-Type": "Application/JSON; charset=utf-8"})
    assert ok[0] == 200


@pytest.mark.parametrize("host, allowed", [("evil.example", False), ("evil.example:80", False), ("127.0.0.1.evil.example", False),
                                           ("localhost", True), ("127.0.0.1", True), ("[::1]", True)])
def test_only_localhost_names_on_loopback(server, host, allowed):
    """A DNS-rebinding page (evil.example resolving to 127.0.0.1) sends its own Host: refused."""
    for path in ("/v1/metadata", "/v1/health", "/"):
        conn = httpclient.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", path, headers={"Host": host})
        res = conn.getresponse()
        answer = res.read()
        conn.close()
        if allowed:
            assert res.status == 200, (host, path)
        else:
            assert res.status == 400, (host, path)
            assert json.loads(answer)["limit"] == "allowed_hosts" and b"--allowed-hosts" in answer


def test_metadata_shows_no_server_paths(model_dir, tmp_path):
    clf = textcnn.load(model_dir)
    clf.config_ = clf.config_.replace(embeddings=str(tmp_path / "private" / "vectors.vec"))
    with InProcessServer(clf, ServerSettings()) as srv:
        meta = http("GET", srv.url + "/v1/metadata")[1]
    assert meta["config"]["embeddings"] == "vectors.vec"
    assert str(tmp_path) not in json.dumps(meta) and str(model_dir) not in json.dumps(meta)


def test_metadata_holds_the_model_card(model_dir, tmp_path):
    """/v1/metadata carries the card's facts as saved with the model, test metrics from textcnn eval included."""
    import shutil

    from textcnn.cli import main

    from .conftest import write_csv

    path = tmp_path / "model"
    shutil.copytree(model_dir, path)
    texts = ["who was the first king", "where is the capital", "how many people live there"] * 5
    labels = [str(y) for y in textcnn.load(path).predict(texts)]
    assert main(["eval", str(path), str(write_csv(tmp_path / "heldout.csv", texts, labels))]) == 0
    with InProcessServer(str(path), ServerSettings()) as srv:
        card = http("GET", srv.url + "/v1/metadata")[1]["card"]
    assert card["labels"] == [str(c) for c in textcnn.load(path).classes_]
    assert card["training_data"]["train"]["rows"] > 0 and card["dev_metrics"]["best_epoch"] >= 1
    assert set(card["test_metrics"]) == {"heldout.csv"} and 0 <= card["test_metrics"]["heldout.csv"]["accuracy"] <= 1
    assert str(tmp_path) not in json.dumps(card)


def test_metrics(server):
    before = metrics(server.url)
    assert http("POST", server.url + "/v1/predict", {"texts": ["who was the king"]})[0] == 200
    assert http("POST", server.url + "/v1/predict", {"texts": "no list"})[0] == 422
    assert http("GET", server.url + "/no/such/path/12345")[0] == 404
    after = metrics(server.url)

    def grew(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert grew("textcnn_requests_total", endpoint="/v1/predict", status="200") == 1
    assert grew("textcnn_requests_total", endpoint="/v1/predict", status="422") == 1
    assert grew("textcnn_requests_total", endpoint="other", status="404") == 1  # a client cannot add labels
    assert grew("textcnn_request_duration_seconds_count", endpoint="/v1/predict") == 2
    assert grew("textcnn_batch_requests_count") == 1 and grew("textcnn_batch_texts_sum") == 1
    assert after[("textcnn_queue_depth", ())] == 0
    assert not any("no/such" in str(labels) for _, labels in after)


def test_two_apps_in_one_process_keep_their_own_metrics(clf):
    with InProcessServer(clf, ServerSettings()) as a, InProcessServer(clf, ServerSettings()) as b:
        assert http("POST", a.url + "/v1/predict", {"texts": ["who"]})[0] == 200
        key = ("textcnn_requests_total", (("endpoint", "/v1/predict"), ("status", "200")))
        assert metrics(a.url)[key] == 1 and key not in metrics(b.url)


def test_access_log(server, small_server):
    """Off by default; --access-log writes one line per request."""
    assert http("POST", small_server.url + "/v1/predict", {"texts": ["who was it"]})[0] == 200
    assert http("POST", server.url + "/v1/predict", {"texts": ["who was it"]})[0] == 200
    wait_for(lambda: '"POST /v1/predict HTTP/1.1" 200' in small_server.log.read_text(), "the access log line")
    assert "/v1/predict" not in server.log.read_text()


def test_allowed_hosts_follow_the_address():
    assert resolve_allowed_hosts(ServerSettings(), "127.0.0.1").allowed_hosts == ("localhost", "127.0.0.1", "::1")
    assert resolve_allowed_hosts(ServerSettings(), "::1").allowed_hosts == ("localhost", "127.0.0.1", "::1")
    assert resolve_allowed_hosts(ServerSettings(), "0.0.0.0").allowed_hosts == ("*",)
    given = ServerSettings(allowed_hosts=("api.example.com",))
    assert resolve_allowed_hosts(given, "0.0.0.0") == given


def test_unknown_class_in_explain(server):
    status, body = http("POST", server.url + "/v1/explain", {"texts": ["a"], "classes": ["SPORT"]})
    assert status == 422
    assert "The class 'SPORT' is not one of the model's classes" in body["detail"]


def test_page_docs_and_static_files(server):
    for path, needle in [("/", b"How the model sees this text"), ("/static/app.js", b"/v1/explain"),
                         ("/static/style.css", b".bar"), ("/docs", b"swagger"), ("/openapi.json", b"/v1/predict"),
                         ("/openapi.json", b"PredictRequest")]:
        conn = httpclient.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", path)
        res = conn.getresponse()
        assert res.status == 200, path
        assert needle in res.read(), path
        conn.close()
    for name in ("index.html", "app.js", "style.css"):  # no CDN: the page works offline
        source = (static_dir() / name).read_text()
        assert "http://" not in source and "https://" not in source and "//cdn" not in source


# ----- shutdown -----

def test_sigterm_finishes_the_request_in_flight(model_dir, tmp_path):
    srv = Server(model_dir, "--no-batching", log=tmp_path / "server.log")
    with srv:
        body = json.dumps({"texts": ["how many kings ?"]}).encode()
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body[:10])
        # The request is in flight (headers read, body half sent) once the server counts it.
        wait_for(lambda: metrics(srv.url)[("textcnn_queue_depth", ())] == 1, "the request to be admitted")
        srv.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: not _accepts_connections(srv.port), "the server to stop listening")
        assert srv.proc.poll() is None, "the server quit with a request in flight"
        sock.sendall(body[10:])
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        sock.close()
        assert answer.startswith(b"HTTP/1.1 200")
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["predictions"][0]["text"] == "how many kings ?"
        # uvicorn re-raises the signal once it has shut down cleanly, as a process killed by it would end.
        assert srv.proc.wait(20) in (0, -signal.SIGTERM)
        assert "Traceback" not in srv.log.read_text()


def _accepts_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


# ----- the command line -----

def test_serve_bad_model_dir(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--max-texts", "0"], "--max-texts must be >= 1. Got 0 instead."),
    (["--max-queue", "0"], "--max-queue must be >= 1. Got 0 instead."),
    (["--allowed-hosts", "a*.example.com"], "--allowed-hosts: 'a*.example.com' is not a host name"),
])
def test_serve_bad_limit(model_dir, capsys, flags, message):
    assert main(["serve", str(model_dir), *flags]) == 2
    assert message in capsys.readouterr().err


def test_serve_port_in_use(model_dir, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(model_dir), "--port", str(port)]) == 2
    assert f"Cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_serve_without_fastapi(model_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "fastapi", None)
    assert main(["serve", str(model_dir)]) == 2
    assert "pip install 'textcnn[serve]'" in capsys.readouterr().err
