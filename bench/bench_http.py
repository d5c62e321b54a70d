#!/usr/bin/env python3
"""bench_http: 256x256 tile throughput of fractald's HTTP listener (--http-listen) with wrk, 16
connections over HTTP keep-alive: uncached tiles (every request a different cache key, so each one
is rendered) and cached ones (a warm set of tiles served from the image cache). Tiles of workload
T (bench/README.md): Julia c = -0.8+0.156i, base view centre 0 width 3, max_iter 256, zoom 3.

usage: bench_http.py [FRACTALD] [--seconds N] [--connections N] [--threads N]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

QUERY = "fractal=julia&c_re=-0.8&c_im=0.156&center_re=0&center_im=0&width=3&max_iter=256"

# Each wrk thread gets its own id, so the threads never ask for the same uncached tile twice:
# `offset` changes the cache key (it only shifts a cycling palette, and this one does not cycle),
# so every request is a render of the same cost.
UNCACHED = """
local next_id = 0
function setup(thread) thread:set("id", next_id); next_id = next_id + 1 end
function init(args) n = 0 end
function request()
  n = n + 1
  local t = n %% 64
  return wrk.format("GET", string.format("/v1/tiles/3/%%d/%%d.png?%s&offset=%%.9f", t %% 8, math.floor(t / 8),
                    (id * 100000000 + n) / 1e9))
end
""" % QUERY

CACHED = """
function init(args) n = 0 end
function request()
  n = n + 1
  local t = n %% 64
  return wrk.format("GET", string.format("/v1/tiles/3/%%d/%%d.png?%s", t %% 8, math.floor(t / 8)))
end
""" % QUERY


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def run_wrk(port, script, seconds, connections, threads, tmp):
    path = os.path.join(tmp, "s.lua")
    with open(path, "w") as f:
        f.write(script)
    out = subprocess.run(["wrk", "-t%d" % threads, "-c%d" % connections, "-d%ds" % seconds, "--latency",
                          "-s", path, "http://127.0.0.1:%d" % port], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)$", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, lat, int(errors.group(1)) if errors else 0, out


def stats(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/v1/stats" % port) as r:
        return json.loads(r.read())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fractald", nargs="?", default=os.environ.get("FRACTALD_BIN", "build/server/fractald"))
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-http-")
    # Room for every uncached tile of the run would hide the misses' cost in evictions: keep the
    # default cache (64 MiB), as a server would.
    proc = subprocess.Popen([args.fractald, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--spool-dir", "",
                             "--log-level", "warn", "--queue", "1000"], stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()
        m = re.match(r"fractald http listening on \S+:(\d+)", proc.stdout.readline())
        if not m:
            sys.exit("fractald did not start its HTTP listener")
        port = int(m.group(1))
        time.sleep(0.5)
        print("bench_http: %s, %d cores, wrk -t%d -c%d -d%ds, 256x256 tiles of workload T over keep-alive"
              % (cpu_model(), os.cpu_count(), args.threads, args.connections, args.seconds))
        s0 = stats(port)
        rps_u, lat_u, err_u, _ = run_wrk(port, UNCACHED, args.seconds, args.connections, args.threads, tmp)
        s1 = stats(port)
        # Warm the 64 tiles, then only hits.
        run_wrk(port, CACHED, 1, 4, 1, tmp)
        s2 = stats(port)
        rps_c, lat_c, err_c, _ = run_wrk(port, CACHED, args.seconds, args.connections, args.threads, tmp)
        s3 = stats(port)
        hits = lambda a, b: int(b.get("imageCacheHits", 0)) - int(a.get("imageCacheHits", 0))
        misses = lambda a, b: int(b.get("imageCacheMisses", 0)) - int(a.get("imageCacheMisses", 0))
        print("| tiles | requests/s | p50 | p90 | p99 | non-2xx | cache hits / misses |")
        print("|---|---|---|---|---|---|---|")
        print("| uncached (each one rendered) | %.0f | %s | %s | %s | %d | %d / %d |"
              % (rps_u, lat_u.get("50"), lat_u.get("90"), lat_u.get("99"), err_u, hits(s0, s1), misses(s0, s1)))
        print("| cached (64 tiles, warm) | %.0f | %s | %s | %s | %d | %d / %d |"
              % (rps_c, lat_c.get("50"), lat_c.get("90"), lat_c.get("99"), err_c, hits(s2, s3), misses(s2, s3)))
        print("cached / uncached: %.1fx" % (rps_c / rps_u if rps_u else 0))
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
