"""Issue 4 behaviour from Python grpcio: RenderStream (chunks, progress, equality with Render),
Health.Watch, GetStats, admission control with a retry-after hint, SIGTERM while streaming."""
import os
import signal
import threading
import time
import unittest

import fractald_harness as h
from stalled_client import StalledConnection

import grpc
from fractal.v1 import fractal_pb2 as pb
from fractal.v1 import fractal_pb2_grpc as pb_grpc
from fractal_health import health_pb2, health_pb2_grpc

OPTIONS = [("grpc.max_receive_message_length", 256 << 20)]
# Workload B's deep view: every pixel escapes, after about 1100 iterations on average, so no
# interior shortcut (cycle detection, rectangle fill) makes these renders short. fp64 (too deep
# for fp32).
SLOW_JULIA = pb.Julia(c=pb.Complex(re=-0.8, im=0.156))
SLOW_VIEW = pb.View(center=pb.Complex(re=0.17304, im=0.23854), width=0.0005)


def peak_rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def reassemble(events):
    """(image bytes, chunks, progress events, done stats) from a RenderStream; checks the order."""
    data, chunks, progress, done = bytearray(), [], [], None
    for ev in events:
        kind = ev.WhichOneof("event")
        assert done is None, "event after done"
        if kind == "chunk":
            assert ev.chunk.offset == len(data), "chunk offsets must be contiguous"
            assert 0 < len(ev.chunk.data) <= 1 << 20
            data += ev.chunk.data
            chunks.append(ev.chunk)
        elif kind == "progress":
            progress.append(ev.progress)
        elif kind == "done":
            done = ev.done
    assert done is not None, "stream ended without done"
    return bytes(data), chunks, progress, done


class ServerCase(unittest.TestCase):
    server_args = ()

    @classmethod
    def setUpClass(cls):
        cls.server = h.Server(*cls.server_args)
        cls.channel = grpc.insecure_channel(cls.server.target, options=OPTIONS)
        cls.stub = pb_grpc.RendererStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        assert cls.server.stop() == 0


class StreamTests(ServerCase):
    def test_stream_equals_unary_byte_for_byte(self):
        for req in (pb.RenderRequest(),
                    pb.RenderRequest(width=700, height=500, supersample=2, coloring=pb.Coloring(palette="twilight")),
                    pb.RenderRequest(width=300, height=200, format=pb.FORMAT_RAW_F32),
                    pb.RenderRequest(width=300, height=200, format=pb.FORMAT_PNG16,
                                     region=pb.Region(x=10, y=20, width=100, height=50))):
            with self.subTest(req=str(req)):
                unary = self.stub.Render(req, timeout=60)
                data, chunks, _, done = reassemble(self.stub.RenderStream(req, timeout=60))
                self.assertEqual(data, unary.data)
                self.assertEqual(chunks[0].content_type, unary.content_type)
                self.assertEqual((chunks[0].width, chunks[0].height), (unary.width, unary.height))
                self.assertEqual(done.iterations, unary.stats.iterations)

    def test_big_stream_comes_in_bands_with_progress(self):
        req = pb.RenderRequest(width=3000, height=2000, max_iter=64, coloring=pb.Coloring(cycle=2))
        data, chunks, progress, done = reassemble(self.stub.RenderStream(req, timeout=120))
        self.assertGreater(len(chunks), 2)
        self.assertGreater(len(progress), 2)
        rows = [p.rows_done for p in progress]
        self.assertEqual(rows, sorted(rows))
        self.assertEqual(rows[-1], 2000)
        self.assertEqual(progress[-1].samples_done, progress[-1].samples_total)
        self.assertEqual(h.png_info(data)[:2], (3000, 2000))
        self.assertEqual(done.samples, 3000 * 2000)

    def test_stream_is_not_bound_by_the_message_limit(self):
        # 5000 x 5000 raw is 100 MB: refused by Render, streamed by RenderStream.
        req = pb.RenderRequest(width=5000, height=5000, max_iter=1, format=pb.FORMAT_RAW_U32)
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.Render(req, timeout=60)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        total = 0
        for ev in self.stub.RenderStream(req, timeout=120):
            if ev.WhichOneof("event") == "chunk":
                total += len(ev.chunk.data)
        self.assertEqual(total, 5000 * 5000 * 4)

    def test_huge_stream_keeps_server_memory_bounded(self):
        # 16384 x 16384 raw counts: 1 GiB on the wire. The server holds one band (a million
        # samples) and one 1 MiB chunk at a time, so its peak RSS stays far below the image.
        # ASan's shadow memory and quarantine (and PoCL's compiler under it) are not our memory:
        # the bound is checked for real in the normal build.
        bound = (1 << 30) if os.environ.get("FRACTALD_SANITIZED") else 256 << 20
        req = pb.RenderRequest(width=16384, height=16384, max_iter=4, format=pb.FORMAT_RAW_U32)
        total = 0
        for ev in self.stub.RenderStream(req, timeout=300):
            if ev.WhichOneof("event") == "chunk":
                total += len(ev.chunk.data)
        self.assertEqual(total, 16384 * 16384 * 4)
        peak = peak_rss_bytes(self.server.proc.pid)
        self.assertLess(peak, bound, "server peak RSS %d MiB" % (peak >> 20))

    def test_stream_bad_input_is_refused_before_any_event(self):
        stream = self.stub.RenderStream(pb.RenderRequest(supersample=9), timeout=30)
        with self.assertRaises(grpc.RpcError) as cm:
            list(stream)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("supersample must be 1..8, got 9", cm.exception.details())

    def test_cancelled_stream_frees_the_worker(self):
        req = pb.RenderRequest(julia=SLOW_JULIA, width=8192, height=8192, max_iter=3000, view=SLOW_VIEW)
        stream = self.stub.RenderStream(req, timeout=60)
        next(stream)  # the first band's events: the render is under way
        stream.cancel()
        reply = self.stub.Render(pb.RenderRequest(width=16, height=16), timeout=10)
        self.assertEqual(reply.width, 16)


class HealthAndStatsTests(ServerCase):
    def test_watch_sends_the_current_status(self):
        health = health_pb2_grpc.HealthStub(self.channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service="fractal.v1.Renderer"), timeout=30)
        self.assertEqual(next(watch).status, health_pb2.HealthCheckResponse.SERVING)
        watch.cancel()
        unknown = health.Watch(health_pb2.HealthCheckRequest(service="nope"), timeout=30)
        self.assertEqual(next(unknown).status, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
        unknown.cancel()
        # The server still answers after watchers come and go.
        self.assertEqual(health.Check(health_pb2.HealthCheckRequest(), timeout=10).status,
                         health_pb2.HealthCheckResponse.SERVING)

    def test_stats_count_requests_by_status(self):
        # Which device computes a tiny render is up to the scheduler: count over all of them.
        self.stub.Render(pb.RenderRequest(width=8, height=8), timeout=30)
        with self.assertRaises(grpc.RpcError):
            self.stub.Render(pb.RenderRequest(width=0), timeout=30)
        stats = self.stub.GetStats(pb.GetStatsRequest(), timeout=10)
        counts = {(m.method, m.code): m.count for m in stats.requests}
        self.assertGreaterEqual(counts.get(("Render", 0), 0), 1)
        self.assertGreaterEqual(counts.get(("Render", 3), 0), 1)
        self.assertGreater(stats.uptime_s, 0)
        self.assertIn("cpu", [d.id for d in stats.devices])
        self.assertGreater(sum(d.iterations for d in stats.devices), 0)
        self.assertTrue(all(d.busy_ms >= 0 for d in stats.devices))


class AdmissionTests(ServerCase):
    # One worker, one waiting place: the third concurrent render is refused at once.
    server_args = ("--workers", "1", "--queue", "1", "--spool-dir", "")

    def test_full_queue_is_refused_with_a_retry_hint(self):
        slow = pb.RenderRequest(julia=SLOW_JULIA, width=4096, height=4096, max_iter=2000, view=SLOW_VIEW)
        running = self.stub.Render.future(slow, timeout=60)
        time.sleep(0.3)
        waiting = self.stub.Render.future(slow, timeout=60)
        time.sleep(0.3)
        try:
            with self.assertRaises(grpc.RpcError) as cm:
                self.stub.Render(pb.RenderRequest(width=8, height=8), timeout=10)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.assertIn("queue is full", cm.exception.details())
            hints = dict(cm.exception.trailing_metadata())
            self.assertGreaterEqual(int(hints["retry-after-ms"]), 100)
            # Cheap calls are answered by the RPC thread while every worker is busy.
            start = time.monotonic()
            self.stub.ListDevices(pb.ListDevicesRequest(), timeout=10)
            health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            self.assertLess(time.monotonic() - start, 1.0)
        finally:
            running.cancel()
            waiting.cancel()

    def test_inflight_budget(self):
        # Separate server: a budget that one slow render fills.
        server = h.Server("--max-inflight-cost", "2e10")
        try:
            with grpc.insecure_channel(server.target, options=OPTIONS) as ch:
                stub = pb_grpc.RendererStub(ch)
                slow = pb.RenderRequest(julia=SLOW_JULIA, width=4000, height=4000, max_iter=1000, view=SLOW_VIEW)
                running = stub.Render.future(slow, timeout=60)
                time.sleep(0.3)
                try:
                    with self.assertRaises(grpc.RpcError) as cm:
                        stub.Render(slow, timeout=10)
                    self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
                    self.assertIn("in flight", cm.exception.details())
                    self.assertIn("retry-after-ms", dict(cm.exception.trailing_metadata()))
                    # Small work still fits next to it.
                    self.assertEqual(stub.Render(pb.RenderRequest(width=8, height=8), timeout=10).width, 8)
                finally:
                    running.cancel()
        finally:
            self.assertEqual(server.stop(), 0)


class ZeroQueueTests(ServerCase):
    # --queue 0: nothing may wait, but an idle worker still takes a render at once.
    server_args = ("--workers", "1", "--queue", "0", "--spool-dir", "")

    def test_idle_worker_serves_and_a_busy_one_refuses(self):
        self.assertEqual(self.stub.Render(pb.RenderRequest(width=8, height=8), timeout=10).width, 8)
        slow = pb.RenderRequest(julia=SLOW_JULIA, width=4096, height=4096, max_iter=2000, view=SLOW_VIEW)
        # The worker counts itself free just after it sends the first reply, so the slow render
        # can come a moment too early and be refused: then it is sent again.
        running = self.stub.Render.future(slow, timeout=60)
        try:
            deadline = time.monotonic() + 10
            while self.stub.GetStats(pb.GetStatsRequest(), timeout=10).running != 1:
                self.assertLess(time.monotonic(), deadline, "the slow render never started")
                if running.done():
                    self.assertEqual(running.code(), grpc.StatusCode.RESOURCE_EXHAUSTED, running.details())
                    running = self.stub.Render.future(slow, timeout=60)
                time.sleep(0.02)
            # Not the image cached above: this one needs a worker.
            with self.assertRaises(grpc.RpcError) as cm:
                self.stub.Render(pb.RenderRequest(width=9, height=8), timeout=10)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.assertEqual(cm.exception.details(), "render queue is full (0 waiting, 1 running); retry later")
        finally:
            running.cancel()
        # The worker is free again once the cancelled render stops: the next render is served.
        deadline = time.monotonic() + 10
        while True:
            try:
                self.assertEqual(self.stub.Render(pb.RenderRequest(width=10, height=8), timeout=10).width, 10)
                break
            except grpc.RpcError as err:
                self.assertEqual(err.code(), grpc.StatusCode.RESOURCE_EXHAUSTED, err.details())
                self.assertLess(time.monotonic(), deadline, "never served after the cancel")
                time.sleep(0.05)


class HostileReaderTests(unittest.TestCase):
    """Readers that never take the server's data (HTTP/2 window 0), from the code review."""

    def test_stalled_streams_do_not_hold_the_workers(self):
        server = h.Server("--workers", "2", "--spool-dir", "", "--stream-write-timeout-ms", "500")
        conn = StalledConnection(server.port)
        try:
            req = pb.RenderRequest(width=64, height=64).SerializeToString()
            for _ in range(4):  # more than the workers, no deadline
                conn.call("/fractal.v1.Renderer/RenderStream", req)
            time.sleep(0.3)
            with grpc.insecure_channel(server.target) as ch:
                start = time.monotonic()
                self.assertEqual(pb_grpc.RendererStub(ch).Render(pb.RenderRequest(width=16, height=16),
                                                                 timeout=20).width, 16)
                self.assertLess(time.monotonic() - start, 10.0)
        finally:
            conn.close()
            self.assertEqual(server.stop(), 0)

    def test_sigterm_is_not_held_by_a_watcher_that_never_reads(self):
        server = h.Server("--grace-ms", "1000")
        conn = StalledConnection(server.port)
        try:
            conn.call("/grpc.health.v1.Health/Watch", health_pb2.HealthCheckRequest().SerializeToString())
            time.sleep(0.3)
            start = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            self.assertEqual(server.proc.wait(15), 0)
            self.assertLess(time.monotonic() - start, 5.0)
        finally:
            conn.close()
            server.stop()

    def test_watchers_are_capped(self):
        server = h.Server("--max-watchers", "2")
        try:
            with grpc.insecure_channel(server.target) as ch:
                health = health_pb2_grpc.HealthStub(ch)
                watches = [health.Watch(health_pb2.HealthCheckRequest(), timeout=30) for _ in range(2)]
                for w in watches:
                    self.assertEqual(next(w).status, health_pb2.HealthCheckResponse.SERVING)
                with self.assertRaises(grpc.RpcError) as cm:
                    next(health.Watch(health_pb2.HealthCheckRequest(), timeout=30))
                self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
                for w in watches:
                    w.cancel()
        finally:
            self.assertEqual(server.stop(), 0)


class DrainTests(unittest.TestCase):
    def test_sigterm_while_streaming(self):
        server = h.Server("--grace-ms", "5000")
        try:
            with grpc.insecure_channel(server.target, options=OPTIONS) as ch:
                stub = pb_grpc.RendererStub(ch)
                health = health_pb2_grpc.HealthStub(ch)
                watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=60)
                self.assertEqual(next(watch).status, health_pb2.HealthCheckResponse.SERVING)
                # A stream of about a second: it finishes inside the grace period.
                req = pb.RenderRequest(width=2000, height=2000, max_iter=500)
                stream = stub.RenderStream(req, timeout=60)
                first = next(stream)
                server.proc.send_signal(signal.SIGTERM)
                self.assertEqual(next(watch).status, health_pb2.HealthCheckResponse.NOT_SERVING)
                data, _, _, done = reassemble([first, *stream])
                self.assertEqual(h.png_info(data)[:2], (2000, 2000))
                with self.assertRaises(grpc.RpcError) as cm:
                    list(watch)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
        finally:
            self.assertEqual(server.stop(), 0)

    def test_watch_streams_stay_open_with_not_serving_until_the_listener_closes(self):
        # Ending a Watch stream when the drain begins would make gRPC's client-side health checker
        # reopen it at once, in a loop, for the whole drain: streams hear NOT_SERVING and stay open.
        server = h.Server("--grace-ms", "5000", "--drain-notice-ms", "1500")
        try:
            with grpc.insecure_channel(server.target, options=OPTIONS) as ch:
                health = health_pb2_grpc.HealthStub(ch)
                early = health.Watch(health_pb2.HealthCheckRequest(), timeout=30)
                self.assertEqual(next(early).status, health_pb2.HealthCheckResponse.SERVING)
                start = time.monotonic()
                server.proc.send_signal(signal.SIGTERM)
                self.assertEqual(next(early).status, health_pb2.HealthCheckResponse.NOT_SERVING)
                late = health.Watch(health_pb2.HealthCheckRequest(), timeout=30)
                self.assertEqual(next(late).status, health_pb2.HealthCheckResponse.NOT_SERVING)
                for watch in (early, late):
                    with self.assertRaises(grpc.RpcError) as cm:
                        next(watch)
                    self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
                    self.assertEqual(cm.exception.details(), "server is shutting down")
                # Both ended only when the listener closed, after the drain notice.
                self.assertGreaterEqual(time.monotonic() - start, 1.4)
                self.assertEqual(server.proc.wait(10), 0)
        finally:
            server.stop()

    def test_sigterm_cancels_what_outlives_the_grace_period(self):
        server = h.Server("--grace-ms", "300")
        try:
            with grpc.insecure_channel(server.target, options=OPTIONS) as ch:
                stub = pb_grpc.RendererStub(ch)
                slow = pb.RenderRequest(julia=SLOW_JULIA, width=8192, height=8192, max_iter=3000, view=SLOW_VIEW)
                future = stub.Render.future(slow, timeout=60)
                time.sleep(0.3)
                start = time.monotonic()
                server.proc.send_signal(signal.SIGTERM)
                with self.assertRaises(grpc.RpcError) as cm:
                    future.result()
                self.assertIn(cm.exception.code(), (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED))
                self.assertEqual(server.proc.wait(10), 0)
                self.assertLess(time.monotonic() - start, 3.0)
        finally:
            server.stop()


if __name__ == "__main__":
    unittest.main()
