"""test_fleet: several fractald servers behind one libfractal target, and one big render fanned out
over them, on 127.0.0.1: round-robin spreads tile calls evenly (each server's GetStats counters),
a server killed mid-load loses no call, a draining server leaves the rotation, and an 8192x8192
render over four servers is the single server's (raw byte for byte; PNG pixel for pixel, with the
same request text), also when a server is killed halfway through or stops answering."""
import hashlib
import os
import re
import signal
import subprocess
import tempfile
import time
import unittest
import zlib

import grpc

from fractald_harness import FRACTAL_CLI, Server, png_chunks
from fractal.v1 import fractal_pb2 as pb
from fractal.v1 import fractal_pb2_grpc as pbg

DRIVER = os.environ.get("FRACTAL_FLEET_DRIVER", "fleet_driver")
SANITIZED = os.environ.get("FRACTALD_SANITIZED") == "1"
# Sanitizers make everything several times slower: there the big render is 2048x2048, which still
# cuts into 32 bands of 64 rows (4 per connection), the same code path.
SIZE = 2048 if SANITIZED else 8192
BAND_ROWS = 64
BANDS = SIZE // BAND_ROWS
# A cheap view: the whole Mandelbrot set at 32 iterations.
VIEW = ["--mandelbrot", "--center", "-0.5,0", "--view-width", "3", "--max-iter", "32"]
TIMEOUT = 120
# One render thread and no OpenCL device per server (PoCL's CPU device would take every core), so
# that four servers share the machine evenly and a big render lasts long enough to kill one.
SERVER_ARGS = ("--threads", "1", "--devices", "opencl = off")


def renders(server):
    """Render calls the server has answered OK (its GetStats request counters)."""
    with grpc.insecure_channel(server.target) as ch:
        st = pbg.RendererStub(ch).GetStats(pb.GetStatsRequest(), timeout=10)
    return sum(m.count for m in st.requests if m.method == "Render" and m.code == 0)


def png_digest(path):
    """(IHDR, {keyword: text}, sha256 of the inflated image data): equal digests mean equal pixels
    when the filters are the same, which they are (fractald's and libfractal's: none for RGB)."""
    with open(path, "rb") as f:
        data = f.read()
    ihdr, texts, d, h = None, {}, zlib.decompressobj(), hashlib.sha256()
    for ctype, payload in png_chunks(data):
        if ctype == "IHDR":
            ihdr = payload
        elif ctype == "zTXt":
            key, _, rest = payload.partition(b"\0")
            texts[key] = zlib.decompress(rest[1:])
        elif ctype == "tEXt":
            key, _, value = payload.partition(b"\0")
            texts[key] = value
        elif ctype == "IDAT":
            h.update(d.decompress(payload))
    h.update(d.flush())
    return ihdr, texts, h.hexdigest()


class Fleet:
    """Four servers (one render thread each; the first also gets first_args), stopped by stop()
    whatever state they are in."""

    def __init__(self, n=4, first_args=()):
        self.servers, self.killed = [], set()
        try:
            for i in range(n):
                self.servers.append(Server(*SERVER_ARGS, *(first_args if i == 0 else ())))
        except Exception:
            self.stop()
            raise

    @property
    def target(self):
        return ",".join(s.target for s in self.servers)

    def kill(self, i):
        self.servers[i].kill()
        self.killed.add(i)

    def stop(self):
        live = [s for i, s in enumerate(self.servers) if i not in self.killed]
        # All at once: each shutdown waits for its own calls, and these need not queue.
        for s in live:
            if s.proc.poll() is None:
                s.proc.send_signal(signal.SIGTERM)
        for s in live:
            try:
                s.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
            s.stop()
        self.killed.update(range(len(self.servers)))


def wait_for(predicate, proc, what, timeout=TIMEOUT):
    """Polls predicate() every 20 ms until true; fails if proc (the load) ends first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError("the load finished before %s" % what)
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(0.02)


class BalancedTarget(unittest.TestCase):
    """One libfractal target naming four servers: round_robin with health checking."""

    def setUp(self):
        # The drain test's first server drains for 4 s after SIGTERM.
        drain = self._testMethodName == "test_draining_server_leaves_rotation"
        self.fleet = Fleet(4, first_args=("--drain-notice-ms", "4000") if drain else ())
        self.addCleanup(self.fleet.stop)

    def driver(self, count, threads, *extra):
        return subprocess.Popen([DRIVER, self.fleet.target, str(count), str(threads), *extra],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish(self, proc, count):
        out, err = proc.communicate(timeout=TIMEOUT)
        self.assertEqual(proc.returncode, 0, out + err)
        self.assertIn("ok=%d failed=0 " % count, out)

    def test_round_robin_spreads_calls(self):
        before = [renders(s) for s in self.fleet.servers]
        self.finish(self.driver(400, 4), 400)
        got = [renders(s) - b for s, b in zip(self.fleet.servers, before)]
        self.assertEqual(sum(got), 400, got)
        for n in got:
            self.assertTrue(70 <= n <= 130, "per-server calls %s, want 100 +- 30 each" % got)

    def test_killed_server_loses_no_call(self):
        # Enough calls to be running well past the kill, which comes a quarter of the way in.
        proc = self.driver(1200, 4)
        wait_for(lambda: sum(renders(s) for s in self.fleet.servers) >= 300, proc, "300 calls")
        self.fleet.kill(1)
        self.assertIsNone(proc.poll(), "the load must still be running when the server dies")
        self.finish(proc, 1200)

    def test_draining_server_leaves_rotation(self):
        proc = self.driver(100000, 2, "64")
        self.addCleanup(lambda: proc.poll() is None and (proc.kill(), proc.communicate()))
        victim, others = self.fleet.servers[0], self.fleet.servers[1:]
        wait_for(lambda: renders(victim) >= 20, proc, "calls on the victim")
        # SIGTERM: for --drain-notice-ms the victim answers health NOT_SERVING, still listening, and
        # refuses new work with UNAVAILABLE "server is shutting down" (logged at warn). GetStats is
        # refused too, so its log tells how many calls still reached it.
        victim.proc.send_signal(signal.SIGTERM)
        o1 = sum(renders(s) for s in others)
        time.sleep(2.0)
        o2 = sum(renders(s) for s in others)
        self.assertIsNone(proc.poll(), "the load must outlast the measurement")
        self.assertGreater(o2 - o1, 20, "the others must carry the load meanwhile")
        # Reads its stderr while it finishes the drain (a second SIGTERM changes nothing then).
        # gRPC's health client opens Watch streams again and again meanwhile (the server ends each
        # with NOT_SERVING), which fills that log: a pipe left unread would stall the server.
        _, log = victim.stop_and_read_log(timeout=30)
        self.fleet.killed.add(0)
        refused = [l for l in log.splitlines() if "Render" in l and "shutting down" in l]
        # Only calls already on their way when the Watch stream said NOT_SERVING; without health
        # checking a quarter of some hundreds of calls would land there.
        self.assertLessEqual(len(refused), 10, "\n".join(refused[:20]))
        proc.kill()
        proc.communicate()


class FanOut(unittest.TestCase):
    """`fractal render --server A,B,C,D`: the image in bands over the four servers."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory(prefix="fractal-fleet-")
        cls.ref = {}
        one = Server(*SERVER_ARGS)
        try:
            for fmt, name in (("raw-u32", "ref.u32"), ("png", "ref.png")):
                cls.ref[fmt] = os.path.join(cls.dir.name, name)
                cls.cli(one.target, fmt, cls.ref[fmt])
        finally:
            one.stop()

    @classmethod
    def tearDownClass(cls):
        cls.dir.cleanup()

    @staticmethod
    def cli(target, fmt, path, wait=True):
        cmd = [FRACTAL_CLI, "render", "--server", target, "--size", "%dx%d" % (SIZE, SIZE), *VIEW,
               "--format", fmt, "-o", path, "--stats", "--band-rows", str(BAND_ROWS)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if not wait:
            return proc
        out, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, err
        return err

    def setUp(self):
        self.fleet = Fleet(4)
        self.addCleanup(self.fleet.stop)

    def out(self, name):
        return os.path.join(self.dir.name, name)

    def check_same(self, fmt, path):
        if fmt == "raw-u32":
            self.assertEqual(os.path.getsize(path), SIZE * SIZE * 4)
            # filecmp reads both in blocks: no 256 MiB strings.
            import filecmp
            self.assertTrue(filecmp.cmp(self.ref[fmt], path, shallow=False), "raw images differ")
        else:
            ref, got = png_digest(self.ref[fmt]), png_digest(path)
            self.assertEqual(got[0], ref[0], "IHDR differs")
            self.assertEqual(got[1], ref[1], "request text chunk differs")
            self.assertEqual(got[2], ref[2], "pixels differ")

    def test_fanout_equals_single_server(self):
        for fmt, name in (("raw-u32", "fan.u32"), ("png", "fan.png")):
            with self.subTest(fmt=fmt):
                err = self.cli(self.fleet.target, fmt, self.out(name))
                self.check_same(fmt, self.out(name))
                served = [int(n) for n in re.findall(r"server +\S+: (\d+) bands", err)]
                self.assertEqual(sum(served), BANDS, err)
                self.assertTrue(all(n > 0 for n in served), "every server takes bands: %s" % err)
                os.unlink(self.out(name))

    def test_fanout_with_server_killed_halfway(self):
        for fmt, name in (("raw-u32", "killed.u32"), ("png", "killed.png")):
            with self.subTest(fmt=fmt):
                if fmt == "png":  # a fresh fleet: the first one has lost a server
                    self.fleet.stop()
                    self.fleet = Fleet(4)
                    self.addCleanup(self.fleet.stop)
                base = sum(renders(s) for s in self.fleet.servers)
                proc = self.cli(self.fleet.target, fmt, self.out(name), wait=False)
                wait_for(lambda: sum(renders(s) for s in self.fleet.servers) - base >= BANDS // 2, proc,
                         "half the bands")
                self.fleet.kill(2)
                out, err = proc.communicate(timeout=TIMEOUT)
                self.assertEqual(proc.returncode, 0, err)
                self.check_same(fmt, self.out(name))
                m = re.search(r"bands +(\d+), (\d+) sent again", err)
                self.assertTrue(m and int(m.group(1)) == BANDS, err)
                self.assertGreaterEqual(int(m.group(2)), 1, "the dead server's bands must be sent again: " + err)
                self.assertRegex(err, r"server +%s: \d+ bands, [1-9]\d* failed, dropped"
                                 % re.escape(self.fleet.servers[2].target))
                os.unlink(self.out(name))

    def test_fanout_with_server_frozen(self):
        # SIGSTOP: the server's connections stay up but nothing answers, so its bands time out
        # (--deadline is the limit of each band) and go to the others.
        victim = self.fleet.servers[3]
        self.addCleanup(lambda: victim.proc.poll() is None and victim.proc.send_signal(signal.SIGCONT))
        base = sum(renders(s) for s in self.fleet.servers)
        path = self.out("frozen.u32")
        proc = subprocess.Popen([FRACTAL_CLI, "render", "--server", self.fleet.target, "--size", "%dx%d" % (SIZE, SIZE),
                                 *VIEW, "--format", "raw-u32", "-o", path, "--stats", "--band-rows", str(BAND_ROWS),
                                 "--deadline", "3000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: sum(renders(s) for s in self.fleet.servers) - base >= BANDS // 4, proc, "a quarter of the bands")
        victim.proc.send_signal(signal.SIGSTOP)
        out, err = proc.communicate(timeout=TIMEOUT)
        victim.proc.send_signal(signal.SIGCONT)
        self.assertEqual(proc.returncode, 0, err)
        self.check_same("raw-u32", path)
        m = re.search(r"bands +\d+, (\d+) sent again", err)
        self.assertTrue(m and int(m.group(1)) >= 1, err)
        os.unlink(path)

    def test_fanout_refuses_what_it_cannot_split(self):
        for flags in (["--precision", "perturb"], ["--rect-fill"], ["--view-width", "1e-400"]):
            with self.subTest(flags=flags):
                proc = subprocess.run([FRACTAL_CLI, "render", "--server", self.fleet.target, *flags,
                                       "-o", self.out("no.png")], capture_output=True, text=True,
                                      timeout=TIMEOUT)
                self.assertEqual(proc.returncode, 2, proc.stderr)
                self.assertIn("fan-out cannot split", proc.stderr)
                self.assertFalse(os.path.exists(self.out("no.png")))


if __name__ == "__main__":
    unittest.main()
