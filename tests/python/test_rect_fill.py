"""Rectangle fill (Mariani-Silver) end to end: RenderRequest.rect_fill reaches the engines, through
gRPC, the `fractal render` and `fractal submit` flags, with exact evidence and no timing: a view on
which the fill is wrong on a few pixels (escaping hairs crossing box borders between samples),
where rect fill on reports more iterations than off by exactly what those pixels account for, and
off equals a scalar reference of docs/MATH.md computed here."""
import os
import struct
import subprocess
import tempfile
import unittest

import fractald_harness as h

import grpc  # noqa: E402
from fractal.v1 import fractal_pb2 as pb  # noqa: E402
from fractal.v1 import fractal_pb2_grpc as pb_grpc  # noqa: E402

TIMEOUT = 120

# Found by search (Mandelbrot views along the cardioid, 600x400, fp64): with the boxes of
# server/engines/rect_fill.c (the same however the grid is cut), 15 samples that escape are filled
# as interior. If the boxes change, this view may need replacing: any view where `differ` below is
# non-empty does (tests/unit/test_rect_fill.c uses the same one).
W, H = 600, 400
CENTER = (0.20043615904424816, 0.54317852949518808)
VIEW_WIDTH = 0.0079432823472428138
MAX_ITER = 770


def request(**kw):
    return pb.RenderRequest(mandelbrot=pb.Mandelbrot(), width=W, height=H, max_iter=MAX_ITER,
                            view=pb.View(center=pb.Complex(re=CENTER[0], im=CENTER[1]), width=VIEW_WIDTH),
                            precision=pb.PRECISION_FP64, format=pb.FORMAT_RAW_U32, device="cpu", **kw)


def reference_count(i, j):
    """Escape count of pixel (i, j), in the operation order of docs/MATH.md (Python floats are IEEE
    doubles, and Python never contracts to FMA)."""
    s = VIEW_WIDTH / W
    cr = CENTER[0] + ((i + 0.5) - W * 0.5) * s
    ci = CENTER[1] - ((j + 0.5) - H * 0.5) * s
    zr = zi = 0.0
    for n in range(MAX_ITER):
        x2, y2 = zr * zr, zi * zi
        if not x2 + y2 <= 4.0:
            return n
        t = zr * zi
        zi = (t + t) + ci
        zr = (x2 - y2) + cr
    return MAX_ITER


def counts_of(data):
    return struct.unpack("<%dI" % (W * H), data)


class RectFillTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        spool = os.path.join(cls.tmp.name, "spool")
        os.mkdir(spool)
        # The CPU engine alone: the reference (every device gives the same counts anyway).
        cls.server = h.Server("--devices", "exclude = name:*", "--spool-dir", spool)
        cls.channel = grpc.insecure_channel(cls.server.target)
        cls.stub = pb_grpc.RendererStub(cls.channel)
        cls.off = cls.stub.Render(request(), timeout=TIMEOUT)
        cls.on = cls.stub.Render(request(rect_fill=True), timeout=TIMEOUT)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.tmp.cleanup()
        assert cls.server.stop() == 0

    def fractal(self, *args):
        proc = subprocess.run([h.FRACTAL_CLI, *args, "--server", self.server.target], capture_output=True,
                              timeout=TIMEOUT)
        self.assertEqual(proc.returncode, 0, proc.stderr.decode())
        return proc.stdout

    def cli_spec(self):
        return ("--mandelbrot", "--size", "%dx%d" % (W, H), "--max-iter", str(MAX_ITER),
                "--center", "%r,%r" % CENTER, "--view-width", repr(VIEW_WIDTH), "--precision", "fp64",
                "--format", "raw-u32", "--device", "cpu")

    def test_off_is_brute_force_and_on_fills_only_interior(self):
        off, on = counts_of(self.off.data), counts_of(self.on.data)
        # Both keep the contract: iterations is the sum of the escape counts sent.
        self.assertEqual(sum(off), self.off.stats.iterations)
        self.assertEqual(sum(on), self.on.stats.iterations)
        differ = [k for k in range(W * H) if off[k] != on[k]]
        self.assertTrue(differ, "rect fill changed no pixel: the switch does not reach the engines, or "
                                "the view no longer stresses the subdivision (see the comment at W, H)")
        self.assertLessEqual(len(differ), W * H // 10000)
        for k in differ:
            # Only interior is ever filled; off is what the scalar reference computes.
            self.assertEqual(on[k], MAX_ITER)
            self.assertLess(off[k], MAX_ITER)
            self.assertEqual(off[k], reference_count(k % W, k // W))
        self.assertEqual(self.on.stats.iterations - self.off.stats.iterations,
                         sum(MAX_ITER - off[k] for k in differ))
        # Samples are pixels x supersample^2 either way: filled samples count as samples.
        self.assertEqual(self.on.stats.samples, self.off.stats.samples)

    def test_explicit_false_is_the_default(self):
        again = self.stub.Render(request(rect_fill=False), timeout=TIMEOUT)
        self.assertEqual(again.data, self.off.data)

    def test_cli_render_flag(self):
        self.assertEqual(self.fractal("render", *self.cli_spec(), "--rect-fill", "-o", "-"), self.on.data)
        self.assertEqual(self.fractal("render", *self.cli_spec(), "-o", "-"), self.off.data)
        self.assertEqual(self.fractal("render", *self.cli_spec(), "--rect-fill", "--no-rect-fill", "-o", "-"),
                         self.off.data)

    def test_cli_submit_flag(self):
        job = self.fractal("submit", *self.cli_spec(), "--rect-fill").decode().strip()
        self.assertEqual(self.fractal("wait", job, "-o", "-", "--timeout", "60000"), self.on.data)

    def test_render_help_names_the_flags(self):
        proc = subprocess.run([h.FRACTAL_CLI, "render", "--help"], capture_output=True, timeout=TIMEOUT)
        self.assertEqual(proc.returncode, 0)
        self.assertIn(b"--rect-fill", proc.stdout)
        self.assertIn(b"--no-rect-fill undoes it", proc.stdout)

if __name__ == "__main__":
    unittest.main()
