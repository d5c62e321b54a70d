"""The submit-and-poll flow from Python grpcio: SubmitJob, GetJob, FetchJobResult, CancelJob,
ListJobs; durability across kill -9 and SIGTERM; retention; jobs disabled."""
import signal
import time
import unittest

import fractald_harness as h
from test_service import SLOW_JULIA, reassemble

import grpc
from fractal.v1 import fractal_pb2 as pb
from fractal.v1 import fractal_pb2_grpc as pbg

OPTIONS = [("grpc.max_receive_message_length", 256 << 20)]
FINISHED = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)
SLOW = pb.RenderRequest(julia=SLOW_JULIA, width=8192, height=8192, max_iter=3000, view=pb.View(width=0.5))


def wait_job(stub, job_id, timeout=120, states=FINISHED):
    deadline = time.monotonic() + timeout
    while True:
        job = stub.GetJob(pb.JobRef(id=job_id), timeout=10)
        if job.state in states:
            return job
        if time.monotonic() > deadline:
            raise AssertionError("job %s still %s" % (job_id, pb.JobState.Name(job.state)))
        time.sleep(0.05)


def fetch(stub, job_id):
    data, chunks, _, done = reassemble(stub.FetchJobResult(pb.JobRef(id=job_id), timeout=60))
    return data, chunks, done


class JobCase(unittest.TestCase):
    server_args = ()

    def setUp(self):
        self.server = h.Server(*self.server_args)
        self.channel = grpc.insecure_channel(self.server.target, options=OPTIONS)
        self.stub = pbg.RendererStub(self.channel)

    def tearDown(self):
        self.channel.close()
        self.assertEqual(self.server.stop(), 0)


class JobFlowTests(JobCase):
    def test_submit_poll_fetch_equals_render(self):
        req = pb.RenderRequest(width=500, height=300, max_iter=400, coloring=pb.Coloring(palette="plasma"))
        job = self.stub.SubmitJob(req, timeout=10)
        self.assertEqual(len(job.id), 26)
        self.assertIn(job.state, (pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING))
        self.assertGreater(job.created_unix_ms, 0)
        # The job keeps the resolved request: every default written out, the same image.
        self.assertEqual((job.request.width, job.request.height, job.request.max_iter), (500, 300, 400))
        self.assertEqual(job.request.julia.c.re, -0.8)
        done = wait_job(self.stub, job.id)
        self.assertEqual(done.state, pb.JOB_STATE_SUCCEEDED, done.error_message)
        self.assertEqual((done.width, done.height, done.content_type), (500, 300, "image/png"))
        self.assertEqual(done.progress.rows_done, 300)
        self.assertGreater(done.expires_unix_ms, done.finished_unix_ms)
        data, chunks, stats = fetch(self.stub, job.id)
        self.assertEqual(len(data), done.result_bytes)
        self.assertEqual(data, self.stub.Render(req, timeout=60).data)
        self.assertEqual(stats.samples, 500 * 300)
        # Fetching twice gives the same bytes.
        self.assertEqual(fetch(self.stub, job.id)[0], data)

    def test_job_with_the_most_custom_stops_runs(self):
        # 254 stops inside (0, 1) become 256 once extended to 0 and 1: the stored (resolved)
        # request must validate again when the job runs.
        stops = [pb.ColorStop(position=0.1 + 0.8 * k / 253, color=pb.Color(r=k)) for k in range(254)]
        req = pb.RenderRequest(width=40, height=30, coloring=pb.Coloring(stops=stops))
        job = wait_job(self.stub, self.stub.SubmitJob(req, timeout=10).id)
        self.assertEqual(job.state, pb.JOB_STATE_SUCCEEDED, job.error_message)
        self.assertEqual(len(job.request.coloring.stops), 256)
        self.assertEqual(fetch(self.stub, job.id)[0], self.stub.Render(req, timeout=30).data)

    def test_bad_job_requests(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.SubmitJob(pb.RenderRequest(width=0), timeout=10)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(cm.exception.details(), "width must be 1..65536, got 0")
        self.assertEqual(list(self.stub.ListJobs(pb.ListJobsRequest(), timeout=10).jobs), [])
        for call in (self.stub.GetJob, self.stub.CancelJob):
            with self.assertRaises(grpc.RpcError) as cm:
                call(pb.JobRef(id="nosuchjob"), timeout=10)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
            with self.assertRaises(grpc.RpcError) as cm:
                call(pb.JobRef(), timeout=10)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        with self.assertRaises(grpc.RpcError) as cm:
            list(self.stub.FetchJobResult(pb.JobRef(id="nosuchjob"), timeout=10))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_cancel_running_job_and_fetch_refused(self):
        job = self.stub.SubmitJob(SLOW, timeout=10)
        wait_job(self.stub, job.id, states=(pb.JOB_STATE_RUNNING,))
        with self.assertRaises(grpc.RpcError) as cm:
            list(self.stub.FetchJobResult(pb.JobRef(id=job.id), timeout=10))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn("RUNNING", cm.exception.details())
        start = time.monotonic()
        self.stub.CancelJob(pb.JobRef(id=job.id), timeout=10)
        cancelled = wait_job(self.stub, job.id, timeout=10)
        self.assertEqual(cancelled.state, pb.JOB_STATE_CANCELLED)
        self.assertLess(time.monotonic() - start, 2.0)
        with self.assertRaises(grpc.RpcError) as cm:
            list(self.stub.FetchJobResult(pb.JobRef(id=job.id), timeout=10))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)

    def test_list_jobs_newest_first_with_filter(self):
        ids = [self.stub.SubmitJob(pb.RenderRequest(width=32, height=32), timeout=10).id for _ in range(3)]
        for job_id in ids:
            wait_job(self.stub, job_id)
        listed = [j.id for j in self.stub.ListJobs(pb.ListJobsRequest(), timeout=10).jobs]
        self.assertEqual(listed, ids[::-1])
        self.assertEqual(len(self.stub.ListJobs(pb.ListJobsRequest(limit=2), timeout=10).jobs), 2)
        self.assertEqual(list(self.stub.ListJobs(pb.ListJobsRequest(state=pb.JOB_STATE_QUEUED), timeout=10).jobs), [])
        stats = self.stub.GetStats(pb.GetStatsRequest(), timeout=10)
        self.assertEqual(stats.jobs_held, 3)
        self.assertGreater(stats.spool_bytes, 0)

    def test_interactive_renders_keep_a_worker_while_jobs_run(self):
        # Four render workers: jobs may take three; a Render still starts at once.
        ids = [self.stub.SubmitJob(SLOW, timeout=10).id for _ in range(4)]
        time.sleep(0.5)
        start = time.monotonic()
        self.assertEqual(self.stub.Render(pb.RenderRequest(width=64, height=64), timeout=10).width, 64)
        self.assertLess(time.monotonic() - start, 2.0)
        running = [j for j in self.stub.ListJobs(pb.ListJobsRequest(), timeout=10).jobs
                   if j.state == pb.JOB_STATE_RUNNING]
        self.assertEqual(len(running), 3)
        queued = self.stub.GetJob(pb.JobRef(id=ids[3]), timeout=10)
        self.assertEqual((queued.state, queued.progress.queue_position), (pb.JOB_STATE_QUEUED, 1))
        for job_id in ids:
            self.stub.CancelJob(pb.JobRef(id=job_id), timeout=10)


class RetentionTests(JobCase):
    server_args = ("--job-retention-ms", "300")

    def test_finished_jobs_expire(self):
        job = self.stub.SubmitJob(pb.RenderRequest(width=16, height=16), timeout=10)
        self.assertEqual(wait_job(self.stub, job.id).state, pb.JOB_STATE_SUCCEEDED)
        time.sleep(2.5)  # retention 0.3 s, upkeep once a second
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.GetJob(pb.JobRef(id=job.id), timeout=10)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)


class DurabilityTests(unittest.TestCase):
    def test_kill_9_loses_no_accepted_job(self):
        import tempfile
        import shutil
        spool = tempfile.mkdtemp(prefix="fractald-spool-")
        try:
            reqs = [pb.RenderRequest(width=300 + 10 * k, height=200, max_iter=300 + k) for k in range(5)]
            reqs.append(pb.RenderRequest(julia=SLOW_JULIA, width=2048, height=2048, max_iter=3000,
                                         view=pb.View(width=0.5)))
            server = h.Server("--workers", "2", spool=spool)
            with grpc.insecure_channel(server.target, options=OPTIONS) as ch:
                stub = pbg.RendererStub(ch)
                slow = stub.SubmitJob(reqs[-1], timeout=10).id   # runs first, keeps the one job runner busy
                ids = [stub.SubmitJob(r, timeout=10).id for r in reqs[:-1]]
                wait_job(stub, slow, states=(pb.JOB_STATE_RUNNING,))
            server.kill()   # crash with one job running and five queued
            server = h.Server(spool=spool)
            try:
                with grpc.insecure_channel(server.target, options=OPTIONS) as ch:
                    stub = pbg.RendererStub(ch)
                    for job_id, req in zip(ids + [slow], reqs):
                        job = wait_job(stub, job_id, timeout=180)
                        self.assertEqual(job.state, pb.JOB_STATE_SUCCEEDED, job.error_message)
                        self.assertEqual(fetch(stub, job_id)[0], stub.Render(req, timeout=120).data)
                    self.assertEqual(stub.GetJob(pb.JobRef(id=slow), timeout=10).state, pb.JOB_STATE_SUCCEEDED)
            finally:
                self.assertEqual(server.stop(), 0)
        finally:
            shutil.rmtree(spool, ignore_errors=True)

    def test_sigterm_requeues_running_jobs(self):
        import tempfile
        import shutil
        spool = tempfile.mkdtemp(prefix="fractald-spool-")
        try:
            server = h.Server("--grace-ms", "200", spool=spool)
            with grpc.insecure_channel(server.target, options=OPTIONS) as ch:
                stub = pbg.RendererStub(ch)
                job = stub.SubmitJob(pb.RenderRequest(julia=SLOW_JULIA, width=4096, height=4096, max_iter=3000,
                                                      view=pb.View(width=0.5)), timeout=10)
                wait_job(stub, job.id, states=(pb.JOB_STATE_RUNNING,))
            server.proc.send_signal(signal.SIGTERM)
            self.assertEqual(server.proc.wait(15), 0)
            server.stop()
            server = h.Server(spool=spool)
            try:
                with grpc.insecure_channel(server.target, options=OPTIONS) as ch:
                    stub = pbg.RendererStub(ch)
                    again = stub.GetJob(pb.JobRef(id=job.id), timeout=10)
                    self.assertIn(again.state, (pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING, pb.JOB_STATE_SUCCEEDED))
                    stub.CancelJob(pb.JobRef(id=job.id), timeout=10)
            finally:
                self.assertEqual(server.stop(), 0)
        finally:
            shutil.rmtree(spool, ignore_errors=True)

    def test_one_worker_with_jobs_is_refused(self):
        import subprocess
        proc = subprocess.run([h.FRACTALD, "--workers", "1", "--spool-dir", "/tmp/nonexistent-spool"],
                              capture_output=True, text=True, timeout=30)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("--workers must be at least 2 when jobs are enabled", proc.stderr)

    def test_unknown_fields_are_not_stored(self):
        server = h.Server()
        try:
            with grpc.insecure_channel(server.target) as ch:
                # Field 999 (bytes) is unknown to fractal.v1.RenderRequest: 60 kB of padding.
                padded = pb.RenderRequest(width=8, height=8).SerializeToString() + b"\xba\x3e" + \
                    bytes([0xe0, 0xd4, 0x03]) + b"x" * 60000
                submit = ch.unary_unary("/fractal.v1.Renderer/SubmitJob", response_deserializer=pb.Job.FromString)
                job = submit(padded, timeout=10)
                self.assertLess(job.request.ByteSize(), 4096)
                self.assertEqual(job.request.width, 8)
        finally:
            self.assertEqual(server.stop(), 0)

    def test_jobs_disabled(self):
        server = h.Server("--spool-dir", "")
        try:
            with grpc.insecure_channel(server.target) as ch:
                with self.assertRaises(grpc.RpcError) as cm:
                    pbg.RendererStub(ch).SubmitJob(pb.RenderRequest(), timeout=10)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
                self.assertIn("--spool-dir", cm.exception.details())
        finally:
            self.assertEqual(server.stop(), 0)


if __name__ == "__main__":
    unittest.main()
