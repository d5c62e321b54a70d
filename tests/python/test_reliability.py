"""Regression tests for defects found under test: dead calls holding queue slots, strings cut at
an embedded NUL, a job submitted right after another expired. Each asserts the exact status and
that the server still serves the next request."""
import os
import signal
import socket
import threading
import time
import unittest

import fractald_harness as h  # noqa: E402  (sets sys.path for the generated stubs)
from fractal_health import health_pb2, health_pb2_grpc  # noqa: E402

import grpc  # noqa: E402
from fractal.v1 import fractal_pb2 as pb  # noqa: E402
from fractal.v1 import fractal_pb2_grpc as pb_grpc  # noqa: E402

TIMEOUT = 60

# Workload B's deep view at 8192x8192: escape-dominated (no interior shortcut helps), about 7e10
# iterations, many seconds on two cores; streamed (it is far over the unary reply limit), it holds
# the only render worker while the test runs.
LONG = pb.RenderRequest(julia=pb.Julia(c=pb.Complex(re=-0.8, im=0.156)), width=8192, height=8192,
                        max_iter=3000, view=pb.View(center=pb.Complex(re=0.17304, im=0.23854), width=0.0005),
                        format=pb.FORMAT_RAW_U32)
TINY = pb.RenderRequest(width=16, height=16, max_iter=16)


def wait_for(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


class DeadCallsLeaveTheQueueTests(unittest.TestCase):
    def setUp(self):
        self.server = h.Server("--workers", "1", "--queue", "4", "--spool-dir", "")
        self.channel = grpc.insecure_channel(self.server.target)
        self.stub = pb_grpc.RendererStub(self.channel)

    def tearDown(self):
        self.channel.close()
        self.assertEqual(self.server.stop(), 0)

    def stats(self):
        return self.stub.GetStats(pb.GetStatsRequest(), timeout=10)

    def test_timed_out_and_cancelled_calls_free_their_slots(self):
        long_call = self.stub.RenderStream(LONG, timeout=TIMEOUT)
        self.assertTrue(wait_for(lambda: self.stats().running == 1), "the long render never started")
        # Two die by deadline, two by client cancel, while they wait behind the long render.
        for _ in range(2):
            with self.assertRaises(grpc.RpcError) as cm:
                self.stub.Render(TINY, timeout=0.05)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        for _ in range(2):
            f = self.stub.Render.future(TINY, timeout=TIMEOUT)
            self.assertTrue(wait_for(lambda: self.stats().queue_depth >= 1))
            f.cancel()
        self.assertTrue(wait_for(lambda: self.stats().queue_depth == 0),
                        "dead calls still hold %d queue slots" % self.stats().queue_depth)
        # Four live calls fit again: none is turned away while the long render runs.
        live = [self.stub.Render.future(TINY, timeout=TIMEOUT) for _ in range(4)]
        self.assertTrue(wait_for(lambda: self.stats().queue_depth == 4))
        long_call.cancel()
        for f in live:
            reply = f.result()
            self.assertEqual((reply.width, reply.height), (16, 16))
        # A worker counts itself done just after its reply goes out, so a client may see the
        # reply first (by some milliseconds under sanitizers): wait for the count, briefly.
        self.assertTrue(wait_for(lambda: (lambda st: (st.queue_depth, st.running) == (0, 0))(self.stats())),
                        "still queued/running after every call answered: %s" % self.stats())


class SubmitAfterExpiryTests(unittest.TestCase):
    """A submit that first deletes an expired job once journaled the new job with an id that was
    never generated: the client got an id that GetJob did not know, and ListJobs returned bytes
    that were not UTF-8."""

    def setUp(self):
        self.server = h.Server("--job-retention-ms", "300")
        self.channel = grpc.insecure_channel(self.server.target)
        self.stub = pb_grpc.RendererStub(self.channel)

    def tearDown(self):
        self.channel.close()
        self.assertEqual(self.server.stop(), 0)

    def wait_done(self, job_id):
        self.assertTrue(wait_for(lambda: self.stub.GetJob(pb.JobRef(id=job_id), timeout=10).state
                                 == pb.JOB_STATE_SUCCEEDED, timeout=60), job_id)

    def test_submit_right_after_a_job_expired_gets_a_real_id(self):
        first = self.stub.SubmitJob(TINY, timeout=TIMEOUT)
        self.wait_done(first.id)
        time.sleep(0.6)  # past the retention: the next submit expires the first job
        ids = set()
        for _ in range(3):
            job = self.stub.SubmitJob(TINY, timeout=TIMEOUT)
            self.assertRegex(job.id, r"^[a-z2-7]{26}$")
            self.assertNotIn(job.id, ids)
            ids.add(job.id)
            self.assertEqual(self.stub.GetJob(pb.JobRef(id=job.id), timeout=10).id, job.id)
            self.wait_done(job.id)
            time.sleep(0.6)
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.GetJob(pb.JobRef(id=first.id), timeout=10)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
        listed = self.stub.ListJobs(pb.ListJobsRequest(), timeout=10)  # parses: every id is UTF-8
        for j in listed.jobs:
            self.assertRegex(j.id, r"^[a-z2-7]{26}$")


class EmbeddedNulTests(unittest.TestCase):
    """protobuf-c hands strings over NUL-terminated: "cpu\0evil" used to render on the CPU engine
    and "viridis\0evil" as viridis. A proto3 string may hold NUL bytes; such a value names nothing."""

    @classmethod
    def setUpClass(cls):
        cls.server = h.Server()
        cls.channel = grpc.insecure_channel(cls.server.target)
        cls.stub = pb_grpc.RendererStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        assert cls.server.stop() == 0

    def assert_invalid(self, call, message):
        with self.assertRaises(grpc.RpcError) as cm:
            call()
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT, cm.exception.details())
        self.assertEqual(cm.exception.details(), message)
        reply = self.stub.Render(TINY, timeout=TIMEOUT)
        self.assertEqual((reply.width, reply.height), (16, 16))

    def test_every_string_field_refuses_a_nul(self):
        cases = [
            (lambda: self.stub.Render(pb.RenderRequest(width=8, height=8, device="cpu\0evil"), timeout=TIMEOUT),
             "device must not contain a NUL byte"),
            (lambda: self.stub.Render(pb.RenderRequest(width=8, height=8, device="\0"), timeout=TIMEOUT),
             "device must not contain a NUL byte"),
            (lambda: self.stub.Render(pb.RenderRequest(width=8, height=8,
                                                       coloring=pb.Coloring(palette="viridis\0evil")),
                                      timeout=TIMEOUT),
             "coloring.palette must not contain a NUL byte"),
            (lambda: list(self.stub.RenderStream(pb.RenderRequest(width=8, height=8, device="gpu\0"),
                                                 timeout=TIMEOUT)),
             "device must not contain a NUL byte"),
            (lambda: self.stub.SubmitJob(pb.RenderRequest(width=8, height=8,
                                                          coloring=pb.Coloring(palette="magma\0")),
                                         timeout=TIMEOUT),
             "coloring.palette must not contain a NUL byte"),
            (lambda: self.stub.GetJob(pb.JobRef(id="abc\0def"), timeout=TIMEOUT), "id must not contain a NUL byte"),
            (lambda: self.stub.CancelJob(pb.JobRef(id="\0"), timeout=TIMEOUT), "id must not contain a NUL byte"),
            (lambda: list(self.stub.FetchJobResult(pb.JobRef(id="x\0"), timeout=TIMEOUT)),
             "id must not contain a NUL byte"),
            (lambda: health_pb2_grpc.HealthStub(self.channel).Check(
                health_pb2.HealthCheckRequest(service="fractal.v1.Renderer\0"), timeout=TIMEOUT),
             "service must not contain a NUL byte"),
        ]
        for call, message in cases:
            with self.subTest(message=message):
                self.assert_invalid(call, message)

    def test_a_string_without_nul_still_works(self):
        reply = self.stub.Render(pb.RenderRequest(width=8, height=8, device="cpu",
                                                  coloring=pb.Coloring(palette="viridis")), timeout=TIMEOUT)
        self.assertEqual(reply.width, 8)


class DrainTests(unittest.TestCase):
    """After SIGTERM the listener stays open for --drain-notice-ms: health answers NOT_SERVING (a
    load balancer that polls sees the drain), new work gets UNAVAILABLE. Then it closes (refused
    connections, which a proxy retries elsewhere) while the work in flight goes on."""

    def health(self, channel):
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status

    def test_health_says_not_serving_for_the_notice_then_the_listener_closes_as_work_drains(self):
        server = h.Server("--grace-ms", "20000", "--drain-notice-ms", "1500", "--spool-dir", "")
        try:
            with grpc.insecure_channel(server.target) as ch:
                stub = pb_grpc.RendererStub(ch)
                self.assertEqual(self.health(ch), health_pb2.HealthCheckResponse.SERVING)
                stream = stub.RenderStream(LONG, timeout=TIMEOUT)
                chunks = []
                reader = threading.Thread(target=lambda: chunks.extend(1 for _ in stream), daemon=True)
                reader.start()
                self.assertTrue(wait_for(lambda: len(chunks) > 0), "the long stream sent nothing")
                start = time.monotonic()
                server.proc.send_signal(signal.SIGTERM)
                time.sleep(0.3)
                for _ in range(3):
                    self.assertEqual(self.health(ch), health_pb2.HealthCheckResponse.NOT_SERVING)
                    with self.assertRaises(grpc.RpcError) as cm:
                        stub.Render(TINY, timeout=5)
                    self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
                    self.assertEqual(cm.exception.details(), "server is shutting down")
                    time.sleep(0.2)
                self.assertLess(time.monotonic() - start, 1.5, "the checks above outlasted the notice")
                # After the notice the listener is closed: a new connection is refused...
                def refused():
                    try:
                        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
                        return False
                    except OSError:
                        return True
                self.assertTrue(wait_for(refused), "the listener stayed open after the notice")
                # ...while the stream in flight still flows.
                seen = len(chunks)
                self.assertTrue(wait_for(lambda: len(chunks) > seen), "the stream in flight stopped")
                self.assertIsNone(server.proc.poll(), "fractald exited while a stream was in flight")
                stream.cancel()
                reader.join(10)
            server.proc.wait(15)
        finally:
            self.assertEqual(server.stop(), 0)

    def test_drain_notice_keeps_health_answering_when_idle(self):
        server = h.Server("--drain-notice-ms", "1500", "--spool-dir", "")
        try:
            with grpc.insecure_channel(server.target) as ch:
                self.assertEqual(self.health(ch), health_pb2.HealthCheckResponse.SERVING)
                start = time.monotonic()
                server.proc.send_signal(signal.SIGTERM)
                time.sleep(0.5)
                self.assertEqual(self.health(ch), health_pb2.HealthCheckResponse.NOT_SERVING)
                server.proc.wait(15)
                self.assertGreaterEqual(time.monotonic() - start, 1.4)
        finally:
            self.assertEqual(server.stop(), 0)


class JobResultIntegrityTests(unittest.TestCase):
    def setUp(self):
        self.server = h.Server()
        self.channel = grpc.insecure_channel(self.server.target)
        self.stub = pb_grpc.RendererStub(self.channel)

    def tearDown(self):
        self.channel.close()
        self.assertEqual(self.server.stop(), 0)

    def finished_job(self, req):
        job = self.stub.SubmitJob(req, timeout=TIMEOUT)
        self.assertTrue(wait_for(lambda: self.stub.GetJob(pb.JobRef(id=job.id), timeout=10).state
                                 == pb.JOB_STATE_SUCCEEDED, timeout=60))
        return job.id

    def test_a_damaged_result_is_data_loss_before_any_byte(self):
        # Big enough for several 1 MiB chunks: the damage sits in the last one.
        job_id = self.finished_job(pb.RenderRequest(width=1024, height=1024, max_iter=64,
                                                    format=pb.FORMAT_RAW_U32))
        path = os.path.join(self.server.spool, "results", job_id)
        size = os.path.getsize(path)
        self.assertEqual(size, 1024 * 1024 * 4)
        with open(path, "r+b") as f:
            f.seek(size - 1)
            last = f.read(1)
            f.seek(size - 1)
            f.write(bytes([last[0] ^ 0xff]))
        events = []
        with self.assertRaises(grpc.RpcError) as cm:
            for ev in self.stub.FetchJobResult(pb.JobRef(id=job_id), timeout=TIMEOUT):
                events.append(ev)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.DATA_LOSS)
        self.assertIn("damaged on disk", cm.exception.details())
        self.assertEqual(events, [], "damaged bytes were streamed")
        job = self.stub.GetJob(pb.JobRef(id=job_id), timeout=10)
        self.assertEqual(job.state, pb.JOB_STATE_FAILED)
        self.assertEqual(job.error_code, grpc.StatusCode.DATA_LOSS.value[0])
        reply = self.stub.Render(TINY, timeout=TIMEOUT)
        self.assertEqual(reply.width, 16)

    def test_a_missing_result_is_data_loss(self):
        job_id = self.finished_job(TINY)
        os.unlink(os.path.join(self.server.spool, "results", job_id))
        with self.assertRaises(grpc.RpcError) as cm:
            list(self.stub.FetchJobResult(pb.JobRef(id=job_id), timeout=TIMEOUT))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.DATA_LOSS)


class DiskBudgetTests(unittest.TestCase):
    """When results fill --job-disk-budget, new jobs are refused (RESOURCE_EXHAUSTED) and results
    already made stay fetchable: accepted work is never evicted to make room."""

    def test_full_budget_refuses_new_jobs_and_keeps_results(self):
        server = h.Server("--job-disk-budget", "2M")
        try:
            with grpc.insecure_channel(server.target) as ch:
                stub = pb_grpc.RendererStub(ch)
                raw = pb.RenderRequest(width=512, height=512, max_iter=32, format=pb.FORMAT_RAW_U32)  # 1 MiB
                ids = []
                for _ in range(2):
                    ids.append(stub.SubmitJob(raw, timeout=TIMEOUT).id)
                    self.assertTrue(wait_for(lambda: stub.GetJob(pb.JobRef(id=ids[-1]), timeout=10).state
                                             == pb.JOB_STATE_SUCCEEDED, timeout=60))
                with self.assertRaises(grpc.RpcError) as cm:
                    stub.SubmitJob(TINY, timeout=TIMEOUT)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
                self.assertIn("job results fill the spool's disk budget (2097152 of 2097152 bytes)",
                              cm.exception.details())
                for job_id in ids:
                    data = b"".join(ev.chunk.data for ev in stub.FetchJobResult(pb.JobRef(id=job_id), timeout=TIMEOUT)
                                    if ev.WhichOneof("event") == "chunk")
                    self.assertEqual(len(data), 512 * 512 * 4)
                self.assertEqual(stub.Render(TINY, timeout=TIMEOUT).width, 16)
        finally:
            self.assertEqual(server.stop(), 0)


if __name__ == "__main__":
    unittest.main()
