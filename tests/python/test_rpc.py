"""Black-box tests of fractald's gRPC contract from Python grpcio: renders, formats, regions,
the bad-input table (exact status, and the server still answers), health, unknown methods,
limits and deadlines."""
import array
import json
import math
import os
import struct
import sys
import threading
import time
import unittest

import fractald_harness as h  # noqa: E402  (sets sys.path for the generated stubs)

import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from fractal.v1 import fractal_pb2 as pb  # noqa: E402
from fractal.v1 import fractal_pb2_grpc as pb_grpc  # noqa: E402
from fractal_health import health_pb2, health_pb2_grpc  # noqa: E402

OPTIONS = [("grpc.max_receive_message_length", 256 << 20)]
TIMEOUT = 60


SLOW_B = pb.RenderRequest(julia=pb.Julia(c=pb.Complex(re=-0.8, im=0.156)), width=8192, height=8192,
                          max_iter=3000, view=pb.View(center=pb.Complex(re=0.17304, im=0.23854), width=0.0005))


def julia(**kw):
    return pb.RenderRequest(**kw)


class RenderTestCase(unittest.TestCase):
    server_args = ()

    @classmethod
    def setUpClass(cls):
        cls.server = h.Server(*cls.server_args)
        cls.channel = grpc.insecure_channel(cls.server.target, options=OPTIONS)
        cls.stub = pb_grpc.RendererStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        code = cls.server.stop()
        assert code == 0, "fractald exited with %r on SIGTERM" % code

    def render(self, req, timeout=TIMEOUT):
        return self.stub.Render(req, timeout=timeout)

    def assert_status(self, req, code, fragment=None):
        with self.assertRaises(grpc.RpcError) as cm:
            self.render(req)
        err = cm.exception
        self.assertEqual(err.code(), code, "%s: %s" % (err.code(), err.details()))
        if fragment:
            self.assertIn(fragment, err.details())
        return err

    def assert_still_serving(self):
        reply = self.render(pb.RenderRequest(width=32, height=16, max_iter=32))
        self.assertEqual((reply.width, reply.height), (32, 16))


class RenderTests(RenderTestCase):
    def test_default_request_renders_demo_image(self):
        reply = self.render(pb.RenderRequest())
        self.assertEqual(reply.content_type, "image/png")
        self.assertEqual((reply.width, reply.height), (600, 400))
        width, height, depth, ctype, texts, _ = h.png_info(reply.data)
        self.assertEqual((width, height, depth, ctype), (600, 400, 8, 2))
        req = json_format.Parse(texts["fractal.v1.RenderRequest"], pb.RenderRequest())
        self.assertEqual((req.julia.c.re, req.julia.c.im), (-0.8, 0.156))
        self.assertEqual((req.width, req.height, req.max_iter), (600, 400, 256))
        self.assertEqual(req.view.width, 3.0)
        self.assertEqual(reply.stats.precision, pb.PRECISION_FP32)
        self.assertGreater(reply.stats.iterations, 600 * 400)
        self.assertEqual(reply.stats.samples, 600 * 400)
        known = {d.id for d in self.stub.ListDevices(pb.ListDevicesRequest(), timeout=TIMEOUT).devices}
        self.assertTrue(reply.stats.devices and set(reply.stats.devices) <= known, reply.stats.devices)
        # Interior pixels of the default palette are black; escaped ones are not all black.
        rows = h.png_pixels(reply.data)
        centre = rows[200][300 * 3:300 * 3 + 3]
        self.assertEqual(centre, b"\0\0\0")
        self.assertNotEqual(rows[0][:3], b"\0\0\0")

    def test_request_in_png_renders_the_same_bytes_again(self):
        first = self.render(pb.RenderRequest(width=200, height=120, max_iter=300, supersample=2,
                                             coloring=pb.Coloring(palette="viridis", cycle=40)))
        texts = h.png_info(first.data)[4]
        again = json_format.Parse(texts["fractal.v1.RenderRequest"], pb.RenderRequest())
        second = self.render(again)
        self.assertEqual(first.data, second.data)

    def test_raw_u32_counts_sum_to_reported_iterations(self):
        reply = self.render(pb.RenderRequest(width=120, height=80, max_iter=500, format=pb.FORMAT_RAW_U32))
        self.assertEqual(reply.content_type, "application/octet-stream")
        self.assertEqual(len(reply.data), 120 * 80 * 4)
        counts = struct.unpack("<%dI" % (120 * 80), reply.data)
        self.assertEqual(sum(counts), reply.stats.iterations)
        self.assertLessEqual(max(counts), 500)
        # c = -0.8+0.156i lies just outside the Mandelbrot set: even the critical point escapes,
        # late (n = 454 at max_iter 500), so the centre is slow but not interior.
        self.assertGreater(counts[40 * 120 + 60], 300)
        self.assertLess(counts[0], 10)

    def test_raw_f32_interior_is_minus_one_and_escaped_are_smooth(self):
        reply = self.render(pb.RenderRequest(width=120, height=80, max_iter=500, format=pb.FORMAT_RAW_F32))
        counts = struct.unpack("<%dI" % (120 * 80), self.render(pb.RenderRequest(
            width=120, height=80, max_iter=500, format=pb.FORMAT_RAW_U32)).data)
        mus = struct.unpack("<%df" % (120 * 80), reply.data)
        for n, mu in zip(counts, mus):
            if n == 500:
                self.assertEqual(mu, -1.0)
            else:
                # mu = (n + k) + 1 - log2(ln|z_{n+k}| / ln R) after k steps past the escape
                # (docs/MATH.md): the escape-time potential, within about [n - 0.5, n + 1.5].
                self.assertTrue(n - 1.5 <= mu <= n + 1.5, (n, mu))

    def test_png16_is_16_bit_grey(self):
        reply = self.render(pb.RenderRequest(width=64, height=48, format=pb.FORMAT_PNG16))
        width, height, depth, ctype, _, _ = h.png_info(reply.data)
        self.assertEqual((width, height, depth, ctype), (64, 48, 16, 0))

    def test_region_equals_the_same_pixels_of_the_full_image(self):
        base = dict(width=97, height=61, max_iter=400, format=pb.FORMAT_RAW_U32)
        full = struct.unpack("<%dI" % (97 * 61), self.render(pb.RenderRequest(**base)).data)
        region = pb.Region(x=13, y=7, width=40, height=30)
        tile = self.render(pb.RenderRequest(region=region, **base))
        self.assertEqual((tile.width, tile.height), (40, 30))
        got = struct.unpack("<%dI" % (40 * 30), tile.data)
        for j in range(30):
            self.assertEqual(got[j * 40:(j + 1) * 40], full[(7 + j) * 97 + 13:(7 + j) * 97 + 53])

    def test_mandelbrot_fp64_explicit(self):
        reply = self.render(pb.RenderRequest(mandelbrot=pb.Mandelbrot(), width=90, height=60,
                                             precision=pb.PRECISION_FP64, format=pb.FORMAT_RAW_U32,
                                             view=pb.View(center=pb.Complex(re=-0.5), width=3.0)))
        self.assertEqual(reply.stats.precision, pb.PRECISION_FP64)
        counts = struct.unpack("<%dI" % (90 * 60), reply.data)
        self.assertEqual(counts[30 * 90 + 45], 256)     # c = -0.5 + 0i is inside the set
        self.assertLess(counts[0], 5)                     # c = -2 + 1i escapes at once

    def test_auto_precision_switches_to_fp64_for_deep_views(self):
        reply = self.render(pb.RenderRequest(width=64, height=64, max_iter=2000,
                                             view=pb.View(center=pb.Complex(re=0.17304, im=0.23854), width=0.0005)))
        self.assertEqual(reply.stats.precision, pb.PRECISION_FP64)

    def test_custom_stops_colour_the_image(self):
        base = dict(width=40, height=30, max_iter=100)
        counts = struct.unpack("<1200I", self.render(pb.RenderRequest(format=pb.FORMAT_RAW_U32, **base)).data)
        reply = self.render(pb.RenderRequest(coloring=pb.Coloring(
            stops=[pb.ColorStop(position=0, color=pb.Color(r=255)), pb.ColorStop(position=1, color=pb.Color(r=255))],
            interior=pb.Color(g=255)), **base))
        rows = h.png_pixels(reply.data)
        self.assertIn(100, counts)
        for k, n in enumerate(counts):
            j, i = divmod(k, 40)
            expected = b"\x00\xff\x00" if n == 100 else b"\xff\x00\x00"   # interior green, escaped flat red
            self.assertEqual(rows[j][i * 3:i * 3 + 3], expected, (i, j, n))

    def test_list_devices_reports_the_cpu_engine(self):
        devices = self.stub.ListDevices(pb.ListDevicesRequest(), timeout=TIMEOUT).devices
        cpu = [d for d in devices if d.id == "cpu"]
        self.assertEqual(len(cpu), 1)
        self.assertEqual(cpu[0].type, pb.DEVICE_TYPE_CPU)
        self.assertTrue(cpu[0].fp64 and cpu[0].enabled)
        self.assertEqual(cpu[0].status, "ok")
        self.assertGreaterEqual(cpu[0].compute_units, 1)

    def test_health(self):
        health = health_pb2_grpc.HealthStub(self.channel)
        for service in ("", "fractal.v1.Renderer"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
            self.assertEqual(reply.status, health_pb2.HealthCheckResponse.SERVING)
        with self.assertRaises(grpc.RpcError) as cm:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=TIMEOUT)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_unknown_method_is_unimplemented_at_once(self):
        call = self.channel.unary_unary("/fractal.v1.Renderer/NoSuchMethod")
        start = time.monotonic()
        with self.assertRaises(grpc.RpcError) as cm:
            call(b"", timeout=10)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        self.assertLess(time.monotonic() - start, 5)
        self.assert_still_serving()

    def test_unknown_job_is_not_found(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.GetJob(pb.JobRef(id="x"), timeout=10)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertIn('"x"', cm.exception.details())


def _nan_rows():
    """(name, request) for NaN and infinities in every double field."""
    rows = []
    for value in (math.nan, math.inf, -math.inf):
        tag = {math.inf: "inf", -math.inf: "-inf"}.get(value, "nan")
        rows += [
            ("julia.c.re=" + tag, pb.RenderRequest(julia=pb.Julia(c=pb.Complex(re=value))), "julia.c.re"),
            ("julia.c.im=" + tag, pb.RenderRequest(julia=pb.Julia(c=pb.Complex(im=value))), "julia.c.im"),
            ("view.center.re=" + tag, pb.RenderRequest(view=pb.View(center=pb.Complex(re=value))), "view.center.re"),
            ("view.center.im=" + tag, pb.RenderRequest(view=pb.View(center=pb.Complex(im=value))), "view.center.im"),
            ("view.width=" + tag, pb.RenderRequest(view=pb.View(width=value)), "view.width"),
            ("escape_radius=" + tag, pb.RenderRequest(escape_radius=value), "escape_radius"),
            ("coloring.cycle=" + tag, pb.RenderRequest(coloring=pb.Coloring(cycle=value)), "coloring.cycle"),
            ("coloring.offset=" + tag, pb.RenderRequest(coloring=pb.Coloring(offset=value)), "coloring.offset"),
            ("stops.position=" + tag, pb.RenderRequest(coloring=pb.Coloring(
                stops=[pb.ColorStop(position=value, color=pb.Color())])), "coloring.stops[0].position"),
        ]
    return rows


INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION

BAD_INPUT = [(name, req, INVALID, fragment) for name, req, fragment in _nan_rows()] + [
    ("width 65537", pb.RenderRequest(width=65537), INVALID, "width must be 1..65536, got 65537"),
    ("height 65537", pb.RenderRequest(height=65537), INVALID, "height must be 1..65536, got 65537"),
    ("width 0", pb.RenderRequest(width=0), INVALID, "width must be 1..65536, got 0"),
    ("height 0", pb.RenderRequest(height=0), INVALID, "height must be 1..65536, got 0"),
    ("negative view width", pb.RenderRequest(view=pb.View(width=-1)), INVALID, "view.width"),
    ("zero view width", pb.RenderRequest(view=pb.View(width=0)), INVALID, "view.width"),
    ("negative escape radius", pb.RenderRequest(escape_radius=-2), INVALID, "escape_radius"),
    ("zero escape radius", pb.RenderRequest(escape_radius=0), INVALID, "escape_radius"),
    ("escape radius 1", pb.RenderRequest(escape_radius=1), INVALID, "escape_radius"),
    ("region outside", pb.RenderRequest(region=pb.Region(x=500, y=0, width=101, height=10)), INVALID,
     "must lie inside the 600x400 image"),
    ("region below", pb.RenderRequest(region=pb.Region(x=0, y=399, width=10, height=2)), INVALID, "region"),
    ("region huge offset", pb.RenderRequest(region=pb.Region(x=4294967295, y=0, width=2, height=2)), INVALID,
     "region"),
    ("empty region", pb.RenderRequest(region=pb.Region(x=0, y=0, width=0, height=10)), INVALID, "region"),
    ("max_iter over the limit", pb.RenderRequest(max_iter=10000001), INVALID,
     "max_iter must be 1..10000000, got 10000001"),
    ("max_iter 0", pb.RenderRequest(max_iter=0), INVALID, "max_iter"),
    ("unknown palette", pb.RenderRequest(coloring=pb.Coloring(palette="nosuch")), INVALID,
     "coloring.palette must be one of"),
    ("unknown device", pb.RenderRequest(device="nosuch"), INVALID, 'got "nosuch"'),
    ("no gpu here", pb.RenderRequest(device="gpu"), PRECONDITION, 'device "gpu"'),
    ("supersample 9", pb.RenderRequest(supersample=9), INVALID, "supersample must be 1..8, got 9"),
    ("supersample 0", pb.RenderRequest(supersample=0), INVALID, "supersample must be 1..8, got 0"),
    ("raw u32 with supersample", pb.RenderRequest(format=pb.FORMAT_RAW_U32, supersample=2), INVALID,
     "supersample must be 1 for raw formats"),
    ("raw f32 with supersample", pb.RenderRequest(format=pb.FORMAT_RAW_F32, supersample=3), INVALID,
     "supersample must be 1 for raw formats"),
    ("unknown format", pb.RenderRequest(format=9), INVALID, "format"),
    ("unknown precision", pb.RenderRequest(precision=7), INVALID, "precision"),
    ("stop position above 1", pb.RenderRequest(coloring=pb.Coloring(
        stops=[pb.ColorStop(position=1.5, color=pb.Color())])), INVALID, "coloring.stops[0].position"),
    ("stops out of order", pb.RenderRequest(coloring=pb.Coloring(
        stops=[pb.ColorStop(position=0.5), pb.ColorStop(position=0.2)])), INVALID, "coloring.stops[1].position"),
    ("stop colour 256", pb.RenderRequest(coloring=pb.Coloring(
        stops=[pb.ColorStop(position=0, color=pb.Color(r=256))])), INVALID, "coloring.stops[0].color"),
    ("too many stops", pb.RenderRequest(coloring=pb.Coloring(
        stops=[pb.ColorStop(position=0)] * 300)), INVALID, "coloring.stops"),
    ("too many stops once extended to 0 and 1", pb.RenderRequest(coloring=pb.Coloring(
        stops=[pb.ColorStop(position=0.1 + 0.8 * k / 254) for k in range(255)])), INVALID,
     "counting the ones added at positions 0 and 1, got 257"),
    ("interior colour 300", pb.RenderRequest(coloring=pb.Coloring(interior=pb.Color(b=300))), INVALID,
     "coloring.interior"),
    ("offset above 1", pb.RenderRequest(coloring=pb.Coloring(offset=2)), INVALID, "coloring.offset"),
    ("negative cycle", pb.RenderRequest(coloring=pb.Coloring(cycle=-1)), INVALID, "coloring.cycle"),
    ("over budget", pb.RenderRequest(width=65536, height=65536, max_iter=10000000), EXHAUSTED,
     "over the limit"),
    ("over the cost budget", pb.RenderRequest(width=8000, height=8000, max_iter=1000000), EXHAUSTED,
     "iterations (samples x max_iter), over the limit"),
    ("raw reply over the message limit", pb.RenderRequest(width=5000, height=5000, max_iter=1,
                                                           format=pb.FORMAT_RAW_U32), EXHAUSTED, "RenderStream"),
    ("view too deep for an explicit fp64", pb.RenderRequest(precision=pb.PRECISION_FP64,
                                                            view=pb.View(center=pb.Complex(re=0.3), width=1e-13)),
     PRECONDITION, "view too deep"),
    ("fp32 asked for a deep view", pb.RenderRequest(precision=pb.PRECISION_FP32, view=pb.View(width=1e-6)),
     PRECONDITION, "PRECISION_FP32 cannot resolve"),
]


class BadInputTests(RenderTestCase):
    def test_bad_input_table(self):
        for name, req, code, fragment in BAD_INPUT:
            with self.subTest(name):
                self.assert_status(req, code, fragment)
                self.assert_still_serving()

    def test_message_that_is_not_protobuf(self):
        call = self.channel.unary_unary("/fractal.v1.Renderer/Render")
        for payload in (b"\xff\xff\xff\xff", b"\x0a\x05\x01"):
            with self.assertRaises(grpc.RpcError) as cm:
                call(payload, timeout=TIMEOUT)
            self.assertEqual(cm.exception.code(), INVALID)
            self.assertIn("not a valid fractal.v1.RenderRequest", cm.exception.details())
            self.assert_still_serving()

    def test_request_larger_than_the_receive_limit(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.render(pb.RenderRequest(device="x" * (100 << 10)))
        self.assertEqual(cm.exception.code(), EXHAUSTED)
        self.assert_still_serving()

    def test_messages_name_field_value_and_range(self):
        err = self.assert_status(pb.RenderRequest(width=65537), INVALID)
        self.assertEqual(err.details(), "width must be 1..65536, got 65537")


class CancelTests(RenderTestCase):
    # One render worker: the follow-up render can only run once the long one has let go.
    server_args = ("--workers", "1", "--spool-dir", "")

    def test_deadline_stops_a_long_render(self):
        # Workload B's deep view at 8192x8192: every pixel escapes after ~1100 iterations (no interior
        # shortcut helps), 7e10 iterations in fp64, many seconds on two cores.
        big = SLOW_B
        start = time.monotonic()
        with self.assertRaises(grpc.RpcError) as cm:
            self.render(big, timeout=0.3)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assert_still_serving()
        self.assertLess(time.monotonic() - start, 3.0)

    def test_client_cancel_stops_a_long_render(self):
        big = SLOW_B
        future = self.stub.Render.future(big, timeout=TIMEOUT)
        time.sleep(0.3)
        start = time.monotonic()
        future.cancel()
        with self.assertRaises(grpc.FutureCancelledError):
            future.result()
        self.assert_still_serving()
        self.assertLess(time.monotonic() - start, 3.0)


class LimitTests(RenderTestCase):
    server_args = ("--max-message-bytes", "200000", "--max-side", "4096", "--max-iter", "5000")

    def test_configured_limits_apply(self):
        self.assert_status(pb.RenderRequest(width=4097), INVALID, "width must be 1..4096, got 4097")
        self.assert_status(pb.RenderRequest(max_iter=5001), INVALID, "max_iter must be 1..5000, got 5001")

    def test_png_over_the_message_limit_points_to_render_stream(self):
        # Noise-like colouring compresses badly: far over 200 kB for 1000x1000.
        req = pb.RenderRequest(width=1000, height=1000, max_iter=2000, coloring=pb.Coloring(cycle=3),
                               view=pb.View(center=pb.Complex(re=0.17304, im=0.23854), width=0.01))
        self.assert_status(req, EXHAUSTED, "RenderStream")
        self.assert_still_serving()


class StartupTests(unittest.TestCase):
    def test_taken_port_fails_loudly(self):
        first = h.Server()
        try:
            import subprocess
            proc = subprocess.run([h.FRACTALD, "--listen", first.target], capture_output=True, text=True,
                                  timeout=30)
            self.assertNotEqual(proc.returncode, 0)
            self.assertIn("cannot listen on " + first.target, proc.stderr)
        finally:
            self.assertEqual(first.stop(), 0)

    def test_bad_flag_is_refused(self):
        import subprocess
        proc = subprocess.run([h.FRACTALD, "--workers", "0"], capture_output=True, text=True, timeout=30)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("--workers must be an integer 1..1024, got '0'", proc.stderr)


if __name__ == "__main__":
    unittest.main()
