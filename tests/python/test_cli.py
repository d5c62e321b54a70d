"""The `fractal` command-line tool against a real fractald: renders to files and stdout, --from
round trips, devices, health, and exit codes with the server's message on failure (naming the
tool's flags, and the server that could not be reached); streamed renders equal unary ones byte for
byte; the submit / job / wait / cancel / jobs flow and stats; common options before the command,
`fractal help CMD` and --version."""
import os
import re
import subprocess
import tempfile
import unittest

import fractald_harness as h

SOURCE_DIR = os.environ.get("FRACTAL_SOURCE_DIR",
                            os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
COMMANDS = ("render", "submit", "job", "wait", "cancel", "jobs", "stats", "devices", "health")


class CliTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        spool = os.path.join(cls.tmp.name, "spool")
        os.mkdir(spool)
        cls.server = h.Server("--spool-dir", spool)

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
        self.assertEqual(proc.stderr, b"fractal: the width of --size must be 1..65536, got 65537\n")
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

    def test_unreachable_server_is_one_line_naming_it(self):
        line = b"fractal: cannot reach fractald at 127.0.0.1:1: connection refused\n"
        for args in (["health"], ["render", "-o", self.path("nobody.png")], ["render", "--stream", "-o", "-"],
                     ["submit"], ["job", "some-id"], ["wait", "some-id"], ["jobs"], ["stats"], ["devices"]):
            for before in (True, False):
                with self.subTest(args=args, before=before):
                    conn = ["--server", "127.0.0.1:1"]
                    proc = self.fractal(*(conn + args if before else args + conn))
                    self.assertEqual(proc.returncode, 5, proc.stderr.decode())
                    self.assertEqual(proc.stderr, line)
                    self.assertEqual(proc.stdout, b"")
        self.assertFalse(os.path.exists(self.path("nobody.png")))
        # -q keeps health silent; the exit status still tells.
        proc = self.fractal("health", "-q", "--server", "127.0.0.1:1")
        self.assertEqual((proc.returncode, proc.stdout, proc.stderr), (5, b"", b""))

    def test_invalid_request_names_the_flag(self):
        # The server names the request field ("width must be ..."); the tool names its flag.
        cases = [
            (["--size", "0x10"], r"the width of --size must be 1\.\.65536, got 0"),
            (["--size", "10x0"], r"the height of --size must be 1\.\.65536, got 0"),
            (["--view-width", "-1"], r"--view-width must be a finite number in \(0, 1e6\], got -1"),
            (["--julia", "nan,0"], r"the real part of --julia must be a finite number, got nan"),
            (["--center", "0,inf"], r"the imaginary part of --center must be a finite number, got inf"),
            (["--max-iter", "0"], r"--max-iter must be 1\.\.\d+, got 0"),
            (["--escape-radius", "1"], r"--escape-radius must be a number in \(1, \S+\], got 1"),
            (["--supersample", "9"], r"--supersample must be 1\.\.8, got 9"),
            (["--format", "raw-u32", "--supersample", "2"], r"--supersample must be 1 for raw formats, got 2"),
            (["--region", "0,0,0,5"], r"--region width and height must be >= 1, got 0x5"),
            (["--device", "nosuch"], r'--device must be "", "cpu", "gpu", "opencl" or a device id from '
                                     r'ListDevices, got "nosuch"'),
            (["--palette", "nosuch"], r'--palette must be one of [a-z0-9_, ]+, got "nosuch"'),
            (["--stops", "0:#000000,1.5:#ffffff"], r"the position of stop 2 of --stops must be 0\.\.1, got 1\.5"),
            (["--stops", "0.5:#000000,0.2:#ffffff"],
             r"the position of stop 2 of --stops must not be below the previous stop's 0\.5, got 0\.2"),
            (["--cycle", "-1"], r"--cycle must be a finite number >= 0, got -1"),
            (["--offset", "2"], r"--offset must be 0\.\.1, got 2"),
        ]
        for args, message in cases:
            for mode in ("--unary", "--stream", "submit"):
                with self.subTest(args=args, mode=mode):
                    if mode == "submit":
                        cmd = ["submit", *args]
                    else:
                        cmd = ["render", mode, *args, "-o", self.path("refused.png")]
                    proc = self.fractal(*cmd, "--server", self.server.target)
                    self.assertEqual(proc.returncode, 3, proc.stderr.decode())
                    self.assertRegex(proc.stderr.decode(), r"\Afractal: %s\n\Z" % message)
                    self.assertEqual(proc.stdout, b"")
                    self.assertFalse(os.path.exists(self.path("refused.png")))
        # Only INVALID_ARGUMENT is rewritten: this FAILED_PRECONDITION starts with "precision"
        # too, and is the server's message as it is.
        proc = self.fractal("render", "--server", self.server.target, "--precision", "fp32", "--size", "100x100",
                            "--view-width", "1e-7", "-o", self.path("refused.png"))
        self.assertEqual(proc.returncode, 4, proc.stderr.decode())
        self.assertRegex(proc.stderr.decode(), r"\Afractal: precision PRECISION_FP32 cannot resolve [^\n]*\n\Z")

    def test_devices_and_health(self):
        proc = self.fractal("devices", "--server", self.server.target)
        self.assertEqual(proc.returncode, 0, proc.stderr.decode())
        self.assertIn(b"cpu", proc.stdout)
        proc = self.fractal("health", "--server", self.server.target)
        self.assertEqual(proc.returncode, 0)
        self.assertIn(b"SERVING", proc.stdout)

    def read(self, name):
        with open(self.path(name), "rb") as f:
            return f.read()

    def run_ok(self, *args):
        proc = self.fractal(*args[:1], "--server", self.server.target, *args[1:])
        self.assertEqual(proc.returncode, 0, proc.stderr.decode())
        return proc

    def test_streamed_render_equals_unary(self):
        spec = ("--mandelbrot", "--center", "-0.5,0", "--size", "700x500", "--max-iter", "200")
        unary = self.render("--unary", *spec, out="u.png")
        streamed = self.render("--stream", *spec, out="s.png")
        self.assertEqual(unary, streamed)
        proc = self.run_ok("render", "--stream", *spec, "-o", "-")
        self.assertEqual(proc.stdout, unary)
        # Over 4 Mpixel, render streams by itself; no progress bar when stderr is not a terminal.
        big = ("--size", "2100x2100", "--max-iter", "16")
        proc = self.run_ok("render", *big, "-o", self.path("big.png"))
        self.assertNotIn(b"\r", proc.stderr)
        self.assertNotIn(b"rows", proc.stderr)
        self.assertEqual(self.read("big.png"), self.render("--unary", *big, out="bigu.png"))
        self.assertEqual(sorted(n for n in os.listdir(self.tmp.name) if ".tmp." in n), [])

    def test_streamed_refusal_exit_code(self):
        proc = self.fractal("render", "--stream", "--server", self.server.target, "--size", "65537x10",
                            "-o", self.path("y.png"))
        self.assertEqual(proc.returncode, 3)
        self.assertEqual(proc.stderr, b"fractal: the width of --size must be 1..65536, got 65537\n")
        self.assertFalse(os.path.exists(self.path("y.png")))

    def test_submit_job_wait_jobs(self):
        spec = ("--julia", "-0.4,0.6", "--size", "400x300", "--max-iter", "300")
        job_id = self.run_ok("submit", *spec).stdout.decode().strip()
        self.assertRegex(job_id, r"^\S+$")
        proc = self.run_ok("job", job_id)
        self.assertIn(("id          %s" % job_id).encode(), proc.stdout)
        self.assertRegex(proc.stdout.decode(), r"state +(queued|running|succeeded)")
        self.run_ok("wait", job_id, "-o", self.path("job.png"), "--timeout", "60000")
        self.assertEqual(self.read("job.png"), self.render("--unary", *spec, out="jobu.png"))
        self.assertEqual(self.run_ok("wait", job_id, "-o", "-").stdout, self.read("job.png"))
        proc = self.run_ok("job", job_id)
        self.assertRegex(proc.stdout.decode(), r"state +succeeded")
        self.assertRegex(proc.stdout.decode(), r"result +400x300 image/png")
        jobs = self.run_ok("jobs").stdout.decode()
        self.assertRegex(jobs, r"(?m)^%s +succeeded" % re.escape(job_id))
        self.assertIn(job_id, self.run_ok("jobs", "--state", "succeeded", "--limit", "100").stdout.decode())
        self.assertNotIn(job_id, self.run_ok("jobs", "--state", "queued").stdout.decode())
        # Cancelling a finished job changes nothing.
        self.assertEqual(self.run_ok("cancel", job_id).stdout.decode().split(), [job_id, "succeeded"])

    def test_cancel_and_not_found(self):
        huge = ("--size", "8000x8000", "--max-iter", "3000", "--view-width", "0.01")
        job_id = self.run_ok("submit", *huge).stdout.decode().strip()
        proc = self.fractal("wait", job_id, "--timeout", "200", "--server", self.server.target)
        self.assertEqual(proc.returncode, 5, proc.stderr.decode())
        self.run_ok("cancel", job_id)
        proc = self.fractal("wait", job_id, "-o", self.path("never.png"), "--timeout", "10000",
                            "--server", self.server.target)
        self.assertEqual(proc.returncode, 7, proc.stderr.decode())
        self.assertIn(b"cancelled", proc.stderr)
        self.assertFalse(os.path.exists(self.path("never.png")))
        for cmd in ("job", "wait", "cancel"):
            with self.subTest(cmd):
                proc = self.fractal(cmd, "no-such-job", "--server", self.server.target)
                self.assertEqual(proc.returncode, 6, proc.stderr.decode())
        self.assertEqual(self.fractal("jobs", "--state", "bogus").returncode, 2)
        self.assertEqual(self.fractal("wait").returncode, 2)

    def test_stats(self):
        self.render("--size", "32x32", out="tiny.png")
        out = self.run_ok("stats").stdout.decode()
        self.assertRegex(out, r"uptime +\d")
        self.assertRegex(out, r"(?m)^Render +OK +[1-9]")

    def test_help_lists_commands_and_exit_codes(self):
        proc = self.fractal("--help")
        self.assertEqual(proc.returncode, 0)
        for word in (b"submit", b"job", b"wait", b"cancel", b"jobs", b"stats", b"NOT_FOUND", b"6  "):
            self.assertIn(word, proc.stdout)
        for cmd in ("submit", "job", "wait", "cancel", "jobs", "stats"):
            self.assertEqual(self.fractal(cmd, "--help").returncode, 0, cmd)

    def test_common_options_before_the_command(self):
        target = self.server.target
        spec = ("--size", "64x48", "--max-iter", "100")
        before = self.fractal("--server", target, "render", "-o", self.path("before.png"), *spec)
        after = self.fractal("render", "--server", target, "-o", self.path("after.png"), *spec)
        for proc, name in ((before, "before.png"), (after, "after.png")):
            self.assertEqual(proc.returncode, 0, proc.stderr.decode())
            self.assertRegex(proc.stderr.decode(), r"\Awrote %s \(64x48, \d+ bytes\)\n\Z" % re.escape(self.path(name)))
        self.assertEqual(self.read("before.png"), self.read("after.png"))
        proc = self.fractal("--server=" + target, "--deadline", "5000", "health")
        self.assertEqual((proc.returncode, proc.stdout, proc.stderr), (0, b"SERVING\n", b""))
        job_id = self.fractal("--server", target, "submit", *spec).stdout.decode().strip()
        self.assertRegex(job_id, r"^\S+$")
        proc = self.fractal("--server", target, "--deadline", "10000", "wait", job_id, "-o", "-", "-q")
        self.assertEqual(proc.returncode, 0, proc.stderr.decode())
        self.assertEqual(proc.stdout, self.read("before.png"))
        # Options apply in command-line order, wherever the command stands: the later one wins.
        self.assertEqual(self.fractal("--server", "127.0.0.1:1", "health", "--server", target).returncode, 0)
        self.assertEqual(self.fractal("--server", target, "health", "--server", "127.0.0.1:1").returncode, 5)
        # Before the command, only the common options (and --help, --version) are known.
        for args, message in ((["--bogus", "render"], b"unknown option '--bogus'"),
                              (["-q", "render"], b"unknown option '-q'"),
                              (["--size", "8x8", "render"], b"unknown option '--size'"),
                              (["--server"], b"option '--server' needs a value"),
                              (["--server", target], b"no command given"),
                              ([], b"no command given"),
                              (["--server", target, "nosuchcommand"], b"unknown command 'nosuchcommand'")):
            with self.subTest(args):
                proc = self.fractal(*args)
                self.assertEqual(proc.returncode, 2, proc.stderr.decode())
                self.assertEqual(proc.stderr, b"fractal: " + message + b"\nTry 'fractal --help'.\n")
        proc = self.fractal("--deadline", "soon", "health")
        self.assertEqual(proc.returncode, 2, proc.stderr.decode())
        self.assertEqual(proc.stderr, b"fractal: --deadline: 'soon' is not a number of milliseconds\n"
                                      b"Try 'fractal health --help'.\n")

    def test_help_command(self):
        overview = self.fractal("--help")
        self.assertEqual(overview.returncode, 0)
        self.assertIn(b"Common options, before or after the command:", overview.stdout)
        for args in (["help"], ["-h"], ["help", "help"], ["--server", "127.0.0.1:1", "--help"]):
            with self.subTest(args):
                proc = self.fractal(*args)
                self.assertEqual((proc.returncode, proc.stdout, proc.stderr), (0, overview.stdout, b""))
        for cmd in COMMANDS:
            with self.subTest(cmd):
                own = self.fractal(cmd, "--help")
                self.assertEqual(own.returncode, 0)
                self.assertTrue(own.stdout.startswith(b"Usage: fractal " + cmd.encode() + b" "), own.stdout[:80])
                proc = self.fractal("help", cmd)
                self.assertEqual((proc.returncode, proc.stdout, proc.stderr), (0, own.stdout, b""))
                # Help connects to nothing: common options before it do not matter.
                proc = self.fractal("--server", "127.0.0.1:1", "help", cmd)
                self.assertEqual((proc.returncode, proc.stdout), (0, own.stdout))
        proc = self.fractal("help", "nosuch")
        self.assertEqual((proc.returncode, proc.stdout), (2, b""))
        self.assertEqual(proc.stderr, b"fractal: unknown command 'nosuch'\nTry 'fractal --help'.\n")
        proc = self.fractal("help", "render", "jobs")
        self.assertEqual((proc.returncode, proc.stdout), (2, b""))
        self.assertEqual(proc.stderr, b"fractal: unexpected argument 'jobs'\nTry 'fractal --help'.\n")

    def test_version(self):
        # The one place the version is stated: project(... VERSION x.y.z) in the top CMakeLists.txt.
        with open(os.path.join(SOURCE_DIR, "CMakeLists.txt")) as f:
            version = re.search(r"project\(\s*\w+\s+VERSION\s+([0-9][0-9.]*)", f.read()).group(1)
        for args in (["--version"], ["-V"], ["--server", self.server.target, "-V"], ["--version", "render"]):
            with self.subTest(args):
                proc = self.fractal(*args)
                self.assertEqual((proc.returncode, proc.stdout, proc.stderr),
                                 (0, ("fractal %s\n" % version).encode(), b""))

    def test_help_lists_every_render_flag(self):
        proc = self.fractal("render", "--help")
        self.assertEqual(proc.returncode, 0)
        for flag in ("--julia", "--center", "--view-width", "--size", "--max-iter", "--palette", "--format",
                     "--supersample", "--precision", "--region", "--device", "--server", "--deadline", "--from",
                     "--stream", "--unary"):
            self.assertIn(flag.encode(), proc.stdout)


if __name__ == "__main__":
    unittest.main()
