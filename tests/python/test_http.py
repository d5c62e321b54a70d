"""fractald on the web (--http-listen), from Python's stdlib HTTP client against a real server:
every endpoint, the error table (exact code and message, and the next request still served),
ETag / 304, the shared image cache, cancellation when the client disconnects, admission (429 and
Retry-After), the REST job flow across a kill -9, tokens, the drain, and /metrics through
promtool while the server is under load."""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import fractald_harness as h

import grpc
from fractal.v1 import fractal_pb2 as pb
from fractal.v1 import fractal_pb2_grpc as pbg

OPTIONS = [("grpc.max_receive_message_length", 64 << 20)]
# Workload B's deep view: seconds of work on two cores at this size, and no interior shortcut.
DEEP_JULIA = {"julia": {"c": {"re": -0.8, "im": 0.156}}, "view": {"center": {"re": 0.17304, "im": 0.23854},
              "width": 0.0005}, "maxIter": 10000, "width": 3000, "height": 3000}
# Set by tests/CMakeLists.txt in sanitizer builds, which compute several times slower.
SANITIZED = bool(os.environ.get("FRACTALD_SANITIZED"))
# A CPU-only server starts in a fraction of a second (no OpenCL discovery or calibration).
FAST = ("--devices", "opencl = off")


class HttpServer(h.Server):
    """A fractald with --http-listen 127.0.0.1:0; `http_port` is read from its second ready line."""

    def __init__(self, *args, **kw):
        super().__init__("--http-listen", "127.0.0.1:0", *args, **kw)
        # Both ready lines leave in one flush, so the second is already read (and buffered by
        # the first readline); at EOF, a dead server, readline returns "".
        line = self.proc.stdout.readline()
        m = re.match(r"fractald http listening on 127\.0\.0\.1:(\d+)$", line.strip())
        if not m:
            self.stop()
            raise RuntimeError("no HTTP ready line: %r" % line)
        self.http_port = int(m.group(1))

    def request(self, method, path, body=None, headers=None, timeout=60):
        """(status, headers as a dict with lower-case names, body bytes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def get_json(self, path, expect=200, **kw):
        status, hdrs, body = self.request("GET", path, **kw)
        if status != expect:
            raise AssertionError("GET %s: %d %r" % (path, status, body[:300]))
        return json.loads(body)


def tile_path(z, x, y, **q):
    query = "&".join("%s=%s" % kv for kv in q.items())
    return "/v1/tiles/%d/%d/%d.png%s" % (z, x, y, "?" + query if query else "")


def grpc_error(stub, req):
    """The (code name, message) a gRPC Render of req gets."""
    try:
        stub.Render(req, timeout=30)
    except grpc.RpcError as e:
        return e.code().name, e.details()
    raise AssertionError("Render succeeded")


class HttpTests(unittest.TestCase):
    """One server for the endpoints that leave no lasting state behind."""

    @classmethod
    def setUpClass(cls):
        cls.server = HttpServer(*FAST)
        cls.channel = grpc.insecure_channel(cls.server.target, options=OPTIONS)
        cls.stub = pbg.RendererStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        assert cls.server.stop() == 0

    def assertError(self, resp, status, code, message=None):
        st, hdrs, body = resp
        self.assertEqual(st, status, body[:300])
        self.assertEqual(hdrs.get("content-type"), "application/json")
        err = json.loads(body)
        self.assertEqual(err["code"], code)
        if message is not None:
            self.assertEqual(err["message"], message)
        return err["message"]

    def assertServes(self):
        """The server still answers a good request."""
        st, _, body = self.server.request("GET", tile_path(0, 0, 0, max_iter=20))
        self.assertEqual(st, 200)
        self.assertEqual(body[:8], b"\x89PNG\r\n\x1a\n")

    # ---- health and the viewer ----

    def test_health_ready_and_viewer_files(self):
        self.assertEqual(self.server.get_json("/healthz"), {"status": "SERVING"})
        self.assertEqual(self.server.get_json("/readyz"), {"status": "SERVING"})
        st, hdrs, body = self.server.request("GET", "/")
        self.assertEqual(st, 200)
        self.assertTrue(hdrs["content-type"].startswith("text/html"))
        self.assertIn(b"leaflet/leaflet.js", body)
        self.assertEqual(hdrs["cache-control"], "no-cache")
        self.assertEqual(self.server.request("GET", "/", headers={"If-None-Match": hdrs["etag"]})[0], 304)
        for path, kind in (("/viewer.js", "text/javascript"), ("/leaflet/leaflet.js", "text/javascript"),
                           ("/leaflet/leaflet.css", "text/css")):
            st, hdrs, body = self.server.request("GET", path)
            self.assertEqual(st, 200, path)
            self.assertTrue(hdrs["content-type"].startswith(kind), path)
            self.assertGreater(len(body), 100, path)
        # Leaflet itself, from Debian's libjs-leaflet: no CDN.
        self.assertIn(b"Leaflet", self.server.request("GET", "/leaflet/leaflet.js")[2][:2000])
        self.assertError(self.server.request("GET", "/../etc/passwd"), 404, "NOT_FOUND")
        self.assertError(self.server.request("POST", "/"), 405, "UNIMPLEMENTED")

    # ---- tiles ----

    def test_tile_is_the_quadrant_of_the_base_view(self):
        """Tile (1, 0) of zoom 1 is exactly the top-right quarter of the base view rendered at
        512x512: the XYZ scheme over the base view, pixel for pixel."""
        st, hdrs, tile = self.server.request("GET", tile_path(1, 1, 0, max_iter=200, palette="viridis"))
        self.assertEqual(st, 200, tile[:300])
        self.assertEqual(hdrs["content-type"], "image/png")
        self.assertEqual(hdrs["cache-control"], "public, max-age=86400, immutable")
        self.assertRegex(hdrs["etag"], r'^"[0-9a-f]{32}"$')
        w, hgt, depth, ctype, texts, _ = h.png_info(tile)
        self.assertEqual((w, hgt, depth, ctype), (256, 256, 8, 2))
        resolved = json.loads(texts["fractal.v1.RenderRequest"])
        self.assertEqual(resolved["view"], {"center": {"re": 1, "im": 1}, "width": 2})
        full = self.server.request("POST", "/v1/render", {
            "julia": {"c": {"re": -0.8, "im": 0.156}}, "view": {"width": 4}, "width": 512, "height": 512,
            "maxIter": 200, "coloring": {"palette": "viridis"},
            "region": {"x": 256, "y": 0, "width": 256, "height": 256}})
        self.assertEqual(full[0], 200, full[2][:300])
        self.assertEqual(h.png_pixels(tile), h.png_pixels(full[2]))
        rows = h.png_pixels(tile)
        self.assertGreater(len(set(rows[128][i:i + 3] for i in range(0, 768, 3))), 10, "a flat tile")

    def test_tile_errors_are_the_grpc_messages(self):
        # Each bad value gets gRPC's own code and message, because the tile goes through
        # request_to_spec; the server serves the next request.
        for query, req, status in (
                ({"max_iter": 0}, pb.RenderRequest(max_iter=0), 400),
                ({"palette": "nope"}, pb.RenderRequest(coloring=pb.Coloring(palette="nope")), 400),
                ({"max_iter": 20000000}, pb.RenderRequest(max_iter=20000000), 400),
                ({"supersample": 9}, pb.RenderRequest(supersample=9), 400),
                ({"device": "tpu"}, pb.RenderRequest(device="tpu"), 400),
                ({"escape_radius": "nan"}, pb.RenderRequest(escape_radius=float("nan")), 400)):
            code, message = grpc_error(self.stub, req)
            self.assertEqual(code, "INVALID_ARGUMENT")
            self.assertError(self.server.request("GET", tile_path(0, 0, 0, **query)), status, code, message)
            self.assertServes()
        # Too deep for fp64: gRPC's FAILED_PRECONDITION, naming the pixel spacing.
        msg = self.assertError(self.server.request("GET", tile_path(46, 0, 0, precision="fp64")), 412,
                               "FAILED_PRECONDITION")
        self.assertIn("spacing", msg)
        # What only the URL can get wrong, named by its parameter.
        self.assertError(self.server.request("GET", tile_path(0, 0, 0, c_re="abc")), 400, "INVALID_ARGUMENT",
                         "c_re must be a number, got 'abc'")
        self.assertError(self.server.request("GET", tile_path(0, 0, 0, fractal="newton")), 400,
                         "INVALID_ARGUMENT", "fractal must be julia or mandelbrot, got 'newton'")
        self.assertError(self.server.request("GET", tile_path(0, 0, 0, zoom=3)), 400, "INVALID_ARGUMENT")
        self.assertError(self.server.request("GET", "/v1/tiles/99/0/0.png"), 400, "INVALID_ARGUMENT",
                         "zoom must be an integer 0..48, got '99'")
        self.assertError(self.server.request("GET", "/v1/tiles/1/10/0.png"), 404, "NOT_FOUND",
                         "tile x and y must be integers -8..9 at zoom 1, got '10' and '0'")
        self.assertError(self.server.request("GET", "/v1/tiles/1/a/0.png"), 404, "NOT_FOUND")
        self.assertError(self.server.request("GET", "/v1/tiles/0/0/0.jpg"), 404, "NOT_FOUND")
        self.assertError(self.server.request("GET", tile_path(0, 0, 0, width=0)), 400, "INVALID_ARGUMENT",
                         grpc_error(self.stub, pb.RenderRequest(view=pb.View(width=0)))[1])
        self.assertError(self.server.request("DELETE", tile_path(0, 0, 0)), 405, "UNIMPLEMENTED")
        self.assertServes()

    def test_etag_304_and_shared_cache(self):
        path = tile_path(2, 1, 2, fractal="mandelbrot", center_re=-0.5, max_iter=300)
        before = self.server.get_json("/v1/stats")
        st, hdrs, first = self.server.request("GET", path)
        self.assertEqual(st, 200)
        st2, hdrs2, second = self.server.request("GET", path)
        self.assertEqual((st2, second, hdrs2["etag"]), (200, first, hdrs["etag"]))
        # The client's copy is current: 304, no body, no render.
        st3, hdrs3, body3 = self.server.request("GET", path, headers={"If-None-Match": hdrs["etag"]})
        self.assertEqual((st3, body3, hdrs3["etag"]), (304, b"", hdrs["etag"]))
        self.assertEqual(self.server.request("GET", path, headers={"If-None-Match": '"0123"'})[0], 200)
        after = self.server.get_json("/v1/stats")
        hits = int(after.get("imageCacheHits", 0)) - int(before.get("imageCacheHits", 0))
        self.assertEqual(hits, 2, after)
        self.assertGreater(int(after["imageCacheBytes"]), len(first))
        # gRPC Render of the same resolved request finds the HTTP tile in the cache, and GetStats
        # counts it.
        resolved = json.loads(h.png_info(first)[4]["fractal.v1.RenderRequest"])
        req = pb.RenderRequest(mandelbrot=pb.Mandelbrot(), width=256, height=256, max_iter=300,
                               view=pb.View(center=pb.Complex(re=resolved["view"]["center"]["re"],
                                                              im=resolved["view"]["center"]["im"]),
                                            width=resolved["view"]["width"]))
        g0 = self.stub.GetStats(pb.GetStatsRequest(), timeout=10).image_cache_hits
        reply = self.stub.Render(req, timeout=30)
        self.assertEqual(reply.data, first)
        self.assertEqual(self.stub.GetStats(pb.GetStatsRequest(), timeout=10).image_cache_hits, g0 + 1)
        # Another view is another tag.
        other = self.server.request("GET", tile_path(2, 1, 2, fractal="mandelbrot", center_re=-0.5, max_iter=301))
        self.assertNotEqual(other[1]["etag"], hdrs["etag"])

    # ---- POST /v1/render ----

    def test_post_render_formats_and_errors(self):
        st, hdrs, body = self.server.request("POST", "/v1/render", {"mandelbrot": {}, "width": 64, "height": 48})
        self.assertEqual((st, hdrs["content-type"]), (200, "image/png"), body[:200])
        self.assertEqual(h.png_info(body)[:2], (64, 48))
        st, hdrs, body = self.server.request("POST", "/v1/render", {"width": 64, "height": 48, "format": "FORMAT_RAW_U32"})
        self.assertEqual((st, hdrs["content-type"], len(body)), (200, "application/octet-stream", 64 * 48 * 4))
        self.assertEqual(self.server.request("POST", "/v1/render", "{}")[0], 200)
        self.assertError(self.server.request("POST", "/v1/render", '{"width": "wide"}'), 400, "INVALID_ARGUMENT")
        self.assertError(self.server.request("POST", "/v1/render", '{"widht": 5}'), 400, "INVALID_ARGUMENT")
        self.assertError(self.server.request("POST", "/v1/render", "{"), 400, "INVALID_ARGUMENT")
        self.assertError(self.server.request("POST", "/v1/render", ""), 400, "INVALID_ARGUMENT")
        self.assertError(self.server.request("POST", "/v1/render", '{"device": "cpu\\u0000x"}'), 400,
                         "INVALID_ARGUMENT", "request body must not contain a NUL byte")
        code, message = grpc_error(self.stub, pb.RenderRequest(width=65537))
        self.assertError(self.server.request("POST", "/v1/render", {"width": 65537}), 400, code, message)
        code, message = grpc_error(self.stub, pb.RenderRequest(width=16384, height=16384, max_iter=10000))
        self.assertEqual(code, "RESOURCE_EXHAUSTED")
        self.assertError(self.server.request("POST", "/v1/render", {"width": 16384, "height": 16384, "maxIter": 10000}),
                         429, code, message)
        self.assertError(self.server.request("POST", "/v1/render", "{" + " " * 70000 + "}"), 413, "RESOURCE_EXHAUSTED")
        st, hdrs, _ = self.server.request("GET", "/v1/render")
        self.assertEqual((st, hdrs.get("allow")), (405, "POST"))
        self.assertServes()

    def test_hostile_requests(self):
        # A header block over the per-connection limit, garbage, and a cut request: refused or
        # dropped, and the server goes on.
        st, _, _ = self.server.request("GET", "/healthz", headers={"X-Big": "a" * 40000})
        self.assertIn(st, (413, 431))
        for junk in (b"\x00\xff garbage\r\n\r\n", b"GET /v1/tiles/0/0/0.png HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
                     b"POST /v1/render HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"wid"):
            with socket.create_connection(("127.0.0.1", self.server.http_port), timeout=5) as s:
                s.sendall(junk)
                s.shutdown(socket.SHUT_WR)
                try:
                    s.recv(4096)
                except OSError:
                    pass
        many = "&".join("p%d=1" % i for i in range(40))
        self.assertError(self.server.request("GET", "/v1/tiles/0/0/0.png?" + many), 400, "INVALID_ARGUMENT",
                         "too many query parameters (at most 32)")
        self.assertServes()

    # ---- devices, stats, metrics ----

    def test_devices_and_stats(self):
        devices = self.server.get_json("/v1/devices")["devices"]
        self.assertIn("cpu", [d["id"] for d in devices])
        self.assertEqual(devices, json.loads(json.dumps(devices)))
        grpc_devices = self.stub.ListDevices(pb.ListDevicesRequest(), timeout=10).devices
        self.assertEqual([d["id"] for d in devices], [d.id for d in grpc_devices])
        self.stub.GetStats(pb.GetStatsRequest(), timeout=10)
        stats = self.server.get_json("/v1/stats")
        self.assertIn("uptimeS", stats)
        methods = {r["method"] for r in stats["requests"]}
        self.assertIn("GetStats", methods)

    def test_metrics_pass_promtool_under_load(self):
        if not shutil.which("promtool"):
            self.skipTest("promtool (Debian package prometheus) is not installed")
        stop = threading.Event()

        def load(i):
            k = 0
            while not stop.is_set():
                self.server.request("GET", tile_path(3, i, k % 8, max_iter=50 + k))
                k += 1
        threads = [threading.Thread(target=load, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            self.stub.GetStats(pb.GetStatsRequest(), timeout=10)
            st, hdrs, text = self.server.request("GET", "/metrics")
        finally:
            stop.set()
            for t in threads:
                t.join()
        self.assertEqual(st, 200)
        self.assertTrue(hdrs["content-type"].startswith("text/plain; version=0.0.4"))
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        text = text.decode()
        for name in ("fractald_grpc_requests_total{method=\"GetStats\",code=\"OK\"}",
                     "fractald_http_requests_total{route=\"tile\",status=\"200\"}",
                     "fractald_http_request_duration_seconds_bucket{route=\"tile\",le=\"+Inf\"}",
                     "fractald_grpc_request_duration_seconds_bucket{method=\"GetStats\",le=\"0.001\"}",
                     "fractald_render_queue_depth ", "fractald_renders_running ",
                     "fractald_device_busy_seconds_total{device=\"cpu\"}", "fractald_device_iterations_total{device=\"cpu\"}",
                     "fractald_device_giter_per_second{device=\"cpu\"}", "fractald_image_cache_hits_total ",
                     "fractald_image_cache_bytes ", "fractald_jobs{state=\"queued\"}", "fractald_iterations_total "):
            self.assertIn(name, text)
        iters = int(re.search(r"^fractald_device_iterations_total\{device=\"cpu\"\} (\d+)$", text, re.M).group(1))
        self.assertGreater(iters, 0)

    # ---- cancellation ----

    def test_closing_the_connection_cancels_the_render(self):
        def metric(name):
            text = self.server.request("GET", "/metrics")[2].decode()
            return float(re.search(r"^%s (\S+)$" % re.escape(name), text, re.M).group(1))
        cancels = metric("fractald_http_disconnect_cancels_total")
        # About three seconds of work: once cancelled it has most of them left.
        body = json.dumps(dict(DEEP_JULIA, width=4000, height=4000)).encode()
        s = socket.create_connection(("127.0.0.1", self.server.http_port))
        s.sendall(b"POST /v1/render HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                  % len(body) + body)
        deadline = time.monotonic() + 10
        while metric("fractald_renders_running") < 1:
            self.assertLess(time.monotonic(), deadline, "the render never started")
            time.sleep(0.02)
        time.sleep(0.2)
        t0 = time.monotonic()
        s.close()
        while metric("fractald_renders_running") > 0:
            self.assertLess(time.monotonic() - t0, 1.5, "the render went on after the client left")
            time.sleep(0.01)
        self.assertEqual(metric("fractald_http_disconnect_cancels_total"), cancels + 1)
        self.assertServes()


class HttpJobTests(unittest.TestCase):
    def test_rest_job_flow_survives_kill_9(self):
        spool = tempfile.mkdtemp(prefix="fractald-http-spool-")
        server = HttpServer(*FAST, "--workers", "2", spool=spool)
        try:
            req = {"mandelbrot": {}, "width": 300, "height": 200, "maxIter": 300, "coloring": {"palette": "magma"}}
            st, hdrs, body = server.request("POST", "/v1/jobs", req)
            self.assertEqual(st, 201, body)
            job = json.loads(body)
            self.assertEqual(hdrs["location"], "/v1/jobs/" + job["id"])
            self.assertRegex(job["id"], r"^[a-z2-7]{26}$")
            self.assertIn(job["state"], ("JOB_STATE_QUEUED", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"))
            self.assertEqual(job["request"]["width"], 300)
            deadline = time.monotonic() + 60
            while job["state"] != "JOB_STATE_SUCCEEDED":
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.05)
                job = server.get_json("/v1/jobs/" + job["id"])
            st, hdrs, image = server.request("GET", "/v1/jobs/%s/result" % job["id"])
            self.assertEqual((st, hdrs["content-type"]), (200, "image/png"))
            st, _, direct = server.request("POST", "/v1/render", req)
            self.assertEqual(h.png_pixels(image), h.png_pixels(direct))
            listed = server.get_json("/v1/jobs?state=succeeded&limit=10")["jobs"]
            self.assertIn(job["id"], [j["id"] for j in listed])
            self.assertEqual(server.get_json("/v1/jobs?state=QUEUED"), {})
            # A finished job stays as it is when cancelled (as CancelJob answers).
            st, _, body = server.request("DELETE", "/v1/jobs/" + job["id"])
            self.assertEqual((st, json.loads(body)["state"]), (200, "JOB_STATE_SUCCEEDED"))
            # The error table on the job routes.
            unknown = "a" * 26
            for method, path in (("GET", "/v1/jobs/" + unknown), ("DELETE", "/v1/jobs/" + unknown),
                                 ("GET", "/v1/jobs/%s/result" % unknown), ("GET", "/v1/jobs/nope")):
                st, _, body = server.request(method, path)
                self.assertEqual(st, 404, path)
                self.assertEqual(json.loads(body)["code"], "NOT_FOUND")
            self.assertEqual(json.loads(server.request("GET", "/v1/jobs/" + unknown)[2])["message"],
                             'no job "%s" (unknown, or expired)' % unknown)
            st, _, body = server.request("GET", "/v1/jobs?state=done")
            self.assertEqual((st, json.loads(body)["code"]), (400, "INVALID_ARGUMENT"))
            st, _, body = server.request("POST", "/v1/jobs", {"maxIter": 0})
            self.assertEqual((st, json.loads(body)["code"]), (400, "INVALID_ARGUMENT"))
            # A big job, killed mid-way: it survives the crash and finishes after the restart.
            # (Sanitizer builds compute several times slower: a smaller job, a longer wait.)
            side = 2000 if SANITIZED else 4000
            big = dict(DEEP_JULIA, width=side, height=side)
            st, _, body = server.request("POST", "/v1/jobs", big)
            self.assertEqual(st, 201, body)
            big_id = json.loads(body)["id"]
            deadline = time.monotonic() + 20
            while server.get_json("/v1/jobs/" + big_id)["state"] == "JOB_STATE_QUEUED":
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.02)
            st, _, body = server.request("GET", "/v1/jobs/%s/result" % big_id)
            self.assertEqual(st, 409, body)
            self.assertEqual(json.loads(body)["code"], "FAILED_PRECONDITION")
            server.kill()
            server = HttpServer(*FAST, "--workers", "2", spool=spool)
            # The finished job's result is still there after the crash.
            self.assertEqual(server.request("GET", "/v1/jobs/%s/result" % job["id"])[2], image)
            deadline = time.monotonic() + (400 if SANITIZED else 90)
            while True:
                state = server.get_json("/v1/jobs/" + big_id)
                if state["state"] == "JOB_STATE_SUCCEEDED":
                    break
                self.assertIn(state["state"], ("JOB_STATE_QUEUED", "JOB_STATE_RUNNING"), state)
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.1)
            st, hdrs, body = server.request("GET", "/v1/jobs/%s/result" % big_id)
            self.assertEqual((st, h.png_info(body)[:2]), (200, (side, side)))
            self.assertEqual(int(hdrs["content-length"]), len(body))
        finally:
            server.stop()
            shutil.rmtree(spool, ignore_errors=True)


class HttpAdmissionTests(unittest.TestCase):
    def test_busy_server_answers_429_with_retry_after(self):
        # One worker and a budget the long render alone may exceed (it is admitted into an empty
        # server): everything else waits for it, or is refused.
        server = HttpServer(*FAST, "--workers", "1", "--spool-dir", "", "--max-inflight-cost", "1e9")
        channel = grpc.insecure_channel(server.target, options=OPTIONS)
        stub = pbg.RendererStub(channel)
        try:
            body = json.dumps(DEEP_JULIA).encode()
            s = socket.create_connection(("127.0.0.1", server.http_port))
            s.sendall(b"POST /v1/render HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            # Only once the long render holds the budget (a tile admitted first would get it
            # refused instead).
            deadline = time.monotonic() + 10
            while float(re.search(r"^fractald_inflight_cost (\S+)$", server.request("GET", "/metrics")[2].decode(),
                                  re.M).group(1)) < 9e10:
                self.assertLess(time.monotonic(), deadline, "the long render was not admitted")
                time.sleep(0.01)
            st, hdrs, resp = server.request("GET", tile_path(0, 0, 0, max_iter=9000))
            self.assertEqual(st, 429, resp[:300])
            err = json.loads(resp)
            self.assertEqual(err["code"], "RESOURCE_EXHAUSTED")
            self.assertRegex(err["message"], r"^server is busy: .* iterations in flight, budget 1e\+09; retry later$")
            self.assertGreaterEqual(int(hdrs["retry-after"]), 1)
            # gRPC hears the same refusal from the same budget.
            code, message = grpc_error(stub, pb.RenderRequest(max_iter=9000, width=256, height=256))
            self.assertEqual(code, "RESOURCE_EXHAUSTED")
            self.assertEqual(message, err["message"])
            s.close()
            deadline = time.monotonic() + 5
            while server.request("GET", tile_path(0, 0, 0, max_iter=9000))[0] != 200:
                self.assertLess(time.monotonic(), deadline, "still refused after the long render left")
                time.sleep(0.05)
        finally:
            channel.close()
            self.assertEqual(server.stop(), 0)


class HttpSecurityTests(unittest.TestCase):
    def test_tokens_guard_http_too(self):
        d = tempfile.mkdtemp(prefix="fractald-http-tok-")
        try:
            path = os.path.join(d, "tokens")
            with open(path, "w") as f:
                f.write("web:%s\n" % ("t" * 32))
            server = HttpServer(*FAST, "--token-file", path)
            try:
                st, hdrs, body = server.request("GET", tile_path(0, 0, 0))
                self.assertEqual((st, hdrs.get("www-authenticate")), (401, "Bearer"))
                self.assertEqual(json.loads(body), {"code": "UNAUTHENTICATED", "message":
                                 "missing bearer token: this server needs 'authorization: Bearer TOKEN' metadata"})
                st, _, body = server.request("GET", "/v1/stats", headers={"Authorization": "Bearer " + "u" * 32})
                self.assertEqual((st, json.loads(body)["message"]), (401, "invalid bearer token"))
                st, hdrs, body = server.request("GET", tile_path(0, 0, 0), headers={"Authorization": "Bearer " + "t" * 32})
                self.assertEqual(st, 200)
                # Only the client's own cache may keep what a token got.
                self.assertEqual(hdrs["cache-control"], "private, max-age=86400, immutable")
                self.assertEqual(server.request("GET", "/metrics")[0], 401)
                # Probes and the viewer's own files stay open.
                self.assertEqual(server.request("GET", "/healthz")[0], 200)
                self.assertEqual(server.request("GET", "/")[0], 200)
            finally:
                server.stop()
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def test_https_with_the_grpc_certificate(self):
        if not shutil.which("openssl"):
            self.skipTest("openssl is not installed")
        d = tempfile.mkdtemp(prefix="fractald-http-tls-")
        try:
            cert, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                            "-nodes", "-days", "1", "-keyout", key, "-out", cert, "-subj", "/CN=127.0.0.1",
                            "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
            server = HttpServer(*FAST, "--tls-cert", cert, "--tls-key", key)
            try:
                import ssl
                ctx = ssl.create_default_context(cafile=cert)
                conn = http.client.HTTPSConnection("127.0.0.1", server.http_port, context=ctx, timeout=30)
                conn.request("GET", tile_path(0, 0, 0, max_iter=30))
                resp = conn.getresponse()
                body = resp.read()
                conn.close()
                self.assertEqual((resp.status, body[:4]), (200, b"\x89PNG"))
                # Plaintext to the TLS listener is not served, and TLS goes on working.
                try:
                    st = server.request("GET", "/healthz", timeout=5)[0]
                except (http.client.HTTPException, OSError):
                    st = None
                self.assertNotEqual(st, 200)
                conn = http.client.HTTPSConnection("127.0.0.1", server.http_port, context=ctx, timeout=30)
                conn.request("GET", "/healthz")
                self.assertEqual(conn.getresponse().status, 200)
                conn.close()
            finally:
                server.stop()
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def test_listen_guard_applies_to_http(self):
        out = subprocess.run([h.FRACTALD, "--http-listen", "0.0.0.0:0", "--spool-dir", ""], capture_output=True,
                             text=True, timeout=30)
        self.assertEqual(out.returncode, 2)
        self.assertIn("refusing to serve HTTP on 0.0.0.0:0 without TLS or tokens", out.stderr)
        out = subprocess.run([h.FRACTALD, "--http-listen", "unix:/tmp/x", "--spool-dir", ""], capture_output=True,
                             text=True, timeout=30)
        self.assertEqual(out.returncode, 2)
        self.assertIn("--http-listen must be HOST:PORT or [IPV6]:PORT", out.stderr)


class HttpConfigTests(unittest.TestCase):
    def test_config_file_keys_and_cache_off(self):
        """http_listen and image_cache are [server] keys too; image_cache = 0 turns the cache off
        for both front ends."""
        d = tempfile.mkdtemp(prefix="fractald-http-ini-")
        try:
            ini = os.path.join(d, "f.ini")
            with open(ini, "w") as f:
                f.write("[server]\nhttp_listen = 127.0.0.1:0\nimage_cache = 0\n")
            server = h.Server(*FAST, "--config", ini)
            try:
                m = re.match(r"fractald http listening on 127\.0\.0\.1:(\d+)$", server.proc.stdout.readline().strip())
                self.assertIsNotNone(m)
                server.http_port = int(m.group(1))
                for _ in range(2):
                    st, hdrs, _ = HttpServer.request(server, "GET", tile_path(0, 0, 0, max_iter=40))
                    self.assertEqual(st, 200)
                stats = json.loads(HttpServer.request(server, "GET", "/v1/stats")[2])
                self.assertNotIn("imageCacheHits", stats)
                self.assertNotIn("imageCacheMisses", stats)
            finally:
                server.stop()
            with open(ini, "w") as f:
                f.write("[server]\nhttp_listen = nowhere\n")
            out = subprocess.run([h.FRACTALD, "--config", ini, "--spool-dir", ""], capture_output=True, text=True, timeout=30)
            self.assertEqual(out.returncode, 2)
            self.assertIn(ini + ":2: http_listen must be HOST:PORT", out.stderr)
        finally:
            shutil.rmtree(d, ignore_errors=True)


class HttpDrainTests(unittest.TestCase):
    def test_sigterm_drains_http(self):
        server = HttpServer(*FAST, "--spool-dir", "", "--grace-ms", "30000")
        try:
            result = {}

            # Seconds of work, well inside the grace period (sanitizer builds run it ~20x slower).
            side = 1000 if os.environ.get("FRACTALD_SANITIZED") else 3000
            job = dict(DEEP_JULIA, width=side, height=side)

            def render():
                # A slow reader with a small receive window: the reply is still on its way when
                # the renders are done and the server moves on to stopping; it must arrive whole.
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 10)
                sock.settimeout(120)
                sock.connect(("127.0.0.1", server.http_port))
                try:
                    body = json.dumps(job).encode()
                    sock.sendall(b"POST /v1/render HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
                    resp = http.client.HTTPResponse(sock)
                    resp.begin()
                    chunks = []
                    while True:
                        chunk = resp.read(64 << 10)
                        if not chunk:
                            break
                        chunks.append(chunk)
                        time.sleep(0.005)
                    result["reply"] = (resp.status, dict(resp.getheaders()), b"".join(chunks))
                finally:
                    sock.close()
            t = threading.Thread(target=render)
            t.start()
            deadline = time.monotonic() + 10
            while "fractald_renders_running 1" not in server.request("GET", "/metrics")[2].decode():
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.02)
            server.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            while server.request("GET", "/readyz")[0] != 503:
                self.assertLess(time.monotonic(), deadline, "readiness stayed up")
                time.sleep(0.01)
            st, _, body = server.request("GET", tile_path(0, 0, 0))
            self.assertEqual((st, json.loads(body)), (503, {"code": "UNAVAILABLE", "message": "server is shutting down"}))
            self.assertEqual(server.request("GET", "/healthz")[0], 200)
            t.join(60)
            st, _, image = result["reply"]
            self.assertEqual(st, 200, image[:200])
            self.assertEqual(h.png_info(image)[:2], (side, side))
            server.proc.wait(30)
            self.assertEqual(server.proc.returncode, 0)
        finally:
            server.stop()



def _varint(n):
    out = b""
    while True:
        b = n & 0x7f
        n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def _fields(data):
    """(number, value) of each field of protobuf wire data; length-delimited values as bytes."""
    pos = 0
    while pos < len(data):
        key, shift = 0, 0
        while True:
            b = data[pos]
            pos += 1
            key |= (b & 0x7f) << shift
            shift += 7
            if not b & 0x80:
                break
        number, wtype = key >> 3, key & 7
        if wtype == 0:
            value, shift = 0, 0
            while True:
                b = data[pos]
                pos += 1
                value |= (b & 0x7f) << shift
                shift += 7
                if not b & 0x80:
                    break
        elif wtype == 2:
            length, shift = 0, 0
            while True:
                b = data[pos]
                pos += 1
                length |= (b & 0x7f) << shift
                shift += 7
                if not b & 0x80:
                    break
            value = data[pos:pos + length]
            pos += length
        else:
            raise AssertionError("unexpected wire type %d" % wtype)
        yield number, value


class ReflectionTests(unittest.TestCase):
    """gRPC server reflection from a client with no stubs and no reflection package: requests
    written by hand on the wire, descriptors read with python3-protobuf's descriptor_pb2."""

    @classmethod
    def setUpClass(cls):
        cls.server = h.Server(*FAST, "--spool-dir", "")
        cls.channel = grpc.insecure_channel(cls.server.target, options=OPTIONS)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        assert cls.server.stop() == 0

    def reflect(self, requests, version="v1"):
        """Sends each request ((field number, string) of ServerReflectionRequest) on one stream;
        returns the responses as {field number: value}."""
        call = self.channel.stream_stream("/grpc.reflection.%s.ServerReflection/ServerReflectionInfo" % version,
                                          request_serializer=lambda b: b, response_deserializer=lambda b: b)
        wire = [bytes([(n << 3) | 2]) + _varint(len(v.encode())) + v.encode() for n, v in requests]
        replies = list(call(iter(wire), timeout=10))
        self.assertEqual(len(replies), len(requests))
        out = []
        for r in replies:
            fields = {}
            for n, v in _fields(r):
                fields.setdefault(n, []).append(v)
            out.append(fields)
        return out

    def files(self, reply):
        from google.protobuf import descriptor_pb2
        (fdr,) = reply[4]
        return [descriptor_pb2.FileDescriptorProto.FromString(v) for n, v in _fields(fdr) if n == 1]

    def test_list_and_describe(self):
        for version in ("v1", "v1alpha"):
            listing, renderer, request, missing = self.reflect(
                [(7, "*"), (4, "fractal.v1.Renderer"), (4, "fractal.v1.RenderRequest.max_iter"),
                 (4, "fractal.v1.Nope")], version)
            (svc_list,) = listing[6]
            names = {dict(_fields(s))[1].decode() for n, s in _fields(svc_list) if n == 1}
            self.assertEqual(names, {"fractal.v1.Renderer", "grpc.health.v1.Health",
                                     "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"})
            # The request is echoed back.
            self.assertEqual(dict(_fields(listing[2][0]))[7], b"*")
            files = self.files(renderer)
            self.assertEqual(files[0].name, "fractal/v1/fractal.proto")
            (svc,) = [s for s in files[0].service if s.name == "Renderer"]
            methods = {m.name: m for m in svc.method}
            for name in ("Render", "RenderStream", "SubmitJob", "GetJob", "FetchJobResult", "CancelJob",
                         "ListJobs", "ListDevices", "GetStats"):
                self.assertIn(name, methods)
            self.assertEqual(methods["Render"].input_type, ".fractal.v1.RenderRequest")
            self.assertTrue(methods["RenderStream"].server_streaming)
            self.assertFalse(methods["Render"].server_streaming)
            # A field's name finds its message's file.
            (req_file,) = self.files(request)[:1]
            (msg,) = [m for m in req_file.message_type if m.name == "RenderRequest"]
            self.assertIn("max_iter", [f.name for f in msg.field])
            (err,) = missing[7]
            err = dict(_fields(err))
            self.assertEqual(err[1], 5)
            self.assertIn(b"fractal.v1.Nope", err[2])

    def test_descriptors_are_enough_to_call_the_server(self):
        """A RenderRequest class made from the reflected descriptors alone renders an image."""
        from google.protobuf import descriptor_pool, message_factory
        (reply,) = self.reflect([(3, "fractal/v1/fractal.proto")])
        pool = descriptor_pool.DescriptorPool()
        pending = self.files(reply)
        while pending:  # dependencies first
            f = pending.pop()
            pool.Add(f)
        factory = message_factory.MessageFactory(pool)
        Request = factory.GetPrototype(pool.FindMessageTypeByName("fractal.v1.RenderRequest"))
        Response = factory.GetPrototype(pool.FindMessageTypeByName("fractal.v1.RenderResponse"))
        render = self.channel.unary_unary("/fractal.v1.Renderer/Render", request_serializer=lambda m: m.SerializeToString(),
                                          response_deserializer=Response.FromString)
        reply = render(Request(width=32, height=16), timeout=30)
        self.assertEqual((reply.width, reply.height), (32, 16))
        self.assertEqual(reply.data[:4], b"\x89PNG")


if __name__ == "__main__":
    unittest.main()
