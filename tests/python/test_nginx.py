"""nginx in front of three fractald servers, with the shipped deploy/nginx configuration: the tile
mix through it spreads over every server, tokens pass through, jobs stay on their server, big
replies and streams arrive whole, the HTTP server block proxies tiles and REST jobs, the TLS lines
terminate TLS, and a server
drained with SIGTERM under load finishes its work while nginx moves the calls to the others. That
no call at all fails during the drain needs a fractald change (NginxDrainStrictTest)."""
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

import fractald_harness as h
from test_service import SLOW_JULIA, reassemble

import grpc
from fractal.v1 import fractal_pb2 as pb
from fractal.v1 import fractal_pb2_grpc as pbg
from fractal_health import health_pb2, health_pb2_grpc

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
DEPLOY = os.path.join(os.environ.get("FRACTAL_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", "..")),
                      "deploy", "nginx")
TOKEN = secrets.token_hex(24)
AUTH = [("authorization", "Bearer " + TOKEN)]
OPTIONS = [("grpc.max_receive_message_length", 256 << 20)]
# What libfractal does for idempotent calls, as a grpcio service config: UNAVAILABLE is tried again.
RETRY_OPTIONS = [("grpc.enable_retries", 1), ("grpc.service_config", json.dumps({"methodConfig": [{
    "name": [{"service": "fractal.v1.Renderer"}],
    "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.05s", "maxBackoff": "0.5s", "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"]}}]}))]
JULIA = dict(julia=pb.Julia(c=pb.Complex(re=-0.8, im=0.156)), width=1920, height=1080, view=pb.View(width=3.0))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tile_request(i):
    x, y = (i * 64) % (1920 - 256), (i * 192) % (1080 - 256)
    return pb.RenderRequest(max_iter=256, region=pb.Region(x=x, y=y, width=256, height=256), **JULIA)


class Nginx:
    """A foreground nginx on 127.0.0.1 (no privileges needed) running deploy/nginx/fractald.conf.

    The shipped files are used as they are, but for what a site fills in: the server addresses
    in the site files (fractald/*.conf), the listen ports, and the access logs' directory. Every
    substitution is counted, so a change to the shipped files that the test no longer exercises
    fails here instead of being skipped silently."""

    def __init__(self, grpc_targets, http_targets, tls=None):
        """`tls`: (certificate, key) files to serve gRPC with the TLS lines of listen-grpc.conf."""
        self.tls = tls
        self.proc, self.err = None, None
        # The ports are picked free and then bound by nginx: another process may take one in
        # between, so a failed bind tries again with new ones.
        for attempt in range(3):
            self.dir = tempfile.mkdtemp(prefix="fractald-nginx-")
            try:
                self._write(grpc_targets, http_targets)
                self._start()
                return
            except BaseException as e:
                self.stop()
                if attempt == 2 or "Address already in use" not in str(e):
                    raise

    def _sub(self, pattern, repl, text, count):
        out, n = re.subn(pattern, repl, text, flags=re.M)
        assert n == count, "deploy/nginx: %r matched %d times, expected %d" % (pattern, n, count)
        return out

    def _write(self, grpc_targets, http_targets):
        d = self.dir
        os.makedirs(os.path.join(d, "fractald"))
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(d, "tmp", sub))
        with open(os.path.join(DEPLOY, "fractald.conf")) as f:
            conf = f.read()
        conf = self._sub(r"/var/log/nginx/", os.path.join(d, "logs") + "/", conf, 2)
        os.makedirs(os.path.join(d, "logs"))
        with open(os.path.join(d, "fractald.conf"), "w") as f:
            f.write(conf)

        def site(name, fn):
            with open(os.path.join(DEPLOY, "fractald", name)) as f:
                text = fn(f.read())
            with open(os.path.join(d, "fractald", name), "w") as f:
                f.write(text)

        def servers(targets):
            it = iter(targets)
            return lambda t: self._sub(r"^server \S+", lambda m: "server " + next(it), t, len(targets))

        assert len(grpc_targets) == len(http_targets) == 3, "the shipped site files list three servers"
        site("grpc-servers.conf", servers(grpc_targets))
        site("http-servers.conf", servers(http_targets))
        self.grpc_port, self.http_port = free_port(), free_port()
        # The IPv6 lines go: a test host may have no ::1.
        site("listen-grpc.conf", self._tls_listen if self.tls else lambda t: self._sub(
            r"^listen \[::\]:50051 http2;\n", "", self._sub(
                r"^listen 50051 http2;", "listen 127.0.0.1:%d http2;" % self.grpc_port, t, 1), 1))
        site("listen-http.conf", lambda t: self._sub(r"^listen \[::\]:8080;\n", "", self._sub(
            r"^listen 8080;", "listen 127.0.0.1:%d;" % self.http_port, t, 1), 1))
        tmp = os.path.join(d, "tmp")
        with open(os.path.join(d, "nginx.conf"), "w") as f:
            f.write("""# The frame Debian's /etc/nginx/nginx.conf gives conf.d/*.conf, with every path in %(d)s.
%(user)s
worker_processes 1;
pid %(d)s/nginx.pid;
events { worker_connections 1024; }
http {
    client_body_temp_path %(tmp)s/body;
    proxy_temp_path %(tmp)s/proxy;
    fastcgi_temp_path %(tmp)s/fastcgi;
    uwsgi_temp_path %(tmp)s/uwsgi;
    scgi_temp_path %(tmp)s/scgi;
    access_log off;
    include %(d)s/fractald.conf;
}
""" % {"d": d, "tmp": tmp,
       # As root, nginx's workers would switch to nobody, who cannot write into this directory.
       "user": "user root;" if os.geteuid() == 0 else ""})

    def _tls_listen(self, text):
        """listen-grpc.conf as its comment says to make it for TLS: the plaintext lines out, the
        TLS ones in (but the client-certificate ones)."""
        text = self._sub(r"^listen .*\n", "", text, 2)
        text = self._sub(r"^#listen \[::\]:443 ssl http2;\n", "", text, 1)
        text = self._sub(r"^#listen 443 ssl http2;", "listen 127.0.0.1:%d ssl http2;" % self.grpc_port, text, 1)
        text = self._sub(r"^#ssl_certificate +\S+;", "ssl_certificate %s;" % self.tls[0], text, 1)
        text = self._sub(r"^#ssl_certificate_key +\S+;", "ssl_certificate_key %s;" % self.tls[1], text, 1)
        return self._sub(r"^#(ssl_protocols|ssl_session_cache) ", r"\1 ", text, 2)

    def _start(self):
        cmd = [NGINX, "-p", self.dir + "/", "-c", os.path.join(self.dir, "nginx.conf"),
               "-g", "daemon off; error_log stderr notice;"]
        self.err = open(os.path.join(self.dir, "stderr"), "w+")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.err)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("nginx exited with %d: %s" % (self.proc.returncode, self.stderr()))
            try:
                socket.create_connection(("127.0.0.1", self.grpc_port), timeout=1).close()
                socket.create_connection(("127.0.0.1", self.http_port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not listen within 10 s: " + self.stderr())

    def stderr(self):
        self.err.flush()
        with open(self.err.name) as f:
            return f.read()

    def log(self, name):
        """The access log lines of the server block `name` ("grpc" or "http")."""
        path = os.path.join(self.dir, "logs", "fractald-%s.log" % name)
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return f.read().splitlines()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: workers finish their requests
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.err:
            self.err.close()
            self.err = None
        shutil.rmtree(self.dir, ignore_errors=True)


def start_servers(tmp, *args):
    """Three fractald servers with gRPC and HTTP on ephemeral ports and the test's token."""
    tokens = os.path.join(tmp, "tokens")
    if not os.path.exists(tokens):
        with open(tokens, "w") as f:
            f.write("nginx-test:%s\n" % TOKEN)
    servers = []
    try:
        for _ in range(3):
            # The CPU engine only: these tests are about the balancer, not the devices.
            s = h.Server("--http-listen", "127.0.0.1:0", "--token-file", tokens, "--devices", "opencl = off", *args)
            servers.append(s)
            m = re.match(r"fractald http listening on (\S+):(\d+)", s.proc.stdout.readline())
            assert m, "no HTTP ready line"
            s.http_target = "127.0.0.1:%s" % m.group(2)
    except BaseException:
        for s in servers:
            s.stop()
        raise
    return servers


def upstreams(lines):
    """{upstream address: calls} from access log lines; a retried call counts on each server."""
    count = {}
    for line in lines:
        m = re.search(r" upstream=(.*) upstream_status=", line)
        for addr in (m.group(1).replace(" : ", ", ").split(", ") if m else []):
            count[addr] = count.get(addr, 0) + 1
    return count


@unittest.skipUnless(NGINX, "skipped 'nginx is not installed (scripts/install-deps.sh installs it)'")
class NginxCase(unittest.TestCase):
    server_args = ()

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fractald-nginx-test-")
        cls.servers, cls.nginx, cls.channel = [], None, None
        try:
            cls.servers = start_servers(cls.tmp, *cls.server_args)
            cls.nginx = Nginx([s.target for s in cls.servers], [s.http_target for s in cls.servers])
        except BaseException:
            cls.tearDownClass()
            raise
        cls.channel = grpc.insecure_channel("127.0.0.1:%d" % cls.nginx.grpc_port, options=OPTIONS)
        cls.stub = pbg.RendererStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        if cls.channel:
            cls.channel.close()
        if cls.nginx:
            cls.nginx.stop()
        for s in cls.servers:
            s.stop()  # also for the drained one: it closes the pipes and removes the spool
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def nginx_errors(self):
        return "\n".join(l for l in self.nginx.stderr().splitlines() if "[notice]" not in l)[-4000:]

    def direct(self, server):
        ch = grpc.insecure_channel(server.target, options=OPTIONS)
        self.addCleanup(ch.close)
        return pbg.RendererStub(ch)


class NginxTest(NginxCase):
    def test_tile_mix_spreads_over_every_server(self):
        reference = self.direct(self.servers[0])
        want = {i: reference.Render(tile_request(i), metadata=AUTH, timeout=60).data for i in range(4)}
        before = upstreams(self.nginx.log("grpc"))
        errors = []

        def client(k):
            try:
                for i in range(k, 48, 6):
                    if i % 6 == 5:
                        data, _, _, done = reassemble(self.stub.RenderStream(
                            pb.RenderRequest(width=640, height=480), metadata=AUTH, timeout=60))
                        assert h.png_info(data)[:2] == (640, 480) and done.samples == 640 * 480
                    else:
                        r = self.stub.Render(tile_request(i % 4), metadata=AUTH, timeout=60)
                        assert r.data == want[i % 4], "tile %d differs from the direct render" % (i % 4)
            except Exception as e:  # noqa: BLE001 - reported below with the others
                errors.append(repr(e))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        # nginx writes a call's line as it finishes the call, a moment after the client has it.
        deadline = time.monotonic() + 5
        while True:
            after = upstreams(self.nginx.log("grpc"))
            served = {s.target: after.get(s.target, 0) - before.get(s.target, 0) for s in self.servers}
            if sum(served.values()) >= 48 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(sum(served.values()), 48, after)
        for target, n in served.items():
            self.assertGreaterEqual(n, 8, "round robin over 3 servers gave %s only %d of 48 calls: %s"
                                    % (target, n, served))

    def test_tokens_pass_through(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.Render(tile_request(0), timeout=30)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        self.assertIn("missing bearer token", cm.exception.details())
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.Render(tile_request(0), metadata=[("authorization", "Bearer " + "x" * 48)], timeout=30)
        self.assertEqual((cm.exception.code(), cm.exception.details()),
                         (grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token"))
        # Health stays open for probes, through nginx too.
        status = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status
        self.assertEqual(status, health_pb2.HealthCheckResponse.SERVING)

    def test_jobs_stay_on_their_server(self):
        # Round robin would send 2 in 3 GetJobs to a server that never heard of the job.
        ids = [self.stub.SubmitJob(pb.RenderRequest(width=96, height=64, max_iter=100 + i), metadata=AUTH,
                                   timeout=30).id for i in range(4)]
        deadline = time.monotonic() + 60
        for job_id in ids:
            while True:
                state = self.stub.GetJob(pb.JobRef(id=job_id), metadata=AUTH, timeout=30).state
                if state == pb.JOB_STATE_SUCCEEDED:
                    break
                self.assertIn(state, (pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING), pb.JobState.Name(state))
                self.assertLess(time.monotonic(), deadline, "job never finished")
                time.sleep(0.05)
            data, _, _, _ = reassemble(self.stub.FetchJobResult(pb.JobRef(id=job_id), metadata=AUTH, timeout=30))
            self.assertEqual(h.png_info(data)[:2], (96, 64))
        listed = self.stub.ListJobs(pb.ListJobsRequest(), metadata=AUTH, timeout=30)
        self.assertTrue(set(ids) <= {j.id for j in listed.jobs}, "ListJobs went to another server")

    def test_big_replies_arrive_whole(self):
        req = pb.RenderRequest(width=2048, height=1536, max_iter=64)
        want = self.direct(self.servers[1]).Render(req, metadata=AUTH, timeout=60).data
        self.assertGreater(len(want), 1 << 20, "not a big reply")
        self.assertEqual(self.stub.Render(req, metadata=AUTH, timeout=60).data, want)
        data, chunks, _, _ = reassemble(self.stub.RenderStream(req, metadata=AUTH, timeout=60))
        self.assertGreater(len(chunks), 1)
        self.assertEqual(h.png_pixels(data)[::97], h.png_pixels(want)[::97])

    def test_request_size_limit(self):
        # A request just under fractald's 64 KiB limit reaches fractald, which gives its own
        # answer; one far over it is cut off by client_max_body_size without reaching a server.
        near = pb.RenderRequest(view=pb.View(center_re_text="0." + "1" * 60000))
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.Render(near, metadata=AUTH, timeout=30)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT, cm.exception.details())
        far = pb.RenderRequest(view=pb.View(center_re_text="0." + "1" * 200000))
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.Render(far, metadata=AUTH, timeout=30)
        self.assertNotIn(cm.exception.code(), (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT))

    def http(self, path, method="GET", body=None, token=True):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.nginx.http_port, path), data=body, method=method)
        if token:
            req.add_header("Authorization", "Bearer " + TOKEN)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def test_http_block_proxies_tiles_and_jobs(self):
        path = "/v1/tiles/2/1/1.png?fractal=mandelbrot&center_re=-0.5&max_iter=200"
        status, headers, body = self.http(path)
        self.assertEqual(status, 200, body[:200])
        self.assertEqual(headers["Content-Type"], "image/png")
        with urllib.request.urlopen(urllib.request.Request(
                "http://%s%s" % (self.servers[2].http_target, path),
                headers={"Authorization": "Bearer " + TOKEN}), timeout=30) as r:
            self.assertEqual(body, r.read())
        self.assertEqual(self.http(path, token=False)[0], 401)
        self.assertEqual(self.http("/readyz", token=False)[0], 200)
        # A REST job's reads find it, whichever server took it.
        status, headers, body = self.http("/v1/jobs", "POST", b'{"width": 64, "height": 48}')
        self.assertEqual(status, 201, body)
        job = json.loads(body)["id"]
        for _ in range(5):
            status, _, body = self.http("/v1/jobs/" + job)
            self.assertEqual(status, 200, body)


class NginxDrainCase(NginxCase):
    # --drain-notice-ms 0 (the default): the listener closes at SIGTERM, the work in flight goes
    # on. A grace period well beyond the render in flight, even on a loaded machine.
    server_args = ("--grace-ms", "30000")

    def drain_under_load(self):
        """Runs the tile mix through nginx from 6 gRPC clients and 2 HTTP ones, SIGTERMs one
        server while a render of about a second, sent to it directly, is in flight there, and
        goes on for a second after it exited. Three of the gRPC clients retry UNAVAILABLE (as
        libfractal does, and any gRPC client can by its service config), three do not. Checks
        that the drained server finishes that render and exits 0, and that every call started
        after it exited succeeds and went elsewhere (nginx fails over refused connections).
        Returns the calls that failed, as (seconds after SIGTERM, outcome, whether the client
        retries)."""
        stubs = []
        for options in (OPTIONS, OPTIONS + RETRY_OPTIONS):
            channel = grpc.insecure_channel("127.0.0.1:%d" % self.nginx.grpc_port, options=options)
            self.addCleanup(channel.close)
            stubs.append(pbg.RendererStub(channel))
        victim = self.servers[0]
        stop = threading.Event()
        results, lock = [], threading.Lock()

        def call(i, stub):
            if i % 5 == 4:
                data, _, _, _ = reassemble(stub.RenderStream(pb.RenderRequest(width=800, height=600),
                                                             metadata=AUTH, timeout=60))
                assert h.png_info(data)[:2] == (800, 600)
            else:
                r = stub.Render(tile_request(i), metadata=AUTH, timeout=60)
                assert (r.width, r.height) == (256, 256)

        def client(k):
            i = k
            retries = k % 2 == 1
            while not stop.is_set():
                t = time.monotonic()
                try:
                    call(i, stubs[retries])
                    outcome = "OK"
                except grpc.RpcError as e:
                    outcome = "%s: %s" % (e.code().name, e.details())
                except Exception as e:  # noqa: BLE001 - a wrong answer counts as a failed call
                    outcome = repr(e)
                with lock:
                    results.append((t, outcome, retries))
                i += 6

        def http_client(k):
            # Tiles over HTTP through the other server block: a draining server answers 503,
            # which nginx retries on the next one.
            i = k
            while not stop.is_set():
                t = time.monotonic()
                url = "http://127.0.0.1:%d/v1/tiles/3/%d/%d.png?max_iter=%d" % (
                    self.nginx.http_port, i % 8, (i // 8) % 8, 100 + i % 97)
                req = urllib.request.Request(url, headers={"Authorization": "Bearer " + TOKEN})
                try:
                    with urllib.request.urlopen(req, timeout=60) as r:
                        outcome = "OK" if r.status == 200 and r.read()[:4] == b"\x89PNG" else "HTTP %d" % r.status
                except urllib.error.HTTPError as e:
                    outcome = "HTTP %d: %s" % (e.code, e.read()[:200])
                except Exception as e:  # noqa: BLE001
                    outcome = "HTTP " + repr(e)
                with lock:
                    results.append((t, outcome, True))
                i += 2

        # About a second here; a sanitizer build computes some 20x slower, so its render is a
        # sixteenth of the work (still in flight at SIGTERM, done well inside the grace period).
        sanitized = bool(os.environ.get("FRACTALD_SANITIZED"))
        slow = self.direct(victim).Render.future(
            pb.RenderRequest(julia=SLOW_JULIA, view=pb.View(width=0.5), width=1024, height=1024,
                             supersample=1 if sanitized else 4, max_iter=750 if sanitized else 3000),
            metadata=AUTH, timeout=60)
        threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
        threads += [threading.Thread(target=http_client, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)
            t_term = time.monotonic()
            victim.proc.send_signal(signal.SIGTERM)
            code = victim.proc.wait(60)
            t_exit = time.monotonic()
            # What it logged, but the refusals: why it failed, if it did.
            log = "\n".join(l for l in victim.proc.stderr.read().splitlines() if "shutting down" not in l)[-4000:]
            time.sleep(1.0)
        finally:
            stop.set()
            for t in threads:
                t.join()
        self.assertEqual(code, 0, "the drained server's exit status; its log:\n" + log)
        try:
            self.assertEqual(slow.result().width, 1024)
        except grpc.RpcError as e:
            self.fail("the render in flight at SIGTERM failed: %s; %.1f s from SIGTERM to exit; the server's log:\n%s"
                      % (e, t_exit - t_term, log))
        self.assertGreater(sum(1 for t, _, _ in results if t_term <= t <= t_exit), 5,
                           "too few calls while the server drained to tell anything")
        self.assertGreater(sum(1 for t, _, _ in results if t > t_exit), 5, "too few calls after the drain")
        self.assertEqual([o for t, o, _ in results if t > t_exit and o != "OK"], [],
                         "calls after the drain; nginx's errors:\n" + self.nginx_errors())
        calls = upstreams(self.nginx.log("grpc")[-12:])
        self.assertNotIn(victim.target, calls, "nginx still sends calls to the stopped server")
        return [(round(t - t_term, 3), o, r) for t, o, r in results if o != "OK"]


class NginxDrainTest(NginxDrainCase):
    def test_sigterm_drain_under_load_fails_no_call(self):
        """No failed call. fractald closes its listener at SIGTERM (after --drain-notice-ms, 0
        here) while the calls in flight finish: new connections are refused and open ones get a
        GOAWAY, and nginx moves the calls it could not send to another server. What nginx cannot
        move is a call it had already sent on a kept-alive connection that the server closed at
        that moment (gRPC 1.51 closes an idle connection right after its GOAWAY): nginx reads a
        reset and answers 502, as UNAVAILABLE, which the clients that retry UNAVAILABLE send
        again. (Had fractald kept listening through the drain and answered UNAVAILABLE, a gRPC
        status inside an HTTP 200 reply, nginx would have passed every such answer on: it
        neither reads grpc-status nor retries a call it already sent.)"""
        failed = self.drain_under_load()
        self.assertEqual([f for f in failed if f[2]], [], "calls of retrying clients (and HTTP) that failed during "
                         "the drain (seconds after SIGTERM, outcome); nginx's errors:\n" + self.nginx_errors())
        # The clients without retries lose at most the calls that raced the close.
        raced = [f for f in failed if f[1].startswith("UNAVAILABLE: ") and -0.1 <= f[0] <= 1.0]
        self.assertEqual(failed, raced, "failures other than the race with the close; nginx's errors:\n"
                         + self.nginx_errors())
        self.assertLessEqual(len(raced), 3, "calls without retries lost at the close")


@unittest.skipUnless(NGINX and shutil.which("openssl"), "skipped 'nginx or openssl is not installed'")
class NginxTlsTest(unittest.TestCase):
    def test_tls_termination(self):
        """The TLS lines of listen-grpc.conf: clients verify nginx's certificate, nginx talks
        plaintext to fractald."""
        tmp = tempfile.mkdtemp(prefix="fractald-nginx-tls-")
        self.addCleanup(shutil.rmtree, tmp, True)
        cert, key = os.path.join(tmp, "server.pem"), os.path.join(tmp, "server.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", key, "-out", cert], check=True, capture_output=True)
        # One server, named three times: the site files list three.
        s = h.Server("--http-listen", "127.0.0.1:0", "--devices", "opencl = off")
        self.addCleanup(s.stop)
        http = re.match(r"fractald http listening on (\S+):(\d+)", s.proc.stdout.readline())
        nginx = Nginx([s.target] * 3, ["127.0.0.1:%s" % http.group(2)] * 3, tls=(cert, key))
        self.addCleanup(nginx.stop)
        with open(cert, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        with grpc.secure_channel("127.0.0.1:%d" % nginx.grpc_port, creds, options=OPTIONS) as ch:
            r = pbg.RendererStub(ch).Render(tile_request(1), timeout=30)
            self.assertEqual((r.width, r.height), (256, 256))
        # A client that does not trust the certificate gets nowhere.
        with grpc.secure_channel("127.0.0.1:%d" % nginx.grpc_port, grpc.ssl_channel_credentials()) as ch:
            with self.assertRaises(grpc.RpcError) as cm:
                pbg.RendererStub(ch).Render(tile_request(1), timeout=10)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
