#!/usr/bin/python3
"""soak.py: a bounded soak of fractald on loopback. N minutes of mixed traffic from 32 client
threads (renders, tiles, streams, deadlines, cancels, jobs, bad requests, health), a kill -9 of
the server every few minutes with a restart on the same spool and port, then a report: calls by
method and status, lost calls, lost jobs, the server's RSS, fds and spool over time. Exits 1 on
any violation, 2 when it cannot set up. Not part of ctest; `make soak` runs it (tests/soak/README.md).
"""
import argparse
import array
import collections
import json
import math
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zlib

sys.dont_write_bytecode = True  # no __pycache__ in tests/python from importing the harness
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GEN = os.environ.get("FRACTAL_PY_GEN") or os.path.join(ROOT, "build", "tests", "pygen")
FRACTALD = os.environ.get("FRACTALD_BIN") or os.path.join(ROOT, "build", "server", "fractald")
sys.path.insert(0, GEN)
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))

import grpc  # noqa: E402
from fractal.v1 import fractal_pb2 as pb  # noqa: E402
from fractal.v1 import fractal_pb2_grpc as pbg  # noqa: E402
from fractal_health import health_pb2, health_pb2_grpc  # noqa: E402
from fractald_harness import png_info  # noqa: E402

SC = grpc.StatusCode
MIB = 1 << 20
HOST = "127.0.0.1"
# Every channel talks to loopback only: no proxy from the environment, its own connection (so
# the four shared channels and the fresh ones really are separate sockets), and a short
# reconnect backoff, so a channel is back within a second of the restarted server listening.
# Not grpc.min_reconnect_backoff_ms: gRPC core uses it as the connect timeout too, and at 100 ms
# about 1 in 5000 new connections to a loaded server failed before its SETTINGS frame came.
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * MIB),
    ("grpc.enable_http_proxy", 0),
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
PALETTES = ["inferno", "viridis", "magma", "plasma", "cividis", "twilight", "grayscale"]
JULIAS = [(-0.8, 0.156), (-0.4, 0.6), (0.285, 0.01), (-0.7269, 0.1889), (-0.835, -0.2321)]
FINISHED = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)
# An escape-dominated deep view (workload B of the benchmarks): no interior shortcut helps, so
# 1024x1024 at 3000 iterations takes seconds on two cores. Used where a render must still be
# running when its deadline passes or the client cancels it.
DEEP = dict(julia=pb.Julia(c=pb.Complex(re=-0.8, im=0.156)), max_iter=3000,
            view=pb.View(center=pb.Complex(re=0.17304, im=0.23854), width=0.0005))
SLOW = pb.RenderRequest(width=1024, height=1024, format=pb.FORMAT_RAW_U32, **DEEP)
SLOW_STREAM = pb.RenderRequest(width=2048, height=1024, format=pb.FORMAT_RAW_U32, **DEEP)
SLOW_JOB = pb.RenderRequest(width=640, height=480, **DEEP)
# Raw tiles are checked pixel by pixel against this scene, rendered whole once at the start.
# Without rectangle fill: the proto allows it to change rare pixels, and the rectangles it tries
# depend on the region, so a tile of a filled image may differ from the full one (MATH.md says a
# region's pixels are the full image's; with fill on, 2 of 201 random tiles differed by a pixel).
TILE_SCENE = pb.RenderRequest(mandelbrot=pb.Mandelbrot(), width=1024, height=768, max_iter=300,
                              view=pb.View(center=pb.Complex(re=-0.6), width=3.0), format=pb.FORMAT_RAW_U32,
                              rect_fill=False)

# Bad requests and the exact status and message each must get (the server's wording, as the
# Python black-box tests pin it). Palette lists and limits that other work may extend are left out.
BAD_RENDER = [
    (pb.RenderRequest(width=0), "width must be 1..65536, got 0"),
    (pb.RenderRequest(height=65537), "height must be 1..65536, got 65537"),
    (pb.RenderRequest(max_iter=10000001), "max_iter must be 1..10000000, got 10000001"),
    (pb.RenderRequest(supersample=9), "supersample must be 1..8, got 9"),
    (pb.RenderRequest(format=pb.FORMAT_RAW_U32, supersample=2), "supersample must be 1 for raw formats, got 2"),
    (pb.RenderRequest(region=pb.Region(x=500, y=0, width=101, height=10)),
     "region (x=500, y=0, width=101, height=10) must lie inside the 600x400 image"),
    (pb.RenderRequest(escape_radius=1), "escape_radius must be a number in (1, 1e+18], got 1"),
    (pb.RenderRequest(device="cpu\0x"), "device must not contain a NUL byte"),
    (pb.RenderRequest(format=9), "format must be FORMAT_PNG, FORMAT_PNG16, FORMAT_RAW_U32 or FORMAT_RAW_F32, got 9"),
    (pb.RenderRequest(view=pb.View(width=-1)), "view.width must be a finite number in (0, 1e6], got -1"),
    (pb.RenderRequest(coloring=pb.Coloring(stops=[pb.ColorStop(position=0.5), pb.ColorStop(position=0.2)])),
     "coloring.stops[1].position must not be below the previous stop's 0.5, got 0.2"),
]
BAD_REF = "id must be a job id from SubmitJob"
UNKNOWN_JOB = "zzzzzzzzzzzzzzzzzzzzzzzzzz"


def env_num(name, default, kind=float):
    value = os.environ.get(name)
    return default if value in (None, "") else kind(value)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=env_num("SOAK_MINUTES", 30.0), help="traffic time (SOAK_MINUTES)")
    p.add_argument("--clients", type=int, default=env_num("SOAK_CLIENTS", 32, int), help="client threads (SOAK_CLIENTS)")
    p.add_argument("--kill-every", type=float, default=env_num("SOAK_KILL_EVERY_S", 180.0),
                   help="seconds between kill -9s, +-25%% jitter; 0: never (SOAK_KILL_EVERY_S)")
    p.add_argument("--seed", type=int, default=env_num("SOAK_SEED", int(time.time()) % 100000, int))
    p.add_argument("--sample-every", type=float, default=env_num("SOAK_SAMPLE_S", 5.0), help="seconds (SOAK_SAMPLE_S)")
    p.add_argument("--retention-ms", type=int, default=env_num("SOAK_JOB_RETENTION_MS", 180000, int))
    p.add_argument("--disk-budget-mib", type=int, default=env_num("SOAK_JOB_DISK_BUDGET_MIB", 256, int))
    # The bounds (tests/soak/README.md says why): RSS plateaus at 110-140 MiB under this mix (90 of
    # them PoCL at idle), fds at about 20.
    p.add_argument("--rss-max-mib", type=float, default=env_num("SOAK_RSS_MAX_MIB", 512.0))
    p.add_argument("--rss-growth-mib", type=float, default=env_num("SOAK_RSS_GROWTH_MIB", 32.0))
    p.add_argument("--fd-max", type=int, default=env_num("SOAK_FD_MAX", 128, int))
    p.add_argument("--fd-growth", type=int, default=env_num("SOAK_FD_GROWTH", 16, int))
    p.add_argument("--health-max-ms", type=float, default=env_num("SOAK_HEALTH_MAX_MS", 2000.0))
    p.add_argument("--drain-s", type=float, default=env_num("SOAK_DRAIN_S", 180.0),
                   help="time after the traffic for the last jobs to finish (SOAK_DRAIN_S)")
    p.add_argument("--rect-fill", choices=["mixed", "on", "off"], default=os.environ.get("SOAK_RECT_FILL", "mixed"),
                   help="rectangle fill in the random requests: half and half, always (the default "
                        "path) or never (rect_fill false, the default) (SOAK_RECT_FILL)")
    p.add_argument("--server-args", default=os.environ.get("SOAK_SERVER_ARGS", ""), help="extra fractald flags")
    p.add_argument("--report-json", default=os.environ.get("SOAK_REPORT_JSON", ""), help="also write the report here")
    p.add_argument("--keep", action="store_true", default=os.environ.get("SOAK_KEEP", "") not in ("", "0"),
                   help="keep the work directory (logs, spool) even when the soak passes")
    return p.parse_args(argv)


# ---- the server under test ----

class Server:
    """fractald as a child: started on 127.0.0.1 (an ephemeral port the first time, the same port
    after), stdout and stderr in files of the work directory (a pipe nobody reads would fill up
    in 30 minutes and block the server). setpriv --pdeathsig kills it if this process dies; the
    main thread starts every generation, and a parent-death signal follows the thread that forked."""

    def __init__(self, binary, workdir, spool, args):
        self.binary, self.workdir, self.spool, self.args = binary, workdir, spool, args
        self.port, self.proc, self.generation, self.logs = 0, None, 0, []
        self.pdeathsig = shutil.which("setpriv") is not None

    def start(self, ready_timeout=90.0):
        """Starts a generation and waits for its "listening" line. Retries a few times if the
        port is taken (it is ours, but another process could grab it while the server is down)."""
        for attempt in range(10):
            self.generation += 1
            out = os.path.join(self.workdir, "gen%03d.stdout" % self.generation)
            err = os.path.join(self.workdir, "gen%03d.stderr" % self.generation)
            cmd = [self.binary, "--listen", "%s:%d" % (HOST, self.port), "--spool-dir", self.spool, *self.args]
            if self.pdeathsig:
                cmd = ["setpriv", "--pdeathsig", "KILL", "--", *cmd]
            with open(out, "w") as fo, open(err, "w") as fe:
                self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fo, stderr=fe)
            self.logs.append(err)
            deadline = time.monotonic() + ready_timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                with open(out) as f:
                    line = f.readline()
                if line.endswith("\n"):
                    break
                time.sleep(0.02)
            prefix = "fractald listening on %s:" % HOST
            if self.proc.poll() is None and line.startswith(prefix):
                port = int(line[len(prefix):])
                if self.port and port != self.port:
                    raise RuntimeError("restarted fractald listens on %d, not %d" % (port, self.port))
                self.port = port
                return
            self.kill()
            with open(err) as f:
                why = f.read()[-2000:]
            if self.port and "address" in why.lower() and attempt < 9:
                time.sleep(0.5)
                continue
            raise RuntimeError("fractald did not start (stdout %r): %s" % (line, why))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.alive():
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()

    def terminate(self, timeout):
        """SIGTERM and the exit code, or None if it had to be killed after `timeout`."""
        if not self.alive():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None


def proc_sample(pid):
    """(VmRSS bytes, open fds, threads) of a live process, or None if it is gone."""
    try:
        rss = threads = 0
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Threads:"):
                    threads = int(line.split()[1])
        return rss, len(os.listdir("/proc/%d/fd" % pid)), threads
    except (FileNotFoundError, ProcessLookupError):
        return None


def dir_bytes(path):
    total = db = 0
    for base, _, files in os.walk(path):
        for name in files:
            try:
                size = os.path.getsize(os.path.join(base, name))
            except FileNotFoundError:
                continue
            total += size
            if ".sqlite" in name or name.endswith((".db", "-wal", "-shm")):
                db += size
    return total, db


# ---- accounting ----

class Violation(Exception):
    """A reply that arrived but is wrong: bytes, sizes, states."""


class Books:
    """Every call's outcome, the kill windows, and the violations. A call that fails with
    UNAVAILABLE while its [start, end] overlaps a kill window (from the SIGKILL until the
    restarted server listens plus `grace` seconds for the channels to reconnect) is "killed";
    any other status outside the call's expected set, or a call still running `margin` seconds
    past its deadline, is "lost"."""

    def __init__(self, grace=3.0, margin=15.0):
        self.lock = threading.Lock()
        self.calls = collections.Counter()       # (method, status) -> count
        self.ops = collections.Counter()         # (op, outcome) -> count
        self.lost = []                           # descriptions of lost calls
        self.wrong = []                          # replies that arrived but were wrong
        self.violations = []                     # everything else that fails the soak
        self.windows = []                        # [start, end or None]
        self.inflight = {}                       # id -> [method, start, deadline, hung]
        self.grace, self.margin = grace, margin
        self.next_id = 0

    def open_window(self):
        with self.lock:
            self.windows.append([time.monotonic(), None])

    def close_window(self):
        with self.lock:
            self.windows[-1][1] = time.monotonic() + self.grace

    def in_window(self, t0, t1):
        with self.lock:
            return any(w0 <= t1 and (w1 is None or w1 >= t0) for w0, w1 in self.windows)

    def violation(self, text):
        with self.lock:
            self.violations.append("%.1fs %s" % (time.monotonic() - T0, text))

    def op(self, name, outcome):
        with self.lock:
            self.ops[(name, outcome)] += 1

    def call(self, method, fn, timeout, expect=()):
        """Runs fn(timeout) and books it under `method`. Returns (status name, value or None,
        details). `expect` lists the non-OK codes this call may get; a client-side cancel is
        booked as CANCELLED."""
        t0 = time.monotonic()
        with self.lock:
            self.next_id += 1
            cid = self.next_id
            self.inflight[cid] = [method, t0, t0 + timeout, False]
        value, code, details = None, SC.OK, ""
        try:
            value = fn(timeout)
        except grpc.FutureCancelledError:
            code, details = SC.CANCELLED, "cancelled by the client"
        except grpc.RpcError as e:
            code, details = e.code(), e.details() or ""
        except BaseException:
            # A wrong reply found inside fn (a stream that breaks its order): booked as OK
            # here, reported by the caller as a wrong reply.
            with self.lock:
                self.inflight.pop(cid)
                self.calls[(method, "OK")] += 1
            raise
        t1 = time.monotonic()
        with self.lock:
            hung = self.inflight.pop(cid)[3]
        status = code.name
        if code != SC.OK and code not in expect:
            if code == SC.UNAVAILABLE and self.in_window(t0, t1):
                status = "UNAVAILABLE(killed)"
            elif not hung:  # a hung call is booked as lost by the watchdog already
                with self.lock:
                    self.lost.append("%.1fs %s: unexplained %s %r after %.2fs" % (t0 - T0, method, code.name,
                                                                                 details[:200], t1 - t0))
        with self.lock:
            self.calls[(method, status)] += 1
        return status, value, details

    def watchdog(self):
        """Books every call still running `margin` seconds past its deadline as lost (once)."""
        now = time.monotonic()
        with self.lock:
            for cid, slot in self.inflight.items():
                method, t0, deadline, hung = slot
                if not hung and now > deadline + self.margin:
                    slot[3] = True
                    self.lost.append("%.1fs %s: still running %.0fs after its deadline" % (t0 - T0, method,
                                                                                           now - deadline))


T0 = time.monotonic()


# ---- checks of what came back ----

def check(cond, what):
    if not cond:
        raise Violation(what)


def reassemble(events):
    """(image bytes, first chunk, done stats) of a RenderStream or FetchJobResult; checks the
    chunk offsets and that done comes last."""
    data, first, done = bytearray(), None, None
    for ev in events:
        kind = ev.WhichOneof("event")
        check(done is None, "event after done")
        if kind == "chunk":
            check(ev.chunk.offset == len(data), "chunk at offset %d, expected %d" % (ev.chunk.offset, len(data)))
            check(0 < len(ev.chunk.data) <= MIB, "chunk of %d bytes" % len(ev.chunk.data))
            first = first or ev.chunk
            data += ev.chunk.data
        elif kind == "done":
            done = ev.done
    check(done is not None, "stream ended without done")
    check(first is not None, "stream without chunks")
    return bytes(data), first, done


def check_image(data, req, width, height):
    """The encoded image is what `req` asks for at width x height: a PNG with valid CRCs, the
    right IHDR, every scanline present and the request in its text chunk; or raw samples of the
    right count and range."""
    fmt = req.format
    if fmt in (pb.FORMAT_PNG, pb.FORMAT_PNG16):
        try:
            w, h, depth, ctype, texts, raw = png_info(data)
        except (AssertionError, zlib.error, IndexError, TypeError) as e:
            raise Violation("not a valid PNG: %r" % e)
        want = (8, 2, 3) if fmt == pb.FORMAT_PNG else (16, 0, 2)
        check((w, h, depth, ctype) == (width, height) + want[:2],
              "PNG %dx%d depth %d type %d, expected %dx%d %r" % (w, h, depth, ctype, width, height, want[:2]))
        check(len(raw) == h * (1 + w * want[2]), "PNG pixel data of %d bytes, expected %d" % (len(raw), h * (1 + w * want[2])))
        check("fractal.v1.RenderRequest" in texts, "PNG without its request")
    else:
        check(len(data) == width * height * 4, "raw image of %d bytes, expected %d" % (len(data), width * height * 4))
        values = array.array("I" if fmt == pb.FORMAT_RAW_U32 else "f", data)
        if sys.byteorder != "little":
            values.byteswap()
        if fmt == pb.FORMAT_RAW_U32:
            check(max(values) <= req.max_iter, "escape count %d over max_iter %d" % (max(values), req.max_iter))
        else:
            lo = min(values)
            check(lo >= -1.0 and not math.isnan(lo), "smooth value %r below -1" % lo)


def describe_difference(a, b, req):
    """One line on how two encodings of `req` differ: in pixels (which rows, how many bytes) or
    only in their encoding; and the request, to render it again."""
    try:
        ia, ib = png_info(a), png_info(b)
        if ia[:4] != ib[:4]:
            where = "headers %r vs %r" % (ia[:4], ib[:4])
        else:
            ra, rb = ia[5], ib[5]
            stride = len(ra) // ia[1]
            rows = sorted({i // stride for i in range(min(len(ra), len(rb))) if ra[i] != rb[i]})
            where = ("%d rows differ (first %s), %d bytes" % (len(rows), rows[:5], sum(
                1 for i in range(min(len(ra), len(rb))) if ra[i] != rb[i])) if rows else "same pixels, other encoding")
    except Exception as e:  # noqa: BLE001 - a diagnostic only
        where = "undecodable: %r" % e
    return "%s; rect fill %s; request {%s}" % (where, "on" if req.rect_fill else "off", " ".join(str(req).split()))


def steady_growth(ys):
    """(growth, steady) of a series: the median of its last third minus that of its first, and
    whether the medians of the three thirds rise strictly. Fewer than 6 values: (0, False)."""
    n = len(ys)
    if n < 6:
        return 0.0, False
    meds = [sorted(ys[i * n // 3:(i + 1) * n // 3]) for i in range(3)]
    meds = [m[len(m) // 2] for m in meds]
    return meds[2] - meds[0], meds[0] < meds[1] < meds[2]


def out_size(req):
    if req.HasField("region"):
        return req.region.width, req.region.height
    return req.width, req.height


# ---- the clients ----

class Soak:
    def __init__(self, args):
        self.args = args
        self.books = Books()
        self.stop = threading.Event()
        self.pending = collections.deque()   # jobs handed to the reconciler
        self.jobs = {}                       # id -> ledger entry (dict)
        self.jobs_lock = threading.Lock()
        self.health_lat = []                 # (t, seconds, in kill window)
        self.samples = []
        self.restarts = []                   # (t, downtime s)
        self.target = None
        self.channels = []
        self.scene = None

    # -- channels --
    def connect(self):
        self.target = "%s:%d" % (HOST, self.server.port)
        self.channels = [grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS) for _ in range(4)]

    def stub(self, rng):
        return pbg.RendererStub(rng.choice(self.channels))

    # -- requests --
    def random_request(self, rng, max_samples, formats=True):
        req = pb.RenderRequest(width=rng.randrange(32, 801), height=rng.randrange(32, 601),
                               max_iter=rng.randrange(64, 1001),
                               coloring=pb.Coloring(palette=rng.choice(PALETTES)))
        if rng.random() < 0.3:
            req.mandelbrot.SetInParent()
            req.view.center.re, req.view.width = -0.6, 3.0
        else:
            re, im = rng.choice(JULIAS)
            req.julia.c.re, req.julia.c.im = re, im
        if formats:
            req.format = rng.choices([pb.FORMAT_PNG, pb.FORMAT_PNG16, pb.FORMAT_RAW_U32, pb.FORMAT_RAW_F32],
                                     [50, 15, 20, 15])[0]
        if req.format in (pb.FORMAT_PNG, pb.FORMAT_PNG16) and rng.random() < 0.3:
            req.supersample = rng.choice([2, 3])
        # Rectangle fill (the default) or every pixel computed, as SOAK_RECT_FILL says.
        mode = self.args.rect_fill
        req.rect_fill = mode == "on" or (mode == "mixed" and rng.random() < 0.5)
        ss = req.supersample if req.HasField("opt_supersample") else 1
        while req.width * req.height * ss * ss > max_samples:
            req.width, req.height = max(32, req.width // 2), max(32, req.height // 2)
        return req

    # -- the ops; each raises Violation on a wrong reply, returns its outcome --
    def op_unary(self, rng):
        req = self.random_request(rng, 1 << 20)
        st, rep, _ = self.books.call("Render", lambda t: self.stub(rng).Render(req, timeout=t), 60,
                                     (SC.RESOURCE_EXHAUSTED,))
        if st != "OK":
            return st
        check((rep.width, rep.height, rep.format) == (req.width, req.height, req.format),
              "reply %dx%d format %d for %dx%d format %d" % (rep.width, rep.height, rep.format, req.width,
                                                             req.height, req.format))
        check_image(rep.data, req, req.width, req.height)
        if req.width * req.height <= 200 * 150:
            st2, again, _ = self.books.call("Render", lambda t: self.stub(rng).Render(req, timeout=t), 60,
                                            (SC.RESOURCE_EXHAUSTED,))
            if st2 == "OK":
                check(again.data == rep.data, "the same request rendered twice differs: %s" % (
                    describe_difference(rep.data, again.data, req)))
        return "ok"

    def op_tile(self, rng):
        w, h = rng.randrange(16, 257), rng.randrange(16, 257)
        x, y = rng.randrange(0, TILE_SCENE.width - w + 1), rng.randrange(0, TILE_SCENE.height - h + 1)
        req = pb.RenderRequest()
        req.CopyFrom(TILE_SCENE)
        req.region.x, req.region.y, req.region.width, req.region.height = x, y, w, h
        as_png = rng.random() < 0.3
        if as_png:  # the default path, rectangle fill on; checked for size and validity only
            req.format, req.rect_fill = pb.FORMAT_PNG, self.args.rect_fill == "on"
        st, rep, _ = self.books.call("Render", lambda t: self.stub(rng).Render(req, timeout=t), 60,
                                     (SC.RESOURCE_EXHAUSTED,))
        if st != "OK":
            return st
        check((rep.width, rep.height) == (w, h), "tile %dx%d, expected %dx%d" % (rep.width, rep.height, w, h))
        check_image(rep.data, req, w, h)
        if not as_png:
            stride = TILE_SCENE.width * 4
            for row in range(h):
                off = (y + row) * stride + x * 4
                check(rep.data[row * w * 4:(row + 1) * w * 4] == self.scene[off:off + w * 4],
                      "tile (%d,%d %dx%d) row %d differs from the full image" % (x, y, w, h, row))
        return "ok"

    def op_stream(self, rng):
        req = self.random_request(rng, 2 << 20)
        if rng.random() < 0.5:
            req.width, req.height = min(1600, req.width * 2), min(1200, req.height * 2)
            ss = req.supersample if req.HasField("opt_supersample") else 1
            if req.width * req.height * ss * ss > 2 << 20:
                req.ClearField("opt_supersample")
        st, got, _ = self.books.call("RenderStream",
                                     lambda t: reassemble(self.stub(rng).RenderStream(req, timeout=t)), 90,
                                     (SC.RESOURCE_EXHAUSTED,))
        if st != "OK":
            return st
        data, first, done = got
        ss = req.supersample if req.HasField("opt_supersample") else 1
        check((first.width, first.height) == (req.width, req.height), "stream of %dx%d" % (first.width, first.height))
        check(done.samples == req.width * req.height * ss * ss, "done.samples %d" % done.samples)
        check_image(data, req, req.width, req.height)
        if req.width * req.height * ss * ss <= 400 * 300 and rng.random() < 0.5:
            st2, rep, _ = self.books.call("Render", lambda t: self.stub(rng).Render(req, timeout=t), 60,
                                          (SC.RESOURCE_EXHAUSTED,))
            if st2 == "OK":
                check(rep.data == data, "stream and unary Render of one request differ: %s" % (
                    describe_difference(data, rep.data, req)))
        return "ok"

    def op_stream_cancel(self, rng):
        after = rng.randrange(1, 4)

        def run(t):
            call = self.stub(rng).RenderStream(SLOW_STREAM, timeout=t)
            seen = 0
            for ev in call:
                if ev.WhichOneof("event") == "done":
                    return "completed"
                seen += 1
                if seen >= after:
                    call.cancel()
            return "completed"
        st, value, _ = self.books.call("RenderStream", run, 90, (SC.CANCELLED, SC.RESOURCE_EXHAUSTED))
        return value if st == "OK" else st

    def op_short_deadline(self, rng):
        deadline = 0.02 + rng.random() * 0.3
        if rng.random() < 0.5:
            st, _, _ = self.books.call("Render", lambda t: self.stub(rng).Render(SLOW, timeout=t), deadline,
                                       (SC.DEADLINE_EXCEEDED, SC.RESOURCE_EXHAUSTED))
        else:
            st, _, _ = self.books.call("RenderStream",
                                       lambda t: reassemble(self.stub(rng).RenderStream(SLOW, timeout=t)), deadline,
                                       (SC.DEADLINE_EXCEEDED, SC.RESOURCE_EXHAUSTED))
        return st

    def op_client_cancel(self, rng):
        wait = rng.random() * 0.3

        def run(t):
            fut = self.stub(rng).Render.future(SLOW, timeout=t)
            time.sleep(wait)
            fut.cancel()
            return fut.result()
        st, _, _ = self.books.call("Render", run, 60, (SC.CANCELLED, SC.RESOURCE_EXHAUSTED))
        return st

    def submit(self, rng, req, cancel):
        st, job, _ = self.books.call("SubmitJob", lambda t: self.stub(rng).SubmitJob(req, timeout=t), 30,
                                     (SC.RESOURCE_EXHAUSTED,))
        if st != "OK":
            return None
        check(len(job.id) == 26 and job.state in (pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING),
              "SubmitJob gave id %r state %s" % (job.id, pb.JobState.Name(job.state)))
        entry = {"id": job.id, "req": req, "submitted": time.monotonic() - T0, "cancel": cancel,
                 "result": None, "state": "QUEUED"}
        with self.jobs_lock:
            self.jobs[job.id] = entry
        return entry

    def poll(self, rng, entry, limit_s):
        """Polls the job until it is finished or `limit_s` passed; None while it is not."""
        end = time.monotonic() + limit_s
        for _ in range(int(limit_s / 0.2) + 1):
            st, job, det = self.books.call("GetJob",
                                           lambda t: self.stub(rng).GetJob(pb.JobRef(id=entry["id"]), timeout=t), 10)
            if st == "OK":
                entry["state"] = pb.JobState.Name(job.state)[len("JOB_STATE_"):]
                if job.state in FINISHED:
                    return job
            elif st == "NOT_FOUND":
                return "NOT_FOUND: " + det
            if time.monotonic() > end or self.stop.is_set() and limit_s < 60:
                return None
            time.sleep(0.2 if st == "OK" else 0.3)
        return None

    def settle(self, rng, entry, job):
        """Decides a finished job: a success is fetched and must equal a unary Render of the same
        request, byte for byte; a cancel is right only if the test cancelled it. Sets
        entry["result"] to "ok", "cancelled" or what went wrong; None to try again later."""
        if isinstance(job, str):
            entry["result"] = job
            return
        if job.state == pb.JOB_STATE_CANCELLED:
            entry["result"] = "cancelled" if entry["cancel"] else "CANCELLED but never cancelled"
            return
        if job.state != pb.JOB_STATE_SUCCEEDED:
            entry["result"] = "%s: %s" % (pb.JobState.Name(job.state), job.error_message)
            return
        ref = pb.JobRef(id=entry["id"])
        try:
            st, got, det = self.books.call("FetchJobResult",
                                           lambda t: reassemble(self.stub(rng).FetchJobResult(ref, timeout=t)), 60,
                                           (SC.RESOURCE_EXHAUSTED,))
        except Violation as e:
            entry["result"] = "wrong result stream: %s" % e
            return
        if st == "NOT_FOUND":
            entry["result"] = "result NOT_FOUND: " + det
        if st != "OK":
            return
        data, first, _ = got
        req = entry["req"]
        try:
            check(len(data) == job.result_bytes, "fetched %d bytes, job says %d" % (len(data), job.result_bytes))
            check((job.width, job.height, first.content_type) == out_size(req) + ("image/png",),
                  "job result %dx%d %s" % (job.width, job.height, first.content_type))
            check_image(data, req, req.width, req.height)
        except Violation as e:
            entry["result"] = "wrong result: %s" % e
            return
        st, rep, _ = self.books.call("Render", lambda t: self.stub(rng).Render(req, timeout=t), 60,
                                     (SC.RESOURCE_EXHAUSTED,))
        if st == "OK":
            # The job finished with a valid image of the right size: it is not lost. If it is not
            # the image a unary Render gives, that is a wrong reply (determinism), booked apart.
            entry["result"] = "ok"
            if rep.data != data:
                entry["differs"] = True
                with self.books.lock:
                    self.books.wrong.append("%.1fs job %s differs from a unary Render of its request: %s" % (
                        time.monotonic() - T0, entry["id"], describe_difference(data, rep.data, req)))

    def op_job(self, rng):
        req = self.random_request(rng, 400 * 300, formats=False)
        if rng.random() < 0.2:
            req.format = pb.FORMAT_PNG16
        entry = self.submit(rng, req, cancel=False)
        if entry is None:
            return "not submitted"
        job = self.poll(rng, entry, 30)
        if job is not None:
            for _ in range(5):
                self.settle(rng, entry, job)
                if entry["result"] is not None:
                    break
                time.sleep(0.5)
        if entry["result"] is None:
            self.pending.append(entry)
            return "handed over"
        return "ok" if entry["result"] == "ok" else "LOST"

    def op_job_cancel(self, rng):
        entry = self.submit(rng, SLOW_JOB, cancel=True)
        if entry is None:
            return "not submitted"
        time.sleep(rng.random() * 0.5)
        ref = pb.JobRef(id=entry["id"])
        st, job, _ = self.books.call("CancelJob", lambda t: self.stub(rng).CancelJob(ref, timeout=t), 30,
                                     (SC.RESOURCE_EXHAUSTED,))
        job = self.poll(rng, entry, 30)
        if job is not None:
            self.settle(rng, entry, job)
        if entry["result"] is None:
            self.pending.append(entry)
            return "handed over"
        return {"ok": "finished first", "cancelled": "cancelled"}.get(entry["result"], "LOST")

    def op_bad(self, rng):
        kind = rng.randrange(4)
        if kind < 2:
            req, message = rng.choice(BAD_RENDER)
            method = rng.choice(["Render", "RenderStream", "SubmitJob"])
            stub = self.stub(rng)
            fn = {"Render": lambda t: stub.Render(req, timeout=t),
                  "RenderStream": lambda t: list(stub.RenderStream(req, timeout=t)),
                  "SubmitJob": lambda t: stub.SubmitJob(req, timeout=t)}[method]
            code = SC.INVALID_ARGUMENT
        else:
            method = rng.choice(["GetJob", "CancelJob", "FetchJobResult"])
            ref = pb.JobRef() if kind == 2 else pb.JobRef(id=UNKNOWN_JOB)
            code, message = ((SC.INVALID_ARGUMENT, BAD_REF) if kind == 2 else
                             (SC.NOT_FOUND, 'no job "%s" (unknown, or expired)' % UNKNOWN_JOB))
            call = getattr(self.stub(rng), method)
            fn = ((lambda t: list(call(ref, timeout=t))) if method == "FetchJobResult" else
                  (lambda t: call(ref, timeout=t)))
        st, _, det = self.books.call(method, fn, 30, (code,))
        if st == code.name:
            check(det == message, "%s %s: %r, expected %r" % (method, st, det, message))
            return "refused"
        check(st != "OK", "%s accepted a bad request (expected %s %r)" % (method, code.name, message))
        return st

    def op_health(self, rng):
        hs = health_pb2_grpc.HealthStub(rng.choice(self.channels))
        service = rng.choice(["", "fractal.v1.Renderer"])
        st, rep, _ = self.books.call("Health.Check",
                                     lambda t: hs.Check(health_pb2.HealthCheckRequest(service=service), timeout=t), 10)
        if st == "OK":
            check(rep.status == health_pb2.HealthCheckResponse.SERVING, "health %s" % rep.status)
        return st

    def op_fresh_connection(self, rng):
        with grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS) as ch:
            hs = health_pb2_grpc.HealthStub(ch)
            st, _, _ = self.books.call("Health.Check", lambda t: hs.Check(health_pb2.HealthCheckRequest(), timeout=t), 10)
            req = pb.RenderRequest(width=64, height=48, max_iter=100)
            st2, rep, _ = self.books.call("Render", lambda t: pbg.RendererStub(ch).Render(req, timeout=t), 30,
                                          (SC.RESOURCE_EXHAUSTED,))
            if st2 == "OK":
                check_image(rep.data, req, 64, 48)
        return st2

    def op_misc(self, rng):
        stub = self.stub(rng)
        which = rng.randrange(3)
        if which == 0:
            st, rep, _ = self.books.call("GetStats", lambda t: stub.GetStats(pb.GetStatsRequest(), timeout=t), 10)
        elif which == 1:
            st, rep, _ = self.books.call("ListJobs", lambda t: stub.ListJobs(pb.ListJobsRequest(limit=20), timeout=t),
                                         10, (SC.RESOURCE_EXHAUSTED,))
            if st == "OK":
                check(len(rep.jobs) <= 20, "ListJobs limit 20 gave %d" % len(rep.jobs))
        else:
            st, rep, _ = self.books.call("ListDevices", lambda t: stub.ListDevices(pb.ListDevicesRequest(), timeout=t), 10)
            if st == "OK":
                check(any(d.id == "cpu" for d in rep.devices), "ListDevices without cpu")
        return st

    MIX = [("unary", 20), ("tile", 12), ("stream", 8), ("stream_cancel", 4), ("short_deadline", 4),
           ("client_cancel", 4), ("job", 12), ("job_cancel", 4), ("bad", 8), ("health", 6),
           ("fresh_connection", 2), ("misc", 4)]

    def client(self, index):
        rng = random.Random(self.args.seed * 1000 + index)
        names = [n for n, _ in self.MIX]
        weights = [w for _, w in self.MIX]
        # Bounded in count as well as time: no client can do more than 20 ops a second.
        for _ in range(int(self.args.minutes * 60 * 20) + 1):
            if self.stop.is_set():
                break
            name = rng.choices(names, weights)[0]
            try:
                outcome = getattr(self, "op_" + name)(rng)
            except Violation as e:
                outcome = "WRONG"
                with self.books.lock:
                    self.books.wrong.append("%.1fs %s: %s" % (time.monotonic() - T0, name, e))
            except Exception as e:  # noqa: BLE001 - a crash of the test is a failure too
                outcome = "ERROR"
                self.books.violation("%s raised %r" % (name, e))
            self.books.op(name, outcome)
            time.sleep(rng.random() * 0.02)

    def reconciler(self, done):
        """Settles the jobs the clients handed over (still queued or running after their poll),
        until `done` is set and none is left, or the drain time is spent."""
        rng = random.Random(self.args.seed)
        while True:
            if done.is_set() and (not self.pending or time.monotonic() > self.drain_end):
                return
            for _ in range(len(self.pending)):
                entry = self.pending.popleft()
                job = self.poll(rng, entry, 0)
                if job is not None:
                    self.settle(rng, entry, job)
                if entry["result"] is None:
                    self.pending.append(entry)
            time.sleep(0.5)

    def health_loop(self):
        with grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS) as ch:
            hs = health_pb2_grpc.HealthStub(ch)
            for _ in range(int(self.args.minutes * 60 * 4) + 1):
                if self.stop.is_set():
                    return
                t0 = time.monotonic()
                st, rep, _ = self.books.call("Health.Check", lambda t: hs.Check(health_pb2.HealthCheckRequest(),
                                                                                timeout=t), 10)
                t1 = time.monotonic()
                if st == "OK":
                    self.health_lat.append((t0 - T0, t1 - t0, self.books.in_window(t0, t1)))
                    if rep.status != health_pb2.HealthCheckResponse.SERVING:
                        self.books.violation("health %s outside a kill" % rep.status)
                time.sleep(max(0.0, 0.25 - (t1 - t0)))

    # -- the supervisor: samples, kills and restarts, all on the main thread --
    def sample(self):
        got = proc_sample(self.server.proc.pid) if self.server.alive() else None
        spool, db = dir_bytes(self.spool)
        stats = None
        st, rep, _ = self.books.call("GetStats", lambda t: pbg.RendererStub(self.channels[0]).GetStats(
            pb.GetStatsRequest(), timeout=t), 5)
        if st == "OK":
            stats = (rep.jobs_held, rep.queue_depth, rep.running)
        if got:
            self.samples.append({"t": round(time.monotonic() - T0, 1), "gen": self.server.generation,
                                 "since_start": round(time.monotonic() - self.gen_started, 1),
                                 "rss": got[0], "fds": got[1], "threads": got[2], "spool": spool, "db": db,
                                 "jobs_held": stats[0] if stats else None,
                                 "queue": stats[1] if stats else None, "running": stats[2] if stats else None})

    def kill_and_restart(self):
        with self.jobs_lock:
            unsettled = sum(1 for j in self.jobs.values() if j["result"] is None)
        self.books.open_window()
        t = time.monotonic()
        self.server.kill()
        time.sleep(random.Random(self.args.seed + self.server.generation).random())  # 0..1 s down
        self.server.start()
        self.gen_started = time.monotonic()
        self.books.close_window()
        self.restarts.append((round(t - T0, 1), round(self.gen_started - t, 2), unsettled))

    def run(self):
        global T0
        a = self.args
        self.workdir = tempfile.mkdtemp(prefix="fractald-soak-")
        self.spool = os.path.join(self.workdir, "spool")
        # A copy of the binary: others may rebuild build/ while the soak runs, and every
        # generation must be the same program.
        binary = os.path.join(self.workdir, "fractald")
        shutil.copy2(FRACTALD, binary)
        server_args = ["--log-level", "warn", "--job-retention-ms", str(a.retention_ms),
                       "--job-disk-budget", "%dM" % a.disk_budget_mib, "--grace-ms", "2000",
                       "--cache-dir", os.path.join(self.workdir, "clcache"), *shlex.split(a.server_args)]
        self.server = Server(binary, self.workdir, self.spool, server_args)
        print("soak: %.1f min, %d clients, kill -9 every %s, seed %d, rect fill %s, work dir %s" % (
            a.minutes, a.clients, ("%.0f s" % a.kill_every) if a.kill_every > 0 else "never", a.seed, a.rect_fill,
            self.workdir), flush=True)
        threads = []
        ok = False
        try:
            self.server.start()
            self.gen_started = time.monotonic()
            self.connect()
            print("soak: fractald pid %d on %s" % (self.server.proc.pid, self.target), flush=True)
            self.scene = pbg.RendererStub(self.channels[0]).Render(TILE_SCENE, timeout=120).data
            check(len(self.scene) == TILE_SCENE.width * TILE_SCENE.height * 4, "the tile scene")
            T0 = time.monotonic()
            end = T0 + a.minutes * 60
            self.drain_end = end + a.drain_s
            rng = random.Random(a.seed)

            def next_kill(now):
                return now + a.kill_every * rng.uniform(0.75, 1.25) if a.kill_every > 0 else math.inf
            kill_at = next_kill(T0)
            # Daemon threads: if the soak aborts, the process still exits (after the finally
            # below has stopped the server); on the normal path every thread is joined.
            threads = [threading.Thread(target=self.client, args=(i,), name="client%d" % i, daemon=True)
                       for i in range(a.clients)]
            threads.append(threading.Thread(target=self.health_loop, name="health", daemon=True))
            reconciled = threading.Event()
            recon = threading.Thread(target=self.reconciler, args=(reconciled,), name="reconciler", daemon=True)
            for t in threads + [recon]:
                t.start()
            next_sample, next_print = T0, T0 + 30
            while time.monotonic() < end:
                now = time.monotonic()
                if now >= next_sample:
                    self.sample()
                    next_sample = now + a.sample_every
                if now >= next_print:
                    self.progress()
                    next_print = now + 30
                # No kill in the last 30 s: the end of the run is a clean, measured generation.
                if now >= kill_at and now < end - 30:
                    print("soak: %.0fs kill -9 of pid %d" % (now - T0, self.server.proc.pid), flush=True)
                    self.kill_and_restart()
                    kill_at = next_kill(time.monotonic())
                if not self.server.alive():
                    self.books.violation("fractald exited on its own with %s (generation %d)"
                                         % (self.server.proc.returncode, self.server.generation))
                    self.kill_and_restart()
                self.books.watchdog()
                time.sleep(0.2)
            self.stop.set()
            print("soak: traffic over; waiting for the clients and the last jobs", flush=True)
            for t in threads:
                while t.is_alive() and time.monotonic() < end + 180:
                    t.join(1.0)
                    self.books.watchdog()
            for t in threads:
                if t.is_alive():
                    self.books.lost.append("thread %s never finished" % t.name)
            reconciled.set()
            while recon.is_alive() and time.monotonic() < self.drain_end + 60:
                recon.join(1.0)
                self.books.watchdog()
            self.sample()
            self.final_checks()
            ok = True
        finally:
            self.stop.set()
            code = self.server.terminate(20) if self.server.proc else None
            if ok:
                if code != 0:
                    self.books.violation("fractald exited with %s on SIGTERM, not 0" % code)
                self.scan_logs()
            for ch in self.channels:
                ch.close()
            if not ok:
                shutil.rmtree(self.spool, ignore_errors=True)
                print("soak: aborted; the work directory %s holds the server logs" % self.workdir, flush=True)
        return self.report()

    def final_checks(self):
        """After the storm: nothing queued or running (cancelled and timed-out calls left), health
        SERVING, a render works, every accepted job settled."""
        stub = pbg.RendererStub(self.channels[0])
        end = time.monotonic() + 30
        while True:
            st, rep, _ = self.books.call("GetStats", lambda t: stub.GetStats(pb.GetStatsRequest(), timeout=t), 10)
            if st == "OK" and (rep.queue_depth, rep.running) == (0, 0):
                break
            if time.monotonic() > end:
                self.books.violation("idle server still has queue %s running %s" % (
                    rep.queue_depth if rep else "?", rep.running if rep else "?"))
                break
            time.sleep(0.5)
        st, rep, _ = self.books.call("Render", lambda t: stub.Render(pb.RenderRequest(width=16, height=16), timeout=t), 30)
        if st != "OK" or (rep.width, rep.height) != (16, 16):
            self.books.violation("a render after the soak gave %s" % st)
        for entry in self.pending:
            if entry["result"] is None:
                entry["result"] = "never finished (last seen %s)" % entry["state"]

    def scan_logs(self):
        self.error_lines = []
        for path in self.server.logs:
            try:
                with open(path, errors="replace") as f:
                    for line in f:
                        if "level=error" in line:
                            self.error_lines.append("%s: %s" % (os.path.basename(path), line.strip()[:300]))
            except FileNotFoundError:
                pass
        if self.error_lines:
            self.books.violation("%d level=error lines in the server logs" % len(self.error_lines))

    def progress(self):
        s = self.samples[-1] if self.samples else None
        with self.books.lock:
            total = sum(self.books.calls.values())
            lost, wrong = len(self.books.lost), len(self.books.wrong)
        print("soak: %4.0fs calls %d lost %d wrong %d jobs %d restarts %d rss %s MiB fds %s spool %s MiB" % (
            time.monotonic() - T0, total, lost, wrong, len(self.jobs), len(self.restarts),
            "%.0f" % (s["rss"] / MIB) if s else "?", s["fds"] if s else "?",
            "%.1f" % (s["spool"] / MIB) if s else "?"), flush=True)

    # -- the verdict --
    def trend(self, key, scale):
        """Per generation: first, max, last, slope per minute and the growth between the medians
        of the first and last thirds of its samples after a 30 s warm-up; and whether it grew
        steadily (medians of the three thirds strictly increasing)."""
        out = []
        for gen in sorted({s["gen"] for s in self.samples}):
            ss = [s for s in self.samples if s["gen"] == gen]
            warm = [s for s in ss if s["since_start"] >= 30] or ss
            ys = [s[key] / scale for s in warm]
            xs = [s["t"] / 60 for s in warm]
            n = len(ys)
            slope = 0.0
            if n >= 3:
                mx, my = sum(xs) / n, sum(ys) / n
                var = sum((x - mx) ** 2 for x in xs)
                slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0
            growth, steady = steady_growth(ys)
            out.append({"gen": gen, "samples": len(ss), "span_s": round(ss[-1]["t"] - ss[0]["t"], 1),
                        "first": round(ss[0][key] / scale, 1), "max": round(max(s[key] for s in ss) / scale, 1),
                        "last": round(ss[-1][key] / scale, 1), "slope_per_min": round(slope, 2),
                        "growth": round(growth, 1), "steady": steady})
        return out

    def report(self):
        a, b = self.args, self.books
        rss = self.trend("rss", MIB)
        fds = self.trend("fds", 1)
        for t in rss:
            if t["max"] > a.rss_max_mib:
                b.violation("RSS %.0f MiB over the %.0f MiB bound (generation %d)" % (t["max"], a.rss_max_mib, t["gen"]))
            if t["steady"] and t["growth"] > a.rss_growth_mib:
                b.violation("RSS grew steadily by %.0f MiB in generation %d (bound %.0f)" % (
                    t["growth"], t["gen"], a.rss_growth_mib))
        for t in fds:
            if t["max"] > a.fd_max:
                b.violation("%d open fds over the bound %d (generation %d)" % (t["max"], a.fd_max, t["gen"]))
            if t["steady"] and t["growth"] > a.fd_growth:
                b.violation("open fds grew steadily by %d in generation %d (bound %d)" % (
                    t["growth"], t["gen"], a.fd_growth))
        spool_max = max((s["spool"] for s in self.samples), default=0)
        spool_bound = (a.disk_budget_mib + 64) * MIB
        if spool_max > spool_bound:
            b.violation("spool %.0f MiB over the budget + 64 MiB" % (spool_max / MIB))
        # Once results expire (after one retention period) the spool should plateau: checked on
        # the samples after two periods, when the run has at least one more.
        retention_s = a.retention_ms / 1000.0
        late = [s["spool"] / MIB for s in self.samples if s["t"] >= 2 * retention_s]
        spool_growth, spool_steady = steady_growth(late)
        spool_checked = bool(late) and self.samples[-1]["t"] >= 3 * retention_s
        if spool_checked and spool_steady and spool_growth > 32:
            b.violation("the spool grew steadily by %.0f MiB after the first results expired" % spool_growth)
        lat = sorted(x[1] for x in self.health_lat if not x[2])
        if lat and lat[-1] * 1000 > a.health_max_ms:
            b.violation("health took %.0f ms outside a kill (bound %.0f ms)" % (lat[-1] * 1000, a.health_max_ms))
        if not lat:
            b.violation("health never answered")
        jobs = list(self.jobs.values())
        outcome = collections.Counter(j["result"] if j["result"] in ("ok", "cancelled") else "LOST" for j in jobs)
        lost_jobs = [j for j in jobs if j["result"] not in ("ok", "cancelled")]
        killed = sum(n for (m, s), n in b.calls.items() if s == "UNAVAILABLE(killed)")
        total = sum(b.calls.values())
        ops_ok = sum(n for (o, r), n in b.ops.items() if r in ("ok", "refused"))
        if total == 0 or ops_ok == 0:
            b.violation("no traffic got through")

        lines = ["", "==== fractald soak report ====",
                 "duration %.1f min, %d clients, seed %d, restarts (kill -9) %d, server generations %d" % (
                     a.minutes, a.clients, a.seed, len(self.restarts), self.server.generation),
                 "restarts (at s, down s, accepted jobs not yet settled): %s" % (self.restarts or "none"),
                 "", "calls by method and status (%d calls, %d failed by a kill):" % (total, killed)]
        methods = sorted({m for m, _ in b.calls})
        for m in methods:
            row = ", ".join("%s %d" % (s, n) for (mm, s), n in sorted(b.calls.items()) if mm == m)
            lines.append("  %-15s %s" % (m, row))
        lines += ["", "operations by outcome:"]
        for o in sorted({o for o, _ in b.ops}):
            row = ", ".join("%s %d" % (r, n) for (oo, r), n in sorted(b.ops.items()) if oo == o)
            lines.append("  %-17s %s" % (o, row))
        lines += ["", "lost calls: %d" % len(b.lost)] + ["  " + x for x in b.lost[:20]]
        lines += ["wrong replies: %d" % len(b.wrong)] + ["  " + x for x in b.wrong[:20]]
        differ = sum(1 for j in jobs if j.get("differs"))
        lines += ["jobs accepted %d: succeeded %d (byte-identical to a unary Render %d, different %d), "
                  "cancelled by the test %d, lost %d" % (len(jobs), outcome["ok"], outcome["ok"] - differ, differ,
                                                         outcome["cancelled"], len(lost_jobs))]
        lines += ["  lost %s (submitted at %.1fs): %s" % (j["id"], j["submitted"], j["result"]) for j in lost_jobs[:20]]
        if lat:
            lines.append("health check latency outside kills: p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d checks)" % (
                lat[len(lat) // 2] * 1000, lat[min(len(lat) - 1, len(lat) * 99 // 100)] * 1000, lat[-1] * 1000, len(lat)))
        lines += ["", "server RSS per generation, MiB (bound %.0f; fail on steady growth > %.0f):" % (
            a.rss_max_mib, a.rss_growth_mib)]
        lines += ["  gen %(gen)3d  %(span_s)6.0fs  first %(first)6.1f  max %(max)6.1f  last %(last)6.1f  "
                  "slope %(slope_per_min)+6.2f/min  growth %(growth)+6.1f  steady %(steady)s" % t for t in rss]
        lines += ["open fds per generation (bound %d; fail on steady growth > %d):" % (a.fd_max, a.fd_growth)]
        lines += ["  gen %(gen)3d  %(span_s)6.0fs  first %(first)4.0f  max %(max)4.0f  last %(last)4.0f  "
                  "slope %(slope_per_min)+6.2f/min  growth %(growth)+4.0f  steady %(steady)s" % t for t in fds]
        lines.append("spool max %.1f MiB (journal %.1f MiB), bound %.0f MiB; %s" % (
            spool_max / MIB, max((s["db"] for s in self.samples), default=0) / MIB, spool_bound / MIB,
            ("growth after %.0f s %+.1f MiB, steady %s" % (2 * retention_s, spool_growth, spool_steady))
            if spool_checked else "plateau not checked (the run is shorter than 3 retention periods)"))
        lines += ["", "over time (every ~30 s):", "      t  gen  RSS MiB  fds  threads  spool MiB  jobs held  queue  running"]
        last_t = -1e9
        for s in self.samples:
            if s["t"] - last_t >= 29 or s is self.samples[-1]:
                lines.append("  %5.0f  %3d  %7.1f  %3d  %7d  %9.1f  %9s  %5s  %7s" % (
                    s["t"], s["gen"], s["rss"] / MIB, s["fds"], s["threads"], s["spool"] / MIB,
                    s["jobs_held"], s["queue"], s["running"]))
                last_t = s["t"]
        if getattr(self, "error_lines", None):
            lines += ["", "level=error lines:"] + ["  " + x for x in self.error_lines[:10]]
        failed = bool(b.lost or b.wrong or lost_jobs or b.violations)
        lines += ["", "violations: %d" % (len(b.violations) + len(b.lost) + len(b.wrong) + len(lost_jobs))]
        lines += ["  " + v for v in b.violations]
        lines.append("SOAK %s" % ("FAILED" if failed else "PASSED"))
        print("\n".join(lines), flush=True)
        if a.report_json:
            with open(a.report_json, "w") as f:
                json.dump({"calls": {"%s %s" % k: n for k, n in b.calls.items()},
                           "ops": {"%s %s" % k: n for k, n in b.ops.items()},
                           "lost_calls": b.lost, "wrong": b.wrong, "violations": b.violations,
                           "jobs": {"accepted": len(jobs), "ok": outcome["ok"], "cancelled": outcome["cancelled"],
                                    "lost": [{"id": j["id"], "why": j["result"]} for j in lost_jobs]},
                           "restarts": self.restarts, "rss": rss, "fds": fds, "samples": self.samples,
                           "passed": not failed}, f, indent=1)
        if failed or a.keep:
            shutil.rmtree(self.spool, ignore_errors=True)
            print("soak: server logs kept in %s" % self.workdir)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return 1 if failed else 0


def main(argv):
    args = parse_args(argv)
    if not os.access(FRACTALD, os.X_OK):
        print("soak: no fractald at %s (set FRACTALD_BIN)" % FRACTALD, file=sys.stderr)
        return 2
    # SIGTERM (a CI timeout, a kill from a terminal) ends the soak through the finally blocks,
    # so the server is stopped; SIGINT does the same through KeyboardInterrupt.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))
    soak = Soak(args)
    try:
        return soak.run()
    except KeyboardInterrupt:
        return 3
    except (RuntimeError, OSError, grpc.RpcError, Violation) as e:
        print("soak: cannot run: %r" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
