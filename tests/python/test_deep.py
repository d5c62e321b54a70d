"""Deep zoom through the whole request path, black-box from Python grpcio and the fractal tool:
the View's *_text fields, the precision policy past fp64 (AUTO reports PERTURB and
PERTURB_EXTENDED), the exact refusals (the server still serves the next request), the reference
cache (GetStats deep_refs), the PNG's request rendered again bit for bit by `fractal render
--from`, and `fractal zoom` resuming."""
import os
import shutil
import subprocess
import tempfile
import threading
import time
import unittest

import fractald_harness as h  # noqa: E402  (sets sys.path for the generated stubs)

import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from fractal.v1 import fractal_pb2 as pb  # noqa: E402
from fractal.v1 import fractal_pb2_grpc as pb_grpc  # noqa: E402

OPTIONS = [("grpc.max_receive_message_length", 64 << 20)]
TIMEOUT = 120
INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION

# A point in the seahorse valley known to 33 digits: views of it down to 1e-30 show structure
# when max_iter grows with the depth.
DEEP_RE = "-0.743643887037158704752191506114774"
DEEP_IM = "0.131825904205311970493132056385139"


def deep(width_text, re=DEEP_RE, im=DEEP_IM, **kw):
    kw.setdefault("width", 48)
    kw.setdefault("height", 32)
    kw.setdefault("max_iter", 3000)
    return pb.RenderRequest(mandelbrot=pb.Mandelbrot(), view=pb.View(center_re_text=re, center_im_text=im,
                                                                     width_text=width_text), **kw)


class DeepCase(unittest.TestCase):
    server_args = ("--deep-max-digits", "400")

    @classmethod
    def setUpClass(cls):
        cls.server = h.Server(*cls.server_args)
        cls.channel = grpc.insecure_channel(cls.server.target, options=OPTIONS)
        cls.stub = pb_grpc.RendererStub(cls.channel)
        cls.tmp = tempfile.mkdtemp(prefix="fractal-deep-")

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        code = cls.server.stop()
        assert code == 0, "fractald exited with %r on SIGTERM" % code

    def render(self, req, timeout=TIMEOUT):
        return self.stub.Render(req, timeout=timeout)

    def assert_refused(self, req, code, details):
        """req is refused with exactly this status and message, and the server serves the next one."""
        with self.assertRaises(grpc.RpcError) as cm:
            self.render(req)
        self.assertEqual((cm.exception.code(), cm.exception.details()), (code, details))
        self.assert_still_serving()

    def assert_still_serving(self):
        reply = self.render(pb.RenderRequest(width=32, height=16, max_iter=32))
        self.assertEqual((reply.width, reply.height), (32, 16))

    def stream(self, req):
        return b"".join(e.chunk.data for e in self.stub.RenderStream(req, timeout=TIMEOUT) if e.HasField("chunk"))

    def stats(self):
        return self.stub.GetStats(pb.GetStatsRequest(), timeout=TIMEOUT).deep_refs

    def fractal(self, *args):
        return subprocess.run([h.FRACTAL_CLI, "--server", self.server.target, *args], capture_output=True,
                              timeout=TIMEOUT)


class PolicyTests(DeepCase):
    def test_auto_reports_what_it_used(self):
        # (width, max_iter, what AUTO uses, whether the view still has structure to show: past its
        # 33 digits the point is just a point)
        for width, max_iter, precision, detail in [
                ("0.5", 3000, pb.PRECISION_FP32, True), ("1e-9", 3000, pb.PRECISION_FP64, True),
                ("1e-20", 20000, pb.PRECISION_PERTURB, True), ("1e-30", 100000, pb.PRECISION_PERTURB, True),
                ("1e-80", 3000, pb.PRECISION_PERTURB, False), ("3e-320", 3000, pb.PRECISION_PERTURB_EXTENDED, False)]:
            with self.subTest(width=width):
                reply = self.render(deep(width, max_iter=max_iter))
                self.assertEqual(reply.stats.precision, precision)
                self.assertEqual((reply.width, reply.height), (48, 32))
                if precision in (pb.PRECISION_PERTURB, pb.PRECISION_PERTURB_EXTENDED):
                    self.assertEqual(list(reply.stats.devices), ["cpu"])  # perturbation runs on the CPU only
                self.assertGreaterEqual(reply.stats.iterations, 48 * 32)
                if detail:
                    # Its default colouring cycles: the image shows the structure, not one flat colour.
                    rows = h.png_pixels(reply.data)
                    self.assertGreater(len({bytes(r[i:i + 3]) for r in rows for i in range(0, len(r), 3)}), 8)
                # The request it carries keeps AUTO and the exact view.
                stored = json_format.Parse(h.png_info(reply.data)[4]["fractal.v1.RenderRequest"],
                                           pb.RenderRequest())
                self.assertEqual(stored.precision, pb.PRECISION_AUTO)
                self.assertEqual(stored.view.center_re_text, DEEP_RE)
                self.assertEqual(stored.view.width_text, width)
                # Rendered again from it (streamed: the image cache answers only unary calls), the
                # same bytes.
                self.assertEqual(self.stream(stored), reply.data)

    def test_doubles_past_fp64_go_to_perturbation(self):
        reply = self.render(pb.RenderRequest(mandelbrot=pb.Mandelbrot(), width=40, height=30, max_iter=2000,
                                             view=pb.View(center=pb.Complex(re=-1.4011551890920506), width=1e-15)))
        self.assertEqual(reply.stats.precision, pb.PRECISION_PERTURB)

    def test_explicit_precisions(self):
        reply = self.render(deep("1e-20", precision=pb.PRECISION_PERTURB_EXTENDED))
        self.assertEqual(reply.stats.precision, pb.PRECISION_PERTURB_EXTENDED)
        reply = self.render(deep("1e-3", precision=pb.PRECISION_PERTURB, format=pb.FORMAT_RAW_U32))
        self.assertEqual(reply.stats.precision, pb.PRECISION_PERTURB)
        self.assertEqual(len(reply.data), 48 * 32 * 4)
        stored_fp64 = self.render(deep("1e-3", precision=pb.PRECISION_FP64, format=pb.FORMAT_RAW_U32))
        self.assertEqual(stored_fp64.stats.precision, pb.PRECISION_FP64)

    def test_opencl_device_renders_the_same_image(self):
        """PRECISION_PERTURB on an OpenCL device with fp64 (PoCL here): kernels/deep.cl gives the CPU deep
        engine's counts and smooth values, so the PNG is byte for byte the CPU's; extended deltas have
        no device path and are refused there."""
        devices = self.stub.ListDevices(pb.ListDevicesRequest(), timeout=30).devices
        cl = [d for d in devices if d.id != "cpu" and d.fp64 and d.enabled]
        if not cl:
            self.skipTest("no enabled OpenCL device with fp64 on this host")
        for fractal in ({"mandelbrot": pb.Mandelbrot()}, {"julia": pb.Julia(c=pb.Complex(re=0.285, im=0.01))}):
            with self.subTest(fractal=list(fractal)[0]):
                kw = dict(width=40, height=30, max_iter=2000, **fractal,
                          view=pb.View(center_re_text=DEEP_RE if "mandelbrot" in fractal else "0.1",
                                       center_im_text=DEEP_IM if "mandelbrot" in fractal else "0.6",
                                       width_text="1e-22"))
                on_cpu = self.render(pb.RenderRequest(device="cpu", **kw))
                on_cl = self.render(pb.RenderRequest(device=cl[0].id, **kw))
                self.assertEqual(list(on_cl.stats.devices), [cl[0].id])
                self.assertEqual(on_cl.stats.precision, pb.PRECISION_PERTURB)
                self.assertEqual(h.png_pixels(on_cl.data), h.png_pixels(on_cpu.data))
        self.assert_refused(deep("1e-20", precision=pb.PRECISION_PERTURB_EXTENDED, device="opencl"), PRECONDITION,
                            'deep zoom with extended exponents (PRECISION_PERTURB_EXTENDED) runs on the CPU engine '
                            'only, so device "opencl" cannot take it; use device "" or "cpu"')

    def test_julia_deep(self):
        req = pb.RenderRequest(julia=pb.Julia(c=pb.Complex(re=-0.8, im=0.156)), width=40, height=30, max_iter=2000,
                               view=pb.View(center_re_text="0.1", center_im_text="0.2", width_text="1e-25"))
        reply = self.render(req)
        self.assertEqual(reply.stats.precision, pb.PRECISION_PERTURB)

    def test_stream_and_job_of_a_deep_view(self):
        req = deep("1e-30", width=64, height=48)
        unary = self.render(req)
        events = list(self.stub.RenderStream(req, timeout=TIMEOUT))
        data = b"".join(e.chunk.data for e in events if e.HasField("chunk"))
        self.assertEqual(data, unary.data)
        self.assertTrue(any(e.HasField("progress") for e in events))
        self.assertEqual(events[-1].done.precision, pb.PRECISION_PERTURB)
        job = self.stub.SubmitJob(req, timeout=TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while True:
            got = self.stub.GetJob(pb.JobRef(id=job.id), timeout=TIMEOUT)
            if got.state in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED):
                break
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)
        self.assertEqual(got.state, pb.JOB_STATE_SUCCEEDED, got.error_message)
        self.assertEqual(got.stats.precision, pb.PRECISION_PERTURB)
        self.assertEqual(got.request.view.width_text, "1e-30")
        fetched = b"".join(e.chunk.data for e in self.stub.FetchJobResult(pb.JobRef(id=job.id), timeout=TIMEOUT)
                           if e.HasField("chunk"))
        self.assertEqual(fetched, unary.data)


class RefusalTests(DeepCase):
    server_args = ("--deep-max-digits", "400", "--max-cost", "1e9", "--deep-ref-cache", "1M")

    def test_malformed_and_out_of_range_text(self):
        cases = [
            (deep("1e-20", re="-1.25x"), INVALID,
             'view.center_re_text must be a decimal number such as -1.25, 0.3e-2 or 1e-400, got "-1.25x"'),
            (deep("1e-20", im="1e"), INVALID,
             'view.center_im_text must be a decimal number such as -1.25, 0.3e-2 or 1e-400, got "1e"'),
            (deep("0x1p-80"), INVALID,
             'view.width_text must be a decimal number such as -1.25, 0.3e-2 or 1e-400, got "0x1p-80"'),
            (deep("0"), INVALID, 'view.width_text must be a decimal number in (0, 1e6], got "0"'),
            (deep("-1e-30"), INVALID, 'view.width_text must be a decimal number in (0, 1e6], got "-1e-30"'),
            (deep("1e-20", re="0." + "1" * 401), INVALID,
             "view.center_re_text must have at most 400 digits (--deep-max-digits), got 402"),
            (deep("1e-400"), PRECONDITION,
             "view too deep: a pixel spacing of 2.08e-402 at coordinates up to 0.744 needs 402 digits, over this "
             "server's limit of 400 (--deep-max-digits)"),
            (deep("1e-30", device="gpu"), PRECONDITION,
             'deep zoom (PRECISION_PERTURB) runs on the built-in CPU engine or an fp64 OpenCL device, and no '
             'enabled, working one matches device "gpu" (see --list-devices and --cpu-engine)'),
            (deep("1e-30", precision=pb.PRECISION_FP64), PRECONDITION,
             "view too deep: pixel spacing 2.08e-32 at coordinates up to 0.744 is below what fp64 resolves "
             "(2.84e-14); ask for PRECISION_AUTO or PRECISION_PERTURB"),
            (deep("3e-320", precision=pb.PRECISION_PERTURB), PRECONDITION,
             "precision PRECISION_PERTURB cannot resolve a pixel spacing of 6.25e-322: its fp64 offsets would "
             "leave double's exponent range; ask for PRECISION_PERTURB_EXTENDED or PRECISION_AUTO"),
            (deep("1e-30", precision=5), INVALID,
             "precision must be PRECISION_AUTO, PRECISION_FP32, PRECISION_FP64, PRECISION_PERTURB or "
             "PRECISION_PERTURB_EXTENDED, got 5"),
        ]
        for req, code, details in cases:
            with self.subTest(details=details):
                self.assert_refused(req, code, details)

    def test_over_the_budgets(self):
        self.assert_refused(deep("1e-20", re="1e301"), INVALID,
                            'view.center_re_text must be a decimal number of magnitude at most 1e300, got "1e301"')
        # The reference orbit counts in the cost (--max-cost 1e9 on this server) ...
        with self.assertRaises(grpc.RpcError) as cm:
            self.render(deep("1e-300", width=1, height=1, max_iter=1000000))
        self.assertEqual(cm.exception.code(), EXHAUSTED)
        self.assertRegex(cm.exception.details(), r"^request costs up to \S+ iterations \(samples x max_iter, plus "
                                                 r"\S+ for the reference orbit of a 300-digit view\), over the limit "
                                                 r"of 1e\+09$")
        # ... and in memory (--deep-ref-cache 1M here).
        with self.assertRaises(grpc.RpcError) as cm:
            self.render(deep("1e-20", width=1, height=1, max_iter=900000))
        self.assertEqual(cm.exception.code(), EXHAUSTED)
        self.assertRegex(cm.exception.details(), r"^the reference orbit of this view needs \d+ bytes \(max_iter "
                                                 r"900000\), over the 1048576-byte reference cache "
                                                 r"\(--deep-ref-cache\)$")
        self.assert_still_serving()

    def test_stream_and_job_refuse_the_same(self):
        with self.assertRaises(grpc.RpcError) as cm:
            list(self.stub.RenderStream(deep("0"), timeout=TIMEOUT))
        self.assertEqual(cm.exception.code(), INVALID)
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.SubmitJob(deep("1e-400"), timeout=TIMEOUT)
        self.assertEqual(cm.exception.code(), PRECONDITION)


class CacheTests(DeepCase):
    def test_second_render_reuses_the_reference(self):
        req = deep("1e-45", re=DEEP_RE + "7", max_iter=2500)
        before = self.stats()
        first = self.render(req)
        mid = self.stats()
        self.assertEqual(mid.misses, before.misses + 1)
        self.assertEqual(mid.hits, before.hits)
        self.assertGreater(mid.bytes, 0)
        self.assertEqual(mid.budget_bytes, 256 << 20)
        # The same view again (streamed, so not from the image cache) and in another palette, then a
        # tile of it: all hits.
        self.assertEqual(self.stream(req), first.data)
        other = pb.RenderRequest()
        other.CopyFrom(req)
        other.coloring.palette = "viridis"
        self.assertNotEqual(self.render(other).data, first.data)
        tile = pb.RenderRequest()
        tile.CopyFrom(req)
        tile.region.CopyFrom(pb.Region(x=8, y=8, width=16, height=16))
        self.render(tile)
        after = self.stats()
        self.assertEqual(after.misses, before.misses + 1)
        self.assertEqual(after.hits, before.hits + 3)
        # `fractal stats` shows the same counters.
        proc = self.fractal("stats")
        self.assertEqual(proc.returncode, 0, proc.stderr.decode())
        self.assertRegex(proc.stdout.decode(), r"\ndeep refs +%d held, %d bytes \([^)]*\), %d hits, %d misses\n"
                         % (after.entries, after.bytes, after.hits, after.misses))

    def test_concurrent_requests_build_once(self):
        before = self.stats()
        results = []

        def one(palette):
            req = deep("1e-50", re=DEEP_RE + "3", max_iter=200000, width=8, height=8)
            req.coloring.palette = palette
            results.append(self.render(req).stats.iterations)
        threads = [threading.Thread(target=one, args=(p,)) for p in ("inferno", "viridis", "magma")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(len(results), 3)
        self.assertEqual(len(set(results)), 1)
        after = self.stats()
        self.assertEqual(after.misses, before.misses + 1)
        self.assertEqual(after.hits, before.hits + 2)

    def test_cancel_is_prompt(self):
        # A slow deep render: its reference of a million steps, then 300x300 samples of them.
        req = deep("1e-30", re=DEEP_RE + "11", max_iter=1000000, width=300, height=300)
        stream = self.stub.RenderStream(req, timeout=TIMEOUT)
        time.sleep(1.0)
        self.assertEqual(self.stub.GetStats(pb.GetStatsRequest(), timeout=TIMEOUT).running, 1)
        start = time.monotonic()
        stream.cancel()
        while self.stub.GetStats(pb.GetStatsRequest(), timeout=TIMEOUT).running != 0:
            self.assertLess(time.monotonic() - start, 5.0)
            time.sleep(0.005)
        self.assertLess(time.monotonic() - start, 0.25)
        reply = self.render(pb.RenderRequest(width=16, height=16, max_iter=16))
        self.assertEqual(reply.width, 16)


class CliTests(DeepCase):
    def test_from_png_renders_the_same_pixels(self):
        out = os.path.join(self.tmp, "deep.png")
        again = os.path.join(self.tmp, "again.png")
        centre = "%s,%s" % (DEEP_RE, DEEP_IM)
        proc = self.fractal("render", "--mandelbrot", "--center", centre, "--view-width", "2.5e-25",
                            "--max-iter", "40000", "--size", "64x40", "-o", out, "--stats")
        self.assertEqual(proc.returncode, 0, proc.stderr.decode())
        self.assertIn(b"precision   perturb\n", proc.stderr)
        proc = self.fractal("render", "--from", out, "-o", again, "--stream")
        self.assertEqual(proc.returncode, 0, proc.stderr.decode())
        with open(out, "rb") as f1, open(again, "rb") as f2:
            first, second = f1.read(), f2.read()
        self.assertEqual(h.png_pixels(first), h.png_pixels(second))
        self.assertEqual(first, second)
        stored = json_format.Parse(h.png_info(first)[4]["fractal.v1.RenderRequest"], pb.RenderRequest())
        self.assertEqual((stored.view.center_re_text, stored.view.center_im_text, stored.view.width_text),
                         (DEEP_RE, DEEP_IM, "2.5e-25"))
        # Zoomed further from the same PNG: AUTO was recorded, so it climbs again.
        deeper = os.path.join(self.tmp, "deeper.png")
        proc = self.fractal("render", "--from", out, "--view-width", "1e-320", "-o", deeper, "--stats")
        self.assertEqual(proc.returncode, 0, proc.stderr.decode())
        self.assertIn(b"precision   perturb-extended\n", proc.stderr)

    def test_refusal_names_the_flag(self):
        proc = self.fractal("render", "--mandelbrot", "--center", "-1.5x,0", "-o", os.path.join(self.tmp, "x.png"))
        self.assertEqual(proc.returncode, 2)
        proc = self.fractal("render", "--mandelbrot", "--center", "-1.5,0", "--view-width", "1e-420",
                            "-o", os.path.join(self.tmp, "x.png"))
        self.assertEqual(proc.returncode, 4)
        self.assertEqual(proc.stderr, b"fractal: view too deep: a pixel spacing of 1.67e-423 at coordinates up to "
                                      b"1.5 needs 423 digits, over this server's limit of 400 (--deep-max-digits)\n")
        # A malformed decimal is the tool's own usage error; one the server refuses names the flag.
        self.assertIn(b"--center: '-1.5x,0' is not RE,IM", self.fractal(
            "render", "--center", "-1.5x,0", "-o", os.path.join(self.tmp, "x.png")).stderr)
        proc = self.fractal("render", "--mandelbrot", "--view-width", "-1e-400", "-o", os.path.join(self.tmp, "x.png"))
        self.assertEqual((proc.returncode, proc.stderr),
                         (3, b'fractal: --view-width must be a decimal number in (0, 1e6], got "-1e-400"\n'))

    def test_zoom_renders_frames_and_resumes(self):
        frames = os.path.join(self.tmp, "frames")
        os.mkdir(frames)
        args = ("zoom", "--mandelbrot", "--center", "%s,0" % DEEP_RE, "--start-width", "1e-12",
                "--view-width", "1e-16", "--frames-per-halving", "2", "--size", "24x16", "--max-iter", "20000",
                "-o", frames)
        proc = self.fractal(*args)
        self.assertEqual(proc.returncode, 0, proc.stderr.decode())
        names = sorted(os.listdir(frames))
        # log2(1e4) = 13.3 halvings at 2 frames each: frames 0..27, the last exactly 1e-16 wide.
        self.assertEqual(names, ["frame-%05d.png" % k for k in range(28)])
        first = {}
        for name in names:
            with open(os.path.join(frames, name), "rb") as f:
                first[name] = f.read()
        last = json_format.Parse(h.png_info(first["frame-00027.png"])[4]["fractal.v1.RenderRequest"],
                                 pb.RenderRequest())
        self.assertEqual(last.view.width_text, "1e-16")
        mid = json_format.Parse(h.png_info(first["frame-00002.png"])[4]["fractal.v1.RenderRequest"],
                                pb.RenderRequest())
        self.assertEqual(mid.view.width_text, "5.00000000000000e-13")
        # Two frames lost: only those are rendered again, the same bytes.
        os.remove(os.path.join(frames, "frame-00003.png"))
        os.remove(os.path.join(frames, "frame-00020.png"))
        proc = self.fractal(*args)
        self.assertEqual(proc.returncode, 0, proc.stderr.decode())
        self.assertIn(b"zoom: 28 frames in %s, 2 rendered, 26 already there\n" % frames.encode(), proc.stderr)
        for name in names:
            with open(os.path.join(frames, name), "rb") as f:
                self.assertEqual(f.read(), first[name], name)
        self.assertEqual(sorted(os.listdir(frames)), names)


if __name__ == "__main__":
    unittest.main()
