#!/usr/bin/env python3
"""bench_service: service-level figures of fractald, measured in one run against a real server on
127.0.0.1 (bench/README.md conventions: medians and percentiles, warm-up excluded):
  - time to first chunk and total time of a large RenderStream;
  - cancel latency: from a client cancel of a render costing hours to the server idle again
    (GetStats.running == 0), median and max over 20 cancels;
  - unary Render latency p50/p99 for 256x256 tiles of workload A at max_iter 256 (workload T),
    beside the engine-only time the server reports for the same tiles (stats.compute_ms), from
    this Python client and, when it is built, from the C client bench/bench_tiles (libfractal),
    whose own cost is far smaller, with the server's phases (queue, compute, colour+encode, the
    rest) and the same tiles as raw_f32 (no colour, no encoding: the floor of RPC and queueing);
  - health p99 while every render worker is busy.
Usage: bench_service.py [FRACTALD_BIN]  (needs FRACTAL_PY_GEN with the generated stubs; the C
client is FRACTAL_BENCH_TILES, else bench/bench_tiles in the build tree of FRACTALD_BIN)."""
import os
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))
if len(sys.argv) > 1:
    os.environ["FRACTALD_BIN"] = sys.argv[1]
import fractald_harness as h  # noqa: E402

import grpc  # noqa: E402
from fractal.v1 import fractal_pb2 as pb, fractal_pb2_grpc as pbg  # noqa: E402
from fractal_health import health_pb2, health_pb2_grpc  # noqa: E402

OPTIONS = [("grpc.max_receive_message_length", 256 << 20)]
A = dict(julia=pb.Julia(c=pb.Complex(re=-0.8, im=0.156)), width=1920, height=1080, view=pb.View(width=3.0))
# c inside the Mandelbrot set: nearly all interior. 16384^2 x 1e6 iterations is ~2.7e14: hours.
HOURS = pb.RenderRequest(julia=pb.Julia(c=pb.Complex(re=-0.12, im=0.75)), width=16384, height=16384,
                         max_iter=1000000, view=pb.View(width=0.5))


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


def first_chunk(stub):
    req = pb.RenderRequest(width=16384, height=16384, max_iter=64)
    start = time.monotonic()
    first, total = None, 0
    for ev in stub.RenderStream(req, timeout=600):
        if ev.WhichOneof("event") == "chunk":
            if first is None:
                first = time.monotonic() - start
            total += len(ev.chunk.data)
    return first, time.monotonic() - start, total


def cancel_latency(stub, n=20):
    lat = []
    for _ in range(n):
        fut = stub.Render.future(HOURS, timeout=600)
        time.sleep(0.2)
        start = time.monotonic()
        fut.cancel()
        while stub.GetStats(pb.GetStatsRequest(), timeout=10).running:
            time.sleep(0.001)
        lat.append((time.monotonic() - start) * 1000)
    return lat


def tile_latency(stub, n=200):
    total, compute = [], []
    tiles = [(x, y) for y in range(0, 1080 - 256, 256) for x in range(0, 1920 - 256, 256)]
    for k in range(n + 20):
        x, y = tiles[k % len(tiles)]
        req = pb.RenderRequest(max_iter=256, region=pb.Region(x=x, y=y, width=256, height=256), **A)
        start = time.monotonic()
        reply = stub.Render(req, timeout=30)
        if k >= 20:  # warm-up excluded
            total.append((time.monotonic() - start) * 1000)
            compute.append(reply.stats.compute_ms)
    return total, compute


def bench_tiles_path():
    """The C tile client: FRACTAL_BENCH_TILES, else build/bench/bench_tiles beside build/server/."""
    exe = os.environ.get("FRACTAL_BENCH_TILES")
    if not exe:
        server_bin = os.path.abspath(os.environ.get("FRACTALD_BIN", "fractald"))
        exe = os.path.join(os.path.dirname(os.path.dirname(server_bin)), "bench", "bench_tiles")
    return exe if os.access(exe, os.X_OK) else None


def c_tile_latency(target, n=200, fmt="png"):
    """The tile sequence of tile_latency from bench_tiles (libfractal, one channel for every call),
    in format fmt. Returns its key=value figures (p50_ms, p99_ms, compute_p50_ms, overhead_pct,
    queue_p50_ms, encode_p50_ms, server_p50_ms), or None when it is not built."""
    exe = bench_tiles_path()
    if exe is None:
        return None
    out = subprocess.run([exe, target, str(n), fmt], capture_output=True, text=True, timeout=300,
                         check=True)
    last = out.stdout.strip().splitlines()[-1].split()
    return {k: float(v) for k, v in (f.split("=") for f in last[1:])}


def health_under_load(channel, stub, workers, n=500):
    stop = threading.Event()

    def load():
        while not stop.is_set():
            try:
                stub.Render(pb.RenderRequest(max_iter=3000, **A), timeout=60)
            except grpc.RpcError:
                pass

    threads = [threading.Thread(target=load) for _ in range(workers + 2)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    health = health_pb2_grpc.HealthStub(channel)
    lat = []
    for _ in range(n):
        start = time.monotonic()
        health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        lat.append((time.monotonic() - start) * 1000)
    stop.set()
    for t in threads:
        t.join()
    return lat


def main():
    workers = 4
    server = h.Server("--max-cost", "1e15", "--max-inflight-cost", "1e16", "--workers", str(workers))
    try:
        with grpc.insecure_channel(server.target, options=OPTIONS) as ch:
            stub = pbg.RendererStub(ch)
            first, total, size = first_chunk(stub)
            print("stream 16384x16384 PNG (max_iter 64): first chunk %.1f ms, complete %.2f s, %.1f MB"
                  % (first * 1000, total, size / 1e6))
            lat = cancel_latency(stub)
            print("cancel latency over %d cancels of a ~2.7e14-iteration render: median %.1f ms, max %.1f ms"
                  % (len(lat), statistics.median(lat), max(lat)))
            total, compute = tile_latency(stub)
            p50, p99, c50 = pct(total, 50), pct(total, 99), statistics.median(compute)
            print("unary 256x256 tiles of A, max_iter 256, Python client: p50 %.2f ms, p99 %.2f ms; engine-only "
                  "p50 %.2f ms; RPC+queue+colour+encode add %.2f ms at p50 (%.0f%% of end to end)"
                  % (p50, p99, c50, p50 - c50, 100.0 * (p50 - c50) / p50))
            for fmt in ("png", "raw_f32"):
                c = c_tile_latency(server.target, fmt=fmt)
                if c is None:
                    print("unary 256x256 tiles of A, C client: bench_tiles not built (cmake --build build --target bench_tiles)")
                    break
                print("unary 256x256 %s tiles of A, max_iter 256, C client: p50 %.2f ms, p99 %.2f ms; engine-only "
                      "p50 %.2f ms; RPC+queue+colour+encode add %.2f ms at p50 (%.0f%% of end to end)"
                      % (fmt, c["p50_ms"], c["p99_ms"], c["compute_p50_ms"], c["p50_ms"] - c["compute_p50_ms"],
                         c["overhead_pct"]))
                print("  server phases (medians): queue %.2f ms, compute %.2f ms, colour+encode %.2f ms, rest %.2f ms; "
                      "RPC and client %.2f ms"
                      % (c["queue_p50_ms"], c["compute_p50_ms"], c["encode_p50_ms"],
                         c["server_p50_ms"] - c["queue_p50_ms"] - c["compute_p50_ms"] - c["encode_p50_ms"],
                         c["p50_ms"] - c["server_p50_ms"]))
            lat = health_under_load(ch, stub, workers)
            print("health under full load (%d render workers busy): p50 %.2f ms, p99 %.2f ms"
                  % (workers, pct(lat, 50), pct(lat, 99)))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
