"""The `fractal` command-line tool against a real fractald: renders to files and stdout, --from
round trips, devices, health, and exit codes with the server's message on failure."""
import os
import subprocess
import tempfile
import unittest

import fractald_harness as h


class CliTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = h.Server()
        cls.tmp = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()
        assert cls.server.stop() == 0

    def fractal(self, *args, env=None):
        return subprocess.run([h.FRACTAL_CLI, *args], capture_output=True, timeout=120,
                              env=dict(os.environ, **(env or {})))

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def render(self, *args, out):
        proc = self.fractal("render", "--server", self.server.target, "-o", self.path(out), *args)
        self.assertEqual(proc.returncode, 0, proc.stderr.decode())
        return open(self.path(out), "rb").read()

    def test_default_render_writes_the_demo_png(self):
        data = self.render(out="default.png")
        width, height, depth, ctype, texts, _ = h.png_info(data)
        self.assertEqual((width, height, depth, ctype), (600, 400, 8, 2))
        self.assertIn('"maxIter":256', texts["fractal.v1.RenderRequest"])

    def test_server_from_environment_and_stdout(self):
        proc = self.fractal("render", "--size", "64x48", "-o", "-", env={"FRACTAL_SERVER": self.server.target})
        self.assertEqual(proc.returncode, 0, proc.stderr.decode())
        self.assertEqual(h.png_info(proc.stdout)[:2], (64, 48))

    def test_from_png_renders_the_same_bytes(self):
        first = self.render("--mandelbrot", "--center", "-0.745,0.113", "--view-width", "0.05",
                            "--max-iter", "600", "--size", "160x120", "--palette", "twilight",
                            "--supersample", "2", out="first.png")
        again = self.render("--from", self.path("first.png"), out="again.png")
        self.assertEqual(first, again)
        other = self.render("--from", self.path("first.png"), "--palette", "grayscale", out="grey.png")
        self.assertNotEqual(first, other)
        self.assertEqual(h.png_info(other)[:2], (160, 120))

    def test_every_format(self):
        self.assertEqual(len(self.render("--format", "raw-u32", "--size", "30x20", out="c.u32")), 30 * 20 * 4)
        self.assertEqual(len(self.render("--format", "raw-f32", "--size", "30x20", out="c.f32")), 30 * 20 * 4)
        self.assertEqual(h.png_info(self.render("--format", "png16", "--size", "30x20", out="g.png"))[2:4], (16, 0))
        tile = self.render("--region", "10,5,20,10", "--size", "30x20", out="tile.png")
        self.assertEqual(h.png_info(tile)[:2], (20, 10))

    def test_server_refusal_exit_code_and_message(self):
        proc = self.fractal("render", "--server", self.server.target, "--size", "65537x10", "-o", self.path("x.png"))
        self.assertEqual(proc.returncode, 3)
        self.assertIn(b"width must be 1..65536, got 65537", proc.stderr)
        self.assertFalse(os.path.exists(self.path("x.png")))
        proc = self.fractal("render", "--server", self.server.target, "--size", "20000x20000",
                            "--max-iter", "10000000", "-o", self.path("x.png"))
        self.assertEqual(proc.returncode, 4)
        self.assertIn(b"over the limit", proc.stderr)

    def test_usage_errors_exit_2(self):
        for args in (["render", "--size", "12"], ["render", "--max-iter", "12abc"], ["nosuchcommand"],
                     ["render", "--julia", "1"]):
            with self.subTest(args):
                proc = self.fractal(*args)
                self.assertEqual(proc.returncode, 2, proc.stderr.decode())

    def test_unreachable_server_exits_5(self):
        proc = self.fractal("health", "--server", "127.0.0.1:1", "--deadline", "2000")
        self.assertEqual(proc.returncode, 5, proc.stderr.decode())

    def test_devices_and_health(self):
        proc = self.fractal("devices", "--server", self.server.target)
        self.assertEqual(proc.returncode, 0, proc.stderr.decode())
        self.assertIn(b"cpu", proc.stdout)
        proc = self.fractal("health", "--server", self.server.target)
        self.assertEqual(proc.returncode, 0)
        self.assertIn(b"SERVING", proc.stdout)

    def test_help_lists_every_render_flag(self):
        proc = self.fractal("render", "--help")
        self.assertEqual(proc.returncode, 0)
        for flag in ("--julia", "--center", "--view-width", "--size", "--max-iter", "--palette", "--format",
                     "--supersample", "--precision", "--region", "--device", "--server", "--deadline", "--from"):
            self.assertIn(flag.encode(), proc.stdout)


if __name__ == "__main__":
    unittest.main()
