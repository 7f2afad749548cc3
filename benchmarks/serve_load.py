"""Load on ``textcnn serve`` over loopback: throughput with and without batching, the cost of the access
log, and overload (4x the sustainable rate, then normal load).

1. **Throughput**: 1, 8 and 64 concurrent keep-alive clients, server-side batching on and off; each
   setting sends a fixed number of POST /v1/predict requests (real texts from a dataset's test split):
   requests/s, texts/s, p50 and p99 latency.
2. **Access log**: 64 clients with batching, ``--access-log`` and without, interleaved rounds.
3. **Overload**: a fresh server; its sustainable rate R is measured with 64 closed-loop clients; then an
   open-loop client sends at 4R for ``--overload-seconds`` (requests start on schedule whether or not
   earlier ones were answered, on up to ``--max-client-connections`` connections), then at R/2 for
   ``--recover-seconds``. Per phase: sent, answered (200), refused (503, with or without Retry-After),
   errors (other statuses, broken connections, no answer within 30 s), p50/p99 latency, and the
   server's peak resident memory (VmHWM). The server has recovered when the last phase answers all.

Every server runs as a subprocess on 127.0.0.1 and is stopped with SIGTERM; all traffic stays on
loopback, and every phase is bounded in requests and time. Timings taken beside other jobs are noisy:
the JSON records the load average.

Example:
    python benchmarks/serve_load.py --model-dir /tmp/trec-model --data-dir ../shared/datasets \\
        --json benchmarks/results/serve-load.json
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"  # loopback only
ANSWER_TIMEOUT_S = 30.0  # a request not answered by then counts as an error (the server hung)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", required=True, help="a model directory from 'textcnn train --out'")
    p.add_argument("--data-dir", default="../shared/datasets", help="datasets root [../shared/datasets]")
    p.add_argument("--dataset", default="trec", help="whose test.csv texts to send [trec]")
    p.add_argument("--clients", default="1,8,64", help="concurrent clients per run [1,8,64]")
    p.add_argument("--requests", type=int, default=3000, help="requests per run (fewer for 1 client: a third) [3000]")
    p.add_argument("--texts-per-request", type=int, default=1, help="texts in each request [1]")
    p.add_argument("--modes", default="on,off", help="server-side batching: on, off or both [on,off]")
    p.add_argument("--access-log-rounds", type=int, default=3, help="interleaved rounds with and without --access-log (0: skip) [3]")
    p.add_argument("--overload-seconds", type=float, default=30.0, help="overload phase length (0: skip) [30]")
    p.add_argument("--overload-factor", type=float, default=4.0, help="overload rate / sustainable rate [4]")
    p.add_argument("--recover-seconds", type=float, default=10.0, help="normal-load phase after overload [10]")
    p.add_argument("--overload-texts-per-request", type=int, default=16,
                   help="texts per request in the overload scenario (bigger requests keep the Python client "
                        "from being the bottleneck) [16]")
    p.add_argument("--max-client-connections", type=int, default=768, help="open-loop client's connection cap [768]")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    return p.parse_args()


def read_texts(path: Path, limit: int = 2000) -> list[str]:
    with path.open(encoding="utf-8", newline="") as f:
        return [row["text"] for row, _ in zip(csv.DictReader(f), range(limit))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(model_dir: str, *flags: str, log=None) -> tuple[subprocess.Popen, int]:
    """``textcnn serve`` on a free loopback port; its standard error goes to ``log`` (a file) if given."""
    port = free_port()
    cmd = [sys.executable, "-m", "textcnn", "serve", model_dir, "--host", HOST, "--port", str(port), *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"textcnn serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/v1/health", timeout=2):
                return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    sys.exit("textcnn serve did not start in 60 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def http_request(body: bytes) -> bytes:
    return (b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


async def read_response(reader) -> tuple[int, bytes]:
    """(status, head) of one response, its body read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    await reader.readexactly(length)
    return int(head[9:12]), head.lower()


# ----- closed loop: N clients, each sends its next request when the last is answered -----

async def client(port: int, bodies: list[bytes], counter, total: int, latencies: list, errors: list) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    while (i := next(counter)) < total:
        start = time.perf_counter()
        writer.write(http_request(bodies[i % len(bodies)]))
        await writer.drain()
        status, head = await read_response(reader)
        latencies.append(time.perf_counter() - start)
        if status != 200:
            errors.append(status)
    writer.close()


async def load(port: int, bodies: list[bytes], clients: int, total: int) -> dict:
    counter, latencies, errors = itertools.count(), [], []
    start = time.perf_counter()
    await asyncio.gather(*(client(port, bodies, counter, total, latencies, errors) for _ in range(clients)))
    elapsed = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000
    return {"clients": clients, "requests": total, "errors": len(errors), "seconds": elapsed,
            "requests_per_s": total / elapsed, "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


# ----- open loop: requests start on schedule, answered or not -----

class Phase:
    """Counts for one open-loop phase."""

    def __init__(self, name: str, rate: float, seconds: float) -> None:
        self.name, self.rate, self.seconds = name, rate, seconds
        self.sent = self.unsent = self.errors = self.refused_retry_after = self.refused_plain = 0
        self.ok_ms: list[float] = []
        self.refused_ms: list[float] = []
        self.error_kinds: dict[str, int] = {}

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    def report(self, elapsed: float, rss: dict) -> dict:
        def pct(xs, q):
            return float(np.percentile(xs, q)) if xs else None

        refused = self.refused_retry_after + self.refused_plain
        return {"phase": self.name, "target_rate_per_s": self.rate, "seconds": elapsed, "sent": self.sent,
                "offered_rate_per_s": self.sent / elapsed, "not_sent_client_cap": self.unsent,
                "answered_200": len(self.ok_ms), "refused_503": refused,
                "refused_503_with_retry_after": self.refused_retry_after, "refused_503_plain_uvicorn": self.refused_plain,
                "errors": self.errors, "error_kinds": self.error_kinds,
                "p50_ms": pct(self.ok_ms, 50), "p99_ms": pct(self.ok_ms, 99),
                "refused_p50_ms": pct(self.refused_ms, 50), "refused_p99_ms": pct(self.refused_ms, 99), **rss}


class Connections:
    """Keep-alive connections for the open-loop client, at most ``cap`` open. A connection idle for
    ``IDLE_S`` is dropped rather than reused: uvicorn closes idle ones after 5 s (a real client
    would retry on a fresh connection; this one never sends on a stale one)."""

    IDLE_S = 4.0

    def __init__(self, port: int, cap: int) -> None:
        self.port, self.cap, self.free, self.open = port, cap, [], 0

    async def get(self):
        while self.free:
            conn, last_used = self.free.pop()
            if time.monotonic() - last_used < self.IDLE_S:
                return conn
            self._close(conn)
        if self.open >= self.cap:
            return None
        self.open += 1
        try:
            return await asyncio.open_connection(HOST, self.port)
        except OSError:
            self.open -= 1
            raise

    def put(self, conn, keep: bool) -> None:
        if keep:
            self.free.append((conn, time.monotonic()))
        else:
            self._close(conn)

    def _close(self, conn) -> None:
        conn[1].close()
        self.open -= 1

    def close_all(self) -> None:
        while self.free:
            self._close(self.free.pop()[0])


async def one_request(conns: Connections, body: bytes, phase: Phase) -> None:
    try:
        conn = await conns.get()
    except OSError as e:
        phase.sent += 1
        phase.error(f"connect: {type(e).__name__}")
        return
    if conn is None:
        phase.unsent += 1
        return
    phase.sent += 1
    reader, writer = conn
    start = time.perf_counter()
    try:
        writer.write(http_request(body))
        await writer.drain()
        status, head = await asyncio.wait_for(read_response(reader), ANSWER_TIMEOUT_S)
    except asyncio.TimeoutError:
        phase.error("no answer in 30 s")
        conns.put(conn, keep=False)
        return
    except (OSError, asyncio.IncompleteReadError, ValueError) as e:
        phase.error(f"connection: {type(e).__name__}")
        conns.put(conn, keep=False)
        return
    ms = (time.perf_counter() - start) * 1000
    if status == 200:
        phase.ok_ms.append(ms)
    elif status == 503:
        phase.refused_ms.append(ms)
        if b"retry-after:" in head:
            phase.refused_retry_after += 1
        else:
            phase.refused_plain += 1
    else:
        phase.error(f"status {status}")
    conns.put(conn, keep=b"connection: close" not in head)


def rss_mb(pid: int) -> dict:
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return {"server_rss_mb": fields["VmRSS"], "server_peak_rss_mb": fields["VmHWM"]}


async def open_loop(port: int, pid: int, bodies: list[bytes], phase: Phase, conns: Connections) -> dict:
    loop = asyncio.get_running_loop()
    total = int(phase.rate * phase.seconds)
    tasks: set[asyncio.Task] = set()
    start = loop.time()
    for n in range(total):
        due = start + n / phase.rate
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        task = loop.create_task(one_request(conns, bodies[n % len(bodies)], phase))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=ANSWER_TIMEOUT_S + 5)
    return phase.report(loop.time() - start, rss_mb(pid))


async def overload_scenario(port: int, pid: int, bodies: list[bytes], sustainable: float, args) -> list[dict]:
    phases = [Phase("overload", sustainable * args.overload_factor, args.overload_seconds),
              Phase("recovery", sustainable / 2, args.recover_seconds)]
    out = []
    for phase in phases:
        conns = Connections(port, args.max_client_connections)
        out.append(await open_loop(port, pid, bodies, phase, conns))
        conns.close_all()
        print(f"{phase.name:>9}: {json.dumps(out[-1])}", flush=True)
    return out


def overload(args, texts: list[str]) -> dict:
    k = args.overload_texts_per_request
    bodies = [json.dumps({"texts": texts[i:i + k]}).encode() for i in range(0, len(texts) - k + 1, k)]
    log = tempfile.TemporaryFile()
    proc, port = start_server(args.model_dir, log=log)
    try:
        asyncio.run(load(port, bodies, 8, 100))  # warm-up
        before = rss_mb(proc.pid)
        measured = asyncio.run(load(port, bodies, 64, max(500, args.requests // 3)))
        sustainable = measured["requests_per_s"]
        print(f"sustainable: {sustainable:.0f} requests/s of {k} texts (64 closed-loop clients)", flush=True)
        phases = asyncio.run(overload_scenario(port, proc.pid, bodies, sustainable, args))
    finally:
        stop_server(proc)
    log.seek(0)
    lines = log.read().decode(errors="replace").splitlines()
    recovered = phases[-1]["answered_200"] == phases[-1]["sent"] and phases[-1]["errors"] == 0
    return {"texts_per_request": k, "sustainable": measured, "rss_before_mb": before, "phases": phases,
            "recovered": recovered, "server_exit_status": proc.returncode,
            "server_log": {"uvicorn_concurrency_warnings": sum("Exceeded concurrency limit" in x for x in lines),
                           "tracebacks": sum("Traceback" in x for x in lines),
                           "other_lines": [x for x in lines if "Exceeded concurrency limit" not in x][:20]}, "server": "textcnn serve, default limits (--max-queue 256, --max-connections 1024)"}


def throughput(args, texts: list[str]) -> list[dict]:
    k = args.texts_per_request
    bodies = [json.dumps({"texts": texts[i:i + k]}).encode() for i in range(0, len(texts) - k + 1, k)]
    results = []
    for mode in args.modes.split(","):
        proc, port = start_server(args.model_dir, *([] if mode == "on" else ["--no-batching"]))
        try:
            asyncio.run(load(port, bodies, 8, 200))  # warm-up
            for clients in map(int, args.clients.split(",")):
                total = args.requests // 3 if clients == 1 else args.requests
                r = asyncio.run(load(port, bodies, clients, total))
                r.update(batching=mode, texts_per_request=k, texts_per_s=r["requests_per_s"] * k)
                results.append(r)
                print(f"batching {mode:>3}  clients {clients:>3}  {r['requests_per_s']:8.1f} req/s  "
                      f"{r['texts_per_s']:8.1f} texts/s  p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms  "
                      f"errors {r['errors']}", flush=True)
        finally:
            stop_server(proc)
    return results


def access_log_cost(args, texts: list[str]) -> dict:
    """64 clients with batching, alternating servers with and without --access-log (its lines to /dev/null)."""
    bodies = [json.dumps({"texts": [t]}).encode() for t in texts]
    runs = {"off": [], "on": []}
    for _ in range(args.access_log_rounds):
        for setting in ("off", "on"):
            proc, port = start_server(args.model_dir, *(["--access-log"] if setting == "on" else []))
            try:
                asyncio.run(load(port, bodies, 8, 200))  # warm-up
                runs[setting].append(asyncio.run(load(port, bodies, 64, args.requests))["requests_per_s"])
            finally:
                stop_server(proc)
            print(f"access log {setting:>3}: {runs[setting][-1]:8.1f} req/s", flush=True)
    median = {s: float(np.median(v)) for s, v in runs.items()}
    return {"clients": 64, "requests": args.requests, "requests_per_s": runs, "median_requests_per_s": median,
            "on_vs_off": median["on"] / median["off"]}


def main() -> None:
    args = parse_args()
    texts = read_texts(Path(args.data_dir) / args.dataset / "test.csv")
    out = {"machine": machine(), "load_average_at_start": os.getloadavg(), "model_dir": args.model_dir,
           "note": "client and server share the machine's cores; the machine was shared with other jobs "
                   "(see load averages), so the numbers are noisy"}
    out["results"] = throughput(args, texts)
    by = {(r["batching"], r["clients"]): r["texts_per_s"] for r in out["results"]}
    if ("on", 64) in by and ("off", 64) in by:
        out["batching_speedup_64_clients"] = by[("on", 64)] / by[("off", 64)]
    if args.access_log_rounds:
        out["access_log"] = access_log_cost(args, texts)
    if args.overload_seconds:
        out["overload"] = overload(args, texts)
    out["load_average_at_end"] = os.getloadavg()
    print_table(out["results"], args)
    if "batching_speedup_64_clients" in out:
        print(f"\nbatching at 64 clients: {out['batching_speedup_64_clients']:.1f}x the texts/s of no batching")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


def machine() -> str:
    import torch

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads)")


def print_table(results: list[dict], args) -> None:
    print(f"\n{machine()}; model {args.model_dir}; {args.texts_per_request} text(s) per request\n")
    print("| batching | clients | requests | requests/s | texts/s | p50 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['batching']} | {r['clients']} | {r['requests']} | {r['requests_per_s']:.0f} | {r['texts_per_s']:.0f} "
              f"| {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |")


if __name__ == "__main__":
    main()
