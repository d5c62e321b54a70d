"""Exposing fractald: TLS (grpcio and the `fractal` CLI with --ca), a wrong CA and an expired
server certificate refused, mutual TLS, bearer tokens (none, wrong, right, SIGHUP reload, health
open by default or not with --auth-health), the refusal of a plaintext non-loopback listener, and
the per-client shares of the render queue and the in-flight cost. Certificates are made here with
openssl; all traffic stays on 127.0.0.1."""
import os
import signal
import subprocess
import tempfile
import time
import unittest

import fractald_harness as h  # noqa: E402  (sets sys.path for the generated stubs)
from fractal_health import health_pb2, health_pb2_grpc  # noqa: E402

import grpc  # noqa: E402
from fractal.v1 import fractal_pb2 as pb  # noqa: E402
from fractal.v1 import fractal_pb2_grpc as pb_grpc  # noqa: E402

TIMEOUT = 60
TINY = pb.RenderRequest(width=16, height=16, max_iter=16)
# Workload B's deep view, escape-dominated (cycle detection does not shorten it): about a second
# on two cores at this size, so that a handful of them hold the render queue while a test runs.
MEDIUM = pb.RenderRequest(julia=pb.Julia(c=pb.Complex(re=-0.8, im=0.156)), width=1024, height=768,
                          max_iter=3000, view=pb.View(center=pb.Complex(re=0.17304, im=0.23854), width=0.0005))
MEDIUM_COST = 1024 * 768 * 3000

GREEDY = "greedy0123456789abcdef"
POLITE = "polite0123456789abcdef"
OTHER = "other-0123456789abcdef"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d):
    """A CA, a server certificate for localhost/127.0.0.1, an expired one, one for the name
    localhost only, a client certificate (CN alice) and a second, unrelated CA."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    with open(os.path.join(d, "name-only.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost\n")
    for ca in ["ca", "other-ca"]:
        openssl("req", "-x509", *ec, "-keyout", ca + ".key", "-out", ca + ".pem", "-days", "2",
                "-subj", "/CN=fractald test " + ca, cwd=d)
    for name, cn in [("server", "localhost"), ("expired", "localhost"), ("name-only", "localhost"), ("client", "alice")]:
        openssl("req", *ec, "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn, cwd=d)
    # -days -1: notAfter a day before notBefore (now), so the certificate has expired.
    for name, days, ext in [("server", "2", ["-extfile", "server.ext"]), ("expired", "-1", ["-extfile", "server.ext"]),
                            ("name-only", "2", ["-extfile", "name-only.ext"]), ("client", "2", [])]:
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", name + ".pem", "-days", days, *ext, cwd=d)


def read(d, name):
    with open(os.path.join(d, name), "rb") as f:
        return f.read()


def wait_for(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


class Pki:
    tmp = None

    @classmethod
    def dir(cls):
        if cls.tmp is None:
            cls.tmp = tempfile.TemporaryDirectory(prefix="fractald-pki-")
            make_pki(cls.tmp.name)
        return cls.tmp.name


class SecurityTest(unittest.TestCase):
    def setUp(self):
        self.d = Pki.dir()
        self.servers = []
        self.channels = []

    def tearDown(self):
        for ch in self.channels:
            ch.close()
        for s in self.servers:
            if s.proc.poll() is None:
                self.assertEqual(s.stop(), 0)

    def p(self, name):
        return os.path.join(self.d, name)

    def server(self, *args):
        s = h.Server("--spool-dir", "", *args)
        self.servers.append(s)
        return s

    def tls_server(self, *args, cert="server"):
        return self.server("--tls-cert", self.p(cert + ".pem"), "--tls-key", self.p(cert + ".key"), *args)

    def channel(self, target, ca=None, client_cert=False):
        if ca is None:
            ch = grpc.insecure_channel(target)
        else:
            kw = {}
            if client_cert:
                kw = dict(private_key=read(self.d, "client.key"), certificate_chain=read(self.d, "client.pem"))
            ch = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=read(self.d, ca), **kw))
        self.channels.append(ch)
        return ch

    def fractal(self, *args, env=None):
        return subprocess.run([h.FRACTAL_CLI, *args], capture_output=True, timeout=120,
                              env=dict(os.environ, **(env or {})))

    def health(self, ch, token=None):
        md = [("authorization", "Bearer " + token)] if token else None
        return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10, metadata=md)

    def render(self, ch, req=TINY, token=None):
        md = [("authorization", "Bearer " + token)] if token else None
        return pb_grpc.RendererStub(ch).Render(req, timeout=TIMEOUT, metadata=md)

    def refused(self, call, code):
        with self.assertRaises(grpc.RpcError) as cm:
            call()
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        return cm.exception


class TlsTests(SecurityTest):
    def test_tls_serves_grpcio_and_the_cli(self):
        s = self.tls_server()
        ch = self.channel(s.target, ca="ca.pem")
        self.assertEqual(self.health(ch).status, health_pb2.HealthCheckResponse.SERVING)
        self.assertEqual((self.render(ch).width, self.render(ch).height), (16, 16))
        out = self.p("tls.png")
        proc = self.fractal("render", "--server", s.target, "--ca", self.p("ca.pem"), "--size", "32x24", "-o", out)
        self.assertEqual(proc.returncode, 0, proc.stderr.decode())
        self.assertEqual(h.png_info(read(self.d, "tls.png"))[:2], (32, 24))
        # Plaintext against a TLS listener gets nowhere.
        self.refused(lambda: self.health(self.channel(s.target)), grpc.StatusCode.UNAVAILABLE)

    def test_a_list_of_names_checks_each_certificate_against_the_name(self):
        # The CLI resolves a host:port list into addresses for one balanced channel (and the
        # fan-out connects to each address): TLS must still check the certificates against the
        # name, as these carry no IP address.
        a, b = self.tls_server(cert="name-only"), self.tls_server(cert="name-only")
        servers = "localhost:%d,localhost:%d" % (a.port, b.port)
        ca = self.p("ca.pem")
        proc = self.fractal("health", "--server", servers, "--ca", ca)
        self.assertEqual((proc.returncode, proc.stdout), (0, b"SERVING\n"), proc.stderr.decode())
        for mode in (["--no-fanout"], []):
            out = self.p("names%d.png" % len(mode))
            proc = self.fractal("render", "--server", servers, "--ca", ca, "--size", "64x48", *mode, "-o", out)
            self.assertEqual(proc.returncode, 0, proc.stderr.decode())
            self.assertEqual(h.png_info(read(self.d, os.path.basename(out)))[:2], (64, 48))
        # The same list by address gets nowhere: the certificates do not name 127.0.0.1.
        proc = self.fractal("health", "--server", "127.0.0.1:%d,127.0.0.1:%d" % (a.port, b.port), "--ca", ca)
        self.assertEqual(proc.returncode, 5, proc.stderr.decode())

    def test_a_client_trusting_another_ca_is_not_served(self):
        s = self.tls_server()
        self.refused(lambda: self.health(self.channel(s.target, ca="other-ca.pem")), grpc.StatusCode.UNAVAILABLE)
        proc = self.fractal("health", "--server", s.target, "--ca", self.p("other-ca.pem"))
        self.assertEqual(proc.returncode, 5, proc.stderr.decode())
        self.assertIn("cannot reach fractald at " + s.target, proc.stderr.decode())

    def test_an_expired_server_certificate_is_refused(self):
        s = self.tls_server(cert="expired")
        self.refused(lambda: self.health(self.channel(s.target, ca="ca.pem")), grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(self.fractal("health", "--server", s.target, "--ca", self.p("ca.pem")).returncode, 5)

    def test_mutual_tls_needs_a_client_certificate(self):
        s = self.tls_server("--tls-client-ca", self.p("ca.pem"), "--log-level", "info")
        self.refused(lambda: self.health(self.channel(s.target, ca="ca.pem")), grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(self.fractal("health", "--server", s.target, "--ca", self.p("ca.pem")).returncode, 5)
        ch = self.channel(s.target, ca="ca.pem", client_cert=True)
        self.assertEqual(self.render(ch).width, 16)
        proc = self.fractal("health", "--server", s.target, "--ca", self.p("ca.pem"), "--cert", self.p("client.pem"),
                            "--key", self.p("client.key"))
        self.assertEqual((proc.returncode, proc.stdout), (0, b"SERVING\n"), proc.stderr.decode())
        self.servers.remove(s)
        code, log = s.stop_and_read_log()
        self.assertEqual(code, 0, log)
        self.assertRegex(log, r"event=rpc method=Render peer=ipv4:127\.0\.0\.1:\d+ auth=mtls client=alice status=OK")

    def test_tls_settings_that_do_not_go_together_are_refused(self):
        for args, message in [
                (["--tls-cert", self.p("server.pem")], "fractald: --tls-cert and --tls-key go together: give both or neither\n"),
                (["--tls-client-ca", self.p("ca.pem")], "fractald: --tls-client-ca needs TLS: give --tls-cert and --tls-key too\n"),
                (["--auth-health"], "fractald: --auth-health needs --token-file\n")]:
            proc = subprocess.run([h.FRACTALD, "--spool-dir", "", *args], capture_output=True, text=True, timeout=30)
            self.assertEqual((proc.returncode, proc.stderr), (2, message))


class TokenTests(SecurityTest):
    def token_file(self, *lines):
        path = self.p("tokens-%d" % id(self))
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def test_tokens_none_wrong_and_right(self):
        path = self.token_file("# who may render", "ci:" + GREEDY, "", POLITE)
        s = self.server("--token-file", path, "--log-level", "info")
        ch = self.channel(s.target)
        e = self.refused(lambda: self.render(ch), grpc.StatusCode.UNAUTHENTICATED)
        self.assertEqual(e.details(), "missing bearer token: this server needs 'authorization: Bearer TOKEN' metadata")
        e = self.refused(lambda: self.render(ch, token=OTHER), grpc.StatusCode.UNAUTHENTICATED)
        self.assertEqual(e.details(), "invalid bearer token")
        e = self.refused(lambda: pb_grpc.RendererStub(ch).Render(TINY, timeout=10, metadata=[("authorization", "Basic x")]),
                         grpc.StatusCode.UNAUTHENTICATED)
        self.assertEqual(e.details(), "authorization metadata must be 'Bearer TOKEN'")
        # A prefix or an extension of a known token is not that token.
        self.refused(lambda: self.render(ch, token=GREEDY[:-1]), grpc.StatusCode.UNAUTHENTICATED)
        self.refused(lambda: self.render(ch, token=GREEDY + "x"), grpc.StatusCode.UNAUTHENTICATED)
        self.assertEqual(self.render(ch, token=GREEDY).width, 16)
        self.assertEqual(self.render(ch, token=POLITE).width, 16)
        # Health stays open to probes that cannot send a token.
        self.assertEqual(self.health(ch).status, health_pb2.HealthCheckResponse.SERVING)
        # The CLI: a token file (the server's format works), the environment, none.
        target = ["--server", s.target]
        self.assertEqual(self.fractal("stats", *target, "--token-file", path).returncode, 0)
        self.assertEqual(self.fractal("stats", *target, env={"FRACTAL_TOKEN": POLITE}).returncode, 0)
        proc = self.fractal("stats", *target, env={"FRACTAL_TOKEN": ""})
        self.assertEqual(proc.returncode, 8)
        self.assertEqual(proc.stderr.decode(),
                         "fractal: missing bearer token: this server needs 'authorization: Bearer TOKEN' metadata\n")
        self.servers.remove(s)
        code, log = s.stop_and_read_log()
        self.assertEqual(code, 0, log)
        self.assertRegex(log, r"method=Render peer=ipv4:127\.0\.0\.1:\d+ auth=token client=ci status=OK")
        self.assertRegex(log, r"method=Render peer=\S+ auth=token client=line4 status=OK")
        self.assertRegex(log, r"method=Health\.Check peer=\S+ auth=none status=OK")
        for secret in (GREEDY, POLITE, OTHER, GREEDY[:-1]):
            self.assertNotIn(secret, log)

    def test_auth_health_closes_health(self):
        s = self.server("--token-file", self.token_file(GREEDY), "--auth-health")
        ch = self.channel(s.target)
        self.refused(lambda: self.health(ch), grpc.StatusCode.UNAUTHENTICATED)
        self.assertEqual(self.health(ch, token=GREEDY).status, health_pb2.HealthCheckResponse.SERVING)

    def test_the_config_file_sets_them_too(self):
        ini = self.p("security-%d.ini" % id(self))
        with open(ini, "w") as f:
            f.write("[server]\ntoken_file = %s\nauth_health = true\nclient_queue_share = 0.25\n"
                    % self.token_file("ci:" + GREEDY))
        s = self.server("--config", ini)
        ch = self.channel(s.target)
        self.refused(lambda: self.health(ch), grpc.StatusCode.UNAUTHENTICATED)
        self.assertEqual(self.health(ch, token=GREEDY).status, health_pb2.HealthCheckResponse.SERVING)
        with open(ini, "w") as f:
            f.write("[server]\ninsecure = maybe\n")
        proc = subprocess.run([h.FRACTALD, "--config", ini], capture_output=True, text=True, timeout=30)
        self.assertEqual((proc.returncode, proc.stderr),
                         (2, "fractald: %s:2: insecure must be true or false, got 'maybe'\n" % ini))

    def test_sighup_reloads_the_tokens_and_a_bad_file_keeps_them(self):
        path = self.token_file("old:" + GREEDY)
        s = self.server("--token-file", path, "--log-level", "info")
        ch = self.channel(s.target)
        self.assertEqual(self.render(ch, token=GREEDY).width, 16)
        self.refused(lambda: self.render(ch, token=POLITE), grpc.StatusCode.UNAUTHENTICATED)
        with open(path, "w") as f:
            f.write("new:%s\n" % POLITE)
        s.proc.send_signal(signal.SIGHUP)

        def new_works():
            try:
                return self.render(ch, token=POLITE).width == 16
            except grpc.RpcError:
                return False
        self.assertTrue(wait_for(new_works), "the added token never worked")
        self.refused(lambda: self.render(ch, token=GREEDY), grpc.StatusCode.UNAUTHENTICATED)
        # A bad file (a token too short to be one) is refused whole: the tokens in force stay.
        with open(path, "w") as f:
            f.write("%s\nshort\n" % OTHER)
        s.proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        self.assertEqual(self.render(ch, token=POLITE).width, 16)
        self.refused(lambda: self.render(ch, token=OTHER), grpc.StatusCode.UNAUTHENTICATED)
        self.servers.remove(s)
        code, log = s.stop_and_read_log()
        self.assertEqual(code, 0, log)
        self.assertIn('msg="SIGHUP: reloaded 1 token from %s"' % path, log)
        self.assertIn("SIGHUP: tokens not reloaded, the old ones stay: %s:2: a token must be 16..512 characters" % path, log)
        self.assertNotIn(POLITE, log)

    def test_a_bad_token_file_stops_the_start(self):
        path = self.token_file("a:" + GREEDY, "a:" + POLITE)
        proc = subprocess.run([h.FRACTALD, "--spool-dir", "", "--listen", "127.0.0.1:0", "--token-file", path],
                              capture_output=True, text=True, timeout=60)
        self.assertEqual(proc.returncode, 1)
        self.assertEqual(proc.stderr.splitlines()[-1], "fractald: %s:2: the name 'a' is given twice" % path)


class ListenTests(SecurityTest):
    def test_a_plaintext_non_loopback_listener_is_refused(self):
        # Refused while parsing the options: nothing is bound, nothing is sent.
        proc = subprocess.run([h.FRACTALD, "--spool-dir", "", "--listen", "0.0.0.0:0"], capture_output=True,
                              text=True, timeout=30)
        self.assertEqual(proc.returncode, 2)
        self.assertEqual(proc.stderr,
                         "fractald: refusing to listen on 0.0.0.0:0 without TLS or tokens: anyone who can reach it "
                         "could use it (give --tls-cert/--tls-key or --token-file, or --insecure to serve it anyway)\n")
        self.assertEqual(proc.stdout, "")

    def test_other_loopback_addresses_and_insecure_are_allowed(self):
        s = self.server("--listen", "127.0.0.2:0")
        ch = self.channel("127.0.0.2:%d" % s.port)
        self.assertEqual(self.health(ch).status, health_pb2.HealthCheckResponse.SERVING)
        # Bound on every interface; the test talks to it on 127.0.0.1 only.
        s = self.server("--listen", "0.0.0.0:0", "--insecure")
        ch = self.channel("127.0.0.1:%d" % s.port)
        self.assertEqual(self.health(ch).status, health_pb2.HealthCheckResponse.SERVING)


class ClientShareTests(SecurityTest):
    def token_server(self, *args):
        path = self.p("share-tokens-%d" % id(self))
        with open(path, "w") as f:
            f.write("greedy:%s\npolite:%s\n" % (GREEDY, POLITE))
        s = self.server("--token-file", path, "--workers", "2", *args)
        return s, self.channel(s.target)

    def stats(self, ch):
        return pb_grpc.RendererStub(ch).GetStats(pb.GetStatsRequest(), timeout=10,
                                                 metadata=[("authorization", "Bearer " + POLITE)])

    def flood(self, ch, token, n, req=MEDIUM):
        stub = pb_grpc.RendererStub(ch)
        md = [("authorization", "Bearer " + token)]
        return [stub.Render.future(req, timeout=TIMEOUT, metadata=md) for _ in range(n)]

    def split(self, futures, message_start):
        """(served, refused): refused ones are RESOURCE_EXHAUSTED with the share message and a
        retry-after-ms trailer."""
        served, refused = 0, 0
        for f in futures:
            e = f.exception()
            if e is None:
                served += 1
                continue
            self.assertEqual(e.code(), grpc.StatusCode.RESOURCE_EXHAUSTED, e.details())
            self.assertTrue(e.details().startswith(message_start), e.details())
            hint = dict(e.trailing_metadata() or ()).get("retry-after-ms")
            self.assertIsNotNone(hint, "no retry-after-ms on a share refusal")
            self.assertGreater(int(hint), 0)
            refused += 1
        return served, refused

    def test_a_greedy_client_gets_its_queue_share_and_a_polite_one_is_served(self):
        # 2 workers + 6 queued = 8 places; half of them per client while both are active.
        s, ch = self.token_server("--queue", "6", "--client-queue-share", "0.5", "--client-cost-share", "1")
        polite = self.flood(ch, POLITE, 1)
        self.assertTrue(wait_for(lambda: self.stats(ch).running >= 1))
        greedy = self.flood(ch, GREEDY, 8)
        # While the greedy client holds its half, the polite one still gets in.
        self.assertEqual(self.render(ch, TINY, token=POLITE).width, 16)
        self.assertEqual(polite[0].result().width, 1024)
        self.assertEqual(self.split(greedy, "this client's share of the render queue is used up (4 of 8 places held, "
                                            "share 0.5 while other clients are active)"), (4, 4))
        # A worker counts its render done just after the reply went out.
        self.assertTrue(wait_for(lambda: (self.stats(ch).queue_depth, self.stats(ch).running) == (0, 0)))

    def test_a_greedy_client_gets_its_cost_share(self):
        # Room for four MEDIUM renders in flight in all, two per client while both are active.
        budget = 4.2 * MEDIUM_COST
        s, ch = self.token_server("--queue", "64", "--max-inflight-cost", "%.0f" % budget,
                                  "--client-queue-share", "1", "--client-cost-share", "0.5")
        polite = self.flood(ch, POLITE, 1)
        self.assertTrue(wait_for(lambda: self.stats(ch).running >= 1))
        greedy = self.flood(ch, GREEDY, 4)
        self.assertEqual(self.render(ch, TINY, token=POLITE).width, 16)
        self.assertEqual(polite[0].result().width, 1024)
        self.assertEqual(self.split(greedy, "this client's share of the in-flight cost is used up"), (2, 2))

    def test_a_client_alone_uses_the_whole_queue_until_another_waits(self):
        # 2 workers + 2 queued = 4 places.
        s, ch = self.token_server("--queue", "2", "--client-queue-share", "0.5", "--client-cost-share", "1")
        # Two that run, then two that wait: both workers are busy before the queue fills.
        greedy = self.flood(ch, GREEDY, 2)
        self.assertTrue(wait_for(lambda: self.stats(ch).running == 2))
        greedy += self.flood(ch, GREEDY, 2)
        self.assertTrue(wait_for(lambda: self.stats(ch).queue_depth == 2))
        # The polite client finds the queue full; from then on the greedy one is held to its share,
        # so the places its renders free go to the polite one, which backs off as told.
        e = self.refused(lambda: self.render(ch, TINY, token=POLITE), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertTrue(e.details().startswith("render queue is full"), e.details())
        more = self.flood(ch, GREEDY, 1)
        self.assertEqual(self.split(more, "this client's share of the render queue is used up"), (0, 1))
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                self.assertEqual(self.render(ch, TINY, token=POLITE).width, 16)
                break
            except grpc.RpcError as err:
                self.assertEqual(err.code(), grpc.StatusCode.RESOURCE_EXHAUSTED, err.details())
                self.assertLess(time.monotonic(), deadline, "the polite client was never served")
                time.sleep(int(dict(err.trailing_metadata())["retry-after-ms"]) / 1000.0)
        self.assertEqual(self.split(greedy, ""), (4, 0))
        # A worker counts its render done just after the reply went out.
        self.assertTrue(wait_for(lambda: (self.stats(ch).queue_depth, self.stats(ch).running) == (0, 0)))

    def test_cancelled_queued_calls_give_their_places_back(self):
        s, ch = self.token_server("--queue", "6", "--client-queue-share", "0.5", "--client-cost-share", "1")
        polite = self.flood(ch, POLITE, 1)
        self.assertTrue(wait_for(lambda: self.stats(ch).running >= 1))
        greedy = self.flood(ch, GREEDY, 4)
        self.assertTrue(wait_for(lambda: self.stats(ch).queue_depth + self.stats(ch).running == 5))
        for f in greedy:
            f.cancel()
        self.assertTrue(wait_for(lambda: self.stats(ch).queue_depth + self.stats(ch).running <= 1, timeout=30))
        # Had the cancelled calls kept their places, this client would be over its share now.
        again = self.flood(ch, GREEDY, 4)
        self.assertEqual(self.split(again, ""), (4, 0))
        polite[0].result()


if __name__ == "__main__":
    unittest.main()
