"""Benchmark: the openai engine's throughput against a slow, flaky endpoint, by concurrency.

A loopback server answers every chat request after a fixed latency (a stand-in for a busy GPU
server or a hosted API) and fails a seeded share of them with 503 or 429 + Retry-After: 0. The
engine answers the same requests at several `max_concurrency` settings; the table shows wall time,
requests per second, the speed-up over one request at a time, and the retries it needed.

    python bench/endpoint_bench.py [--requests 200] [--latency 0.05] [--fault-rate 0.1]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from persyn import engines
from persyn.core import models
from persyn.engines import GenerationRequest, Sampling, Usage


def serve(latency: float, fault_rate: float) -> ThreadingHTTPServer:
    """Start the endpoint on a free loopback port; the same request text always fails or succeeds
    the same way on its first attempt, so every concurrency setting meets the same faults."""
    seen: set[str] = set()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            text = body["messages"][-1]["content"]
            time.sleep(latency)
            with lock:
                first = text not in seen
                seen.add(text)
            if first and random.Random(text).random() < fault_rate:
                status, headers = random.Random(text + "!").choice([(503, {}), (429, {"Retry-After": "0"})])
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            payload = json.dumps({"choices": [{"message": {"content": f"answer to {text}"}}],
                                  "usage": {"prompt_tokens": 12, "completion_tokens": 5}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    class Server(ThreadingHTTPServer):
        request_queue_size = 256  # the default backlog of 5 resets connections under 64 concurrent clients

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per answer at the server")
    parser.add_argument("--fault-rate", type=float, default=0.1, help="share of first attempts failing")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    args = parser.parse_args()
    logging.getLogger("persyn").setLevel(logging.ERROR)  # one warning per retry would bury the table
    model = models.resolve("api:bench-model")
    requests = [GenerationRequest(messages=[{"role": "user", "content": f"question {i}"}]) for i in range(args.requests)]
    print(f"{args.requests} requests, {args.latency * 1000:.0f} ms server latency, "
          f"{args.fault_rate:.0%} of first attempts fail (503 or 429)")
    print(f"{'max_concurrency':>15} {'wall s':>8} {'req/s':>8} {'speed-up':>9} {'retries':>8}")
    baseline = None
    for concurrency in args.concurrency:
        server = serve(args.latency, args.fault_rate)
        options = {"base_url": f"http://127.0.0.1:{server.server_port}/v1", "max_concurrency": concurrency,
                   "backoff_s": 0.01, "max_backoff_s": 0.05}
        engine = engines.load("openai", model, batch_size=args.requests, options=options)
        start = time.perf_counter()
        answers = engine.generate(requests, Sampling(max_tokens=8))
        wall = time.perf_counter() - start
        engine.close()
        server.shutdown()
        assert [a.text for a in answers] == [f"answer to question {i}" for i in range(args.requests)]
        baseline = baseline or wall
        print(f"{concurrency:>15} {wall:>8.2f} {args.requests / wall:>8.1f} {baseline / wall:>8.1f}x "
              f"{Usage.of(answers).retries:>8}")


if __name__ == "__main__":
    main()
