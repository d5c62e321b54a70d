#!/usr/bin/env python3
"""bench_fleet: a fleet of fractald servers on 127.0.0.1 from libfractal, over 1, 2 and 4 servers
(bench/README.md, "bench_fleet"):
  - tile traffic: 256x256 tiles of a mix of views (zoom 0..3 of the default Julia set, each call a
    view of its own, so no image cache answers), unary Render through one round-robin target, from
    tests/integration/fleet_driver (each thread its own libfractal handle);
  - one big render fanned out (fractal render --server A,B,...): wall time, and the client's own
    CPU time (receiving, and for PNG decoding the bands and encoding the image again).
Every server runs with --threads 1 and no OpenCL device: on a small machine the servers share its cores, so this is a
simulation of one single-core host per server; the ratios say how far the fleet scales until the
machine's cores run out, and the client's CPU time per render says where a fleet of separate hosts
would stop scaling (the client's ceiling). Medians of REPS runs after one warm-up.
Usage: bench_fleet.py [--build DIR] [--reps N] [--size N] [--tiles N]"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))


# One render thread per server and no OpenCL (PoCL would take every core for its own CPU device),
# no image cache (every call is computed).
SERVER_ARGS = ("--threads", "1", "--devices", "opencl = off", "--image-cache", "0")
# Workload A's view (bench/README.md), at the bench's size.
VIEW_A = ("--view-width", "3", "--max-iter", "1000")


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd):
    """Runs cmd; returns (wall seconds, its CPU seconds, stdout)."""
    c0, t0 = child_cpu(), time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall, cpu = time.monotonic() - t0, child_cpu() - c0
    if p.returncode != 0:
        raise RuntimeError("%s failed: %s" % (cmd[0], p.stderr or p.stdout))
    return wall, cpu, p.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--size", type=int, default=8192, help="side of the fanned-out render")
    ap.add_argument("--tiles", type=int, default=600, help="tile calls per run")
    args = ap.parse_args()
    os.environ.setdefault("FRACTALD_BIN", os.path.join(args.build, "server", "fractald"))
    os.environ.setdefault("FRACTAL_PY_GEN", os.path.join(args.build, "tests", "pygen"))
    import fractald_harness as h
    cli = os.path.join(args.build, "client", "fractal")
    driver = os.path.join(args.build, "tests", "fleet_driver")
    out = os.path.join(args.build, "bench-fleet.out")

    print("bench_fleet: CPU %s, %d CPUs; every server %s" % (cpu_model(), os.cpu_count(), " ".join(SERVER_ARGS)))
    print("tiles: %d calls of 256x256, max_iter 200, 8 client threads; fan-out: %dx%d Julia c=-0.8+0.156i, "
          "view of workload A (width 3, max_iter 1000), 64-row bands, 2 per server; median of %d after a warm-up"
          % (args.tiles, args.size, args.size, args.reps))
    rows = []
    for n in (1, 2, 4):
        servers = []
        try:
            for _ in range(n):
                servers.append(h.Server(*SERVER_ARGS))
            # One server named twice is still one server (the list is deduplicated), so n = 1
            # goes through the same fan-out code.
            target = ",".join(s.target for s in servers) if n > 1 else servers[0].target + "," + servers[0].target
            tile = [driver, target, str(args.tiles), "8", "256", "200"]
            timed(tile)
            tile_runs = [timed(tile) for _ in range(args.reps)]
            rate = statistics.median(float(r[2].split("calls_per_s=")[1].split()[0]) for r in tile_runs)
            fig = {"n": n, "tiles": rate, "tile_cpu": statistics.median(r[1] for r in tile_runs) / args.tiles}
            for fmt in ("raw-u32", "png"):
                cmd = [cli, "render", "--server", target, "--size", "%dx%d" % (args.size, args.size),
                       *VIEW_A, "--format", fmt, "-o", out, "-q", "--band-rows", "64"]
                timed(cmd)
                runs = [timed(cmd) for _ in range(args.reps)]
                fig[fmt] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
            if n == 1:
                # The plain single-server render (RenderStream into a file) beside fan-out over one.
                cmd = [cli, "render", "--server", servers[0].target, "--size", "%dx%d" % (args.size, args.size),
                       *VIEW_A, "--format", "png", "-o", out, "-q", "--stream"]
                timed(cmd)
                fig["plain"] = statistics.median(timed(cmd)[0] for _ in range(args.reps))
            rows.append(fig)
        finally:
            for s in servers:
                s.stop()
    if os.path.exists(out):
        os.unlink(out)

    base = rows[0]
    print()
    print("servers  tiles/s  x1     fan-out raw s  x1     client cpu s   fan-out png s  x1     client cpu s")
    for r in rows:
        print("%-7d  %7.0f  %4.2fx  %13.2f  %4.2fx  %12.2f   %13.2f  %4.2fx  %12.2f"
              % (r["n"], r["tiles"], r["tiles"] / base["tiles"], r["raw-u32"][0],
                 base["raw-u32"][0] / r["raw-u32"][0], r["raw-u32"][1], r["png"][0],
                 base["png"][0] / r["png"][0], r["png"][1]))
    print("plain single-server PNG render (RenderStream): %.2f s" % base["plain"])
    tile_cpu = rows[-1]["tile_cpu"]
    print("separate hosts, tiles: one server %.0f/s; client CPU %.0f us per call, so at most about %.0f calls/s "
          "(%.1fx one server)" % (base["tiles"], tile_cpu * 1e6, 1 / tile_cpu, 1 / tile_cpu / base["tiles"]))
    # Separate hosts: each server as fast as the one alone here, the client the limit. Its CPU
    # time per render (measured at 4 servers, the most it does) bounds the rate it can take in.
    for fmt in ("raw-u32", "png"):
        one, client = base[fmt][0], rows[-1][fmt][1]
        print("separate hosts, %s: one server %.2f s; client CPU %.2f s per render, so about %.1fx at most "
              "(%.2f s), whatever the number of servers" % (fmt, one, client, one / client if client else 0, client))


if __name__ == "__main__":
    main()
