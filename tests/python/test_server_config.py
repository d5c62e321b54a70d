"""fractald's own settings from the outside: --version, the listen-address check, the [server]
section of the config file (flags win over it), size suffixes, and log lines that parse as
logfmt with statuses and formats by name."""
import os
import re
import subprocess
import tempfile
import unittest

import fractald_harness as h  # noqa: E402  (sets sys.path for the generated stubs)

import grpc  # noqa: E402
from fractal.v1 import fractal_pb2 as pb  # noqa: E402
from fractal.v1 import fractal_pb2_grpc as pb_grpc  # noqa: E402

TIMEOUT = 60


def run_fractald(*args):
    return subprocess.run([h.FRACTALD, *args], capture_output=True, text=True, timeout=60)


def write_config(text):
    fd, path = tempfile.mkstemp(prefix="fractald-test-", suffix=".ini")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


LOGFMT_PAIR = re.compile(r'([A-Za-z_][A-Za-z0-9_.]*)=("(?:[^"\\]|\\.)*"|[^\s"=\\]+)(?= |$)')


def parse_logfmt(line):
    """The key/value pairs of one logfmt line, or raises ValueError if any part of it is not a
    pair. Quoted values are unescaped (\\" \\\\ \\n \\r \\t \\xNN)."""
    out, pos = {}, 0
    while pos < len(line):
        m = LOGFMT_PAIR.match(line, pos)
        if not m:
            raise ValueError("not logfmt at %d: %r" % (pos, line))
        key, value = m.group(1), m.group(2)
        if value.startswith('"'):
            body, value, i = value[1:-1], "", 0
            while i < len(body):
                if body[i] == "\\":
                    c = body[i + 1]
                    if c == "x":
                        value += chr(int(body[i + 2:i + 4], 16))
                        i += 4
                        continue
                    value += {"n": "\n", "r": "\r", "t": "\t"}.get(c, c)
                    i += 2
                else:
                    value += body[i]
                    i += 1
        out[key] = value
        pos = m.end()
        if pos < len(line):
            if line[pos] != " ":
                raise ValueError("no space after a pair at %d: %r" % (pos, line))
            pos += 1
    return out


class VersionAndListenTests(unittest.TestCase):
    def test_version_both_spellings(self):
        for flag in ("--version", "-V"):
            proc = run_fractald(flag)
            self.assertEqual(proc.returncode, 0, proc.stderr)
            self.assertRegex(proc.stdout, r"^fractald \d+\.\d+\.\d+\n$")

    def test_ports_outside_the_range_are_refused(self):
        for port in ("99999", "65536", "-1", "http", ""):
            proc = run_fractald("--listen", "127.0.0.1:" + port)
            self.assertEqual(proc.returncode, 2, (port, proc.stderr))
            self.assertIn("fractald: --listen: the port must be 0..65535 (0 picks a free one), got '%s'"
                          % port, proc.stderr)

    def test_address_without_port_is_refused(self):
        proc = run_fractald("--listen", "127.0.0.1")
        self.assertEqual(proc.returncode, 2)
        self.assertIn("--listen must be HOST:PORT, [IPV6]:PORT or unix:PATH, got '127.0.0.1'", proc.stderr)


class ConfigFileTests(unittest.TestCase):
    def setUp(self):
        self.paths = []

    def tearDown(self):
        for p in self.paths:
            os.unlink(p)

    def config(self, text):
        path = write_config(text)
        self.paths.append(path)
        return path

    def assert_width_limit(self, server, limit):
        with grpc.insecure_channel(server.target) as ch:
            stub = pb_grpc.RendererStub(ch)
            with self.assertRaises(grpc.RpcError) as cm:
                stub.Render(pb.RenderRequest(width=limit + 1, height=1), timeout=TIMEOUT)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertEqual(cm.exception.details(), "width must be 1..%d, got %d" % (limit, limit + 1))
            reply = stub.Render(pb.RenderRequest(width=limit, height=1, max_iter=16), timeout=TIMEOUT)
            self.assertEqual(reply.width, limit)

    def test_server_section_sets_limits_and_flags_win(self):
        path = self.config("; fractald test config\n[server]\nmax_side = 100\nmax_message_bytes = 2M\n"
                           "[devices]\ncpu_engine = on\n")
        server = h.Server("--config", path)
        try:
            self.assert_width_limit(server, 100)
        finally:
            self.assertEqual(server.stop(), 0)
        server = h.Server("--config", path, "--max-side", "150")
        try:
            self.assert_width_limit(server, 150)
        finally:
            self.assertEqual(server.stop(), 0)

    def test_size_suffixes_in_the_file_and_in_flags(self):
        # 1K = 1024 bytes: a request of 2 KiB is over it, whichever way the limit was set.
        big = pb.RenderRequest(width=8, height=8, coloring=pb.Coloring(palette="x" * 2000))
        for args in (("--config", self.config("[server]\nmax_request_bytes = 1K\n")),
                     ("--max-request-bytes", "1k")):
            server = h.Server(*args)
            try:
                with grpc.insecure_channel(server.target) as ch:
                    with self.assertRaises(grpc.RpcError) as cm:
                        pb_grpc.RendererStub(ch).Render(big, timeout=TIMEOUT)
                    self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED, args)
            finally:
                self.assertEqual(server.stop(), 0)

    def test_bad_values_name_file_line_and_key(self):
        cases = [
            ("[server]\nworkers = 0\n", ":2: workers must be an integer 1..1024, got '0'"),
            ("[devices]\ncpu_engine = on\n[server]\nlisten = 127.0.0.1:70000\n",
             ":4: listen: the port must be 0..65535 (0 picks a free one), got '70000'"),
            ("[server]\njob_disk_budget = 5X\n",
             ":2: job_disk_budget must be an integer 1..9223372036854775807 (K, M, G, T suffixes allowed), got '5X'"),
            ("[server]\nworkerz = 3\n",
             ":2: unknown key 'workerz' in [server] (keys are the flags of fractald --help, with '_' for '-')"),
        ]
        for text, fragment in cases:
            path = self.config(text)
            proc = run_fractald("--config", path)
            self.assertEqual(proc.returncode, 2, (text, proc.stderr))
            self.assertEqual(proc.stderr, "fractald: %s%s\n" % (path, fragment))

    def test_a_bad_flag_still_wins_over_a_good_file(self):
        path = self.config("[server]\nworkers = 3\n")
        proc = run_fractald("--config", path, "--workers", "0")
        self.assertEqual(proc.returncode, 2)
        self.assertIn("--workers must be an integer 1..1024, got '0'", proc.stderr)


class ReadmeExampleTests(unittest.TestCase):
    def test_the_readme_server_section_is_accepted(self):
        root = os.environ.get("FRACTAL_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
        with open(os.path.join(root, "README.md")) as f:
            blocks = re.findall(r"```ini\n(.*?)```", f.read(), re.S)
        server_blocks = [b for b in blocks if b.startswith("[server]")]
        self.assertEqual(len(server_blocks), 1)
        path = write_config(server_blocks[0])
        try:
            # --list-devices reads the whole configuration and exits without listening.
            proc = run_fractald("--config", path, "--list-devices", "--spool-dir", "")
        finally:
            os.unlink(path)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertRegex(proc.stdout, r"(?m)^cpu +used ")


class LogfmtTests(unittest.TestCase):
    def test_every_line_parses_and_names_status_and_format(self):
        server = h.Server("--log-level", "info")
        hostile = 'cpu"x y\\z\n='
        try:
            with grpc.insecure_channel(server.target) as ch:
                stub = pb_grpc.RendererStub(ch)
                stub.Render(pb.RenderRequest(width=16, height=8, max_iter=16), timeout=TIMEOUT)
                with self.assertRaises(grpc.RpcError):
                    stub.Render(pb.RenderRequest(width=16, height=8, device=hostile), timeout=TIMEOUT)
                stub.Render(pb.RenderRequest(width=16, height=8, max_iter=16, format=pb.FORMAT_RAW_F32),
                            timeout=TIMEOUT)
        finally:
            code, log = server.stop_and_read_log()
        self.assertEqual(code, 0, log)
        lines = log.splitlines()
        self.assertGreater(len(lines), 3)
        records = [parse_logfmt(line) for line in lines]
        for r in records:
            self.assertRegex(r["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            self.assertIn(r["level"], ("debug", "info", "warn", "error"))
            self.assertTrue("msg" in r or "event" in r, r)
        rpcs = [r for r in records if r.get("event") == "rpc"]
        self.assertEqual([r["status"] for r in rpcs], ["OK", "INVALID_ARGUMENT", "OK"])
        self.assertEqual([r.get("fmt") for r in rpcs], ["png", None, "raw_f32"])
        self.assertEqual(rpcs[0]["method"], "Render")
        self.assertEqual(rpcs[0]["size"], "16x8")
        self.assertIn(hostile, rpcs[1]["error"])
        self.assertEqual(rpcs[1]["level"], "warn")
        self.assertTrue(any(r.get("msg", "").startswith("fractald serving on") for r in records))


if __name__ == "__main__":
    unittest.main()
