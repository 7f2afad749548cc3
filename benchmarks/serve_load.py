"""Load on ``textcnn serve`` over loopback: 1, 8 and 64 concurrent clients, server-side batching on and off.

Each setting sends a fixed number of POST /v1/predict requests (real texts from a dataset's test
split) over keep-alive connections, then stops: requests/s, texts/s, p50 and p99 latency. The server
runs as a subprocess on 127.0.0.1 and is stopped with SIGTERM. Run it alone (``flock /work/heavy.lock``):
timings taken beside other jobs are worthless.

Example:
    python benchmarks/serve_load.py --model-dir /tmp/trec-model --dataset trec
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
import time
import urllib.request
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"  # loopback only


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", required=True, help="a model directory from 'textcnn train --out'")
    p.add_argument("--data-dir", default="../shared/datasets", help="datasets root [../shared/datasets]")
    p.add_argument("--dataset", default="trec", help="whose test.csv texts to send [trec]")
    p.add_argument("--clients", default="1,8,64", help="concurrent clients per run [1,8,64]")
    p.add_argument("--requests", type=int, default=3000, help="requests per run (fewer for 1 client: a third) [3000]")
    p.add_argument("--texts-per-request", type=int, default=1, help="texts in each request [1]")
    p.add_argument("--modes", default="on,off", help="server-side batching: on, off or both [on,off]")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    return p.parse_args()


def read_texts(path: Path, limit: int = 2000) -> list[str]:
    with path.open(encoding="utf-8", newline="") as f:
        return [row["text"] for row, _ in zip(csv.DictReader(f), range(limit))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(model_dir: str, batching: bool) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cmd = [sys.executable, "-m", "textcnn", "serve", model_dir, "--host", HOST, "--port", str(port)]
    proc = subprocess.Popen(cmd + ([] if batching else ["--no-batching"]), stdout=subprocess.DEVNULL)
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


async def client(port: int, bodies: list[bytes], counter, total: int, latencies: list, errors: list) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    while (i := next(counter)) < total:
        body = bodies[i % len(bodies)]
        request = (b"POST /v1/predict HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n" % len(body)) + body
        start = time.perf_counter()
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - start)
        if not head.startswith(b"HTTP/1.1 200"):
            errors.append(head.split(b"\r\n")[0].decode())
    writer.close()


async def load(port: int, bodies: list[bytes], clients: int, total: int) -> dict:
    counter, latencies, errors = itertools.count(), [], []
    start = time.perf_counter()
    await asyncio.gather(*(client(port, bodies, counter, total, latencies, errors) for _ in range(clients)))
    elapsed = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000
    return {"clients": clients, "requests": total, "errors": len(errors), "seconds": elapsed,
            "requests_per_s": total / elapsed, "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def main() -> None:
    args = parse_args()
    texts = read_texts(Path(args.data_dir) / args.dataset / "test.csv")
    k = args.texts_per_request
    bodies = [json.dumps({"texts": texts[i:i + k]}).encode() for i in range(0, len(texts) - k + 1, k)]
    results = []
    for mode in args.modes.split(","):
        proc, port = start_server(args.model_dir, batching=mode == "on")
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
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    print_table(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "results": results}, indent=2) + "\n")


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
