"""A bounded HTTP/1.1 load generator in Python, for machines without wrk: replays the pre-signed
requests of `bench.load` over N keep-alive connections for a fixed time, then prints the same
JSON line as `bench/inbound.lua`. Run it as its own process: `python -m bench.pyload --help`."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit


def build_requests(path: str, host: str, target: str) -> list[bytes]:
    requests = []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            signature, body = line.rstrip("\n").split("\t", 1)
            payload = body.encode()
            head = (f"POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                    f"X-Twilio-Signature: {signature}\r\nContent-Length: {len(payload)}\r\n\r\n")
            requests.append(head.encode() + payload)
    return requests


async def run(url: str, requests: list[bytes], connections: int, duration: float) -> dict[str, float]:
    parts = urlsplit(url)
    latencies: list[float] = []
    counts = {"requests": 0, "bytes": 0, "status_errors": 0, "read_errors": 0, "connect_errors": 0, "timeouts": 0,
              "wrapped": 0}
    next_index = 0
    stop_at = time.perf_counter() + duration

    def take() -> bytes:
        nonlocal next_index
        if next_index >= len(requests):
            next_index = 0
            counts["wrapped"] += 1
        request = requests[next_index]
        next_index += 1
        return request

    async def connection() -> None:
        try:
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        except OSError:
            counts["connect_errors"] += 1
            return
        try:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                writer.write(take())
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
                except TimeoutError:
                    counts["timeouts"] += 1
                    return
                status = int(head.split(b" ", 2)[1])
                length = 0
                for header in head.split(b"\r\n"):
                    if header.lower().startswith(b"content-length:"):
                        length = int(header.split(b":", 1)[1])
                body = await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                counts["requests"] += 1
                counts["bytes"] += len(head) + len(body)
                if status >= 400:
                    counts["status_errors"] += 1
        except (OSError, asyncio.IncompleteReadError):
            counts["read_errors"] += 1
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    elapsed = time.perf_counter() - began
    latencies.sort()

    def percentile(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))] * 1e6 if latencies else 0.0

    return {"duration_us": elapsed * 1e6, **counts, "write_errors": 0, "p50_us": percentile(50),
            "p90_us": percentile(90), "p99_us": percentile(99), "max_us": latencies[-1] * 1e6 if latencies else 0,
            "mean_us": sum(latencies) / len(latencies) * 1e6 if latencies else 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--requests", required=True, help="file of pre-signed requests (bench.load)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    if urlsplit(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the benchmark only sends traffic to this machine (127.0.0.1)")
    parts = urlsplit(args.url)
    requests = build_requests(args.requests, parts.netloc, parts.path)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(args.url, requests, args.connections, args.duration))
    else:
        result = uvloop.run(run(args.url, requests, args.connections, args.duration))
    print("OPTFLOW_BENCH_JSON " + json.dumps({k: int(v) if k != "mean_us" else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
