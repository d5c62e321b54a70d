"""Shared jobs (--job-store): a fleet of fractald servers on one real PostgreSQL, which the test
starts itself (initdb in a temporary directory, on a free port, always stopped and removed):
submit on one server and poll and fetch on another, take-over after kill -9, cancel through a third
server, ListJobs alike everywhere, NOTIFY waking another server's workers, a bad --job-store, and a
database that goes away while the servers run."""
import atexit
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import fractald_harness as h
import test_jobs
from test_jobs import FINISHED, OPTIONS, fetch
from test_service import SLOW_JULIA

import grpc
from fractal.v1 import fractal_pb2 as pb
from fractal.v1 import fractal_pb2_grpc as pbg

SANITIZED = bool(os.environ.get("FRACTALD_SANITIZED"))
LEASE_MS = 4000 if SANITIZED else 2000
TIMEOUT = 240 if SANITIZED else 90
SMALL = pb.RenderRequest(width=160, height=120, max_iter=300, coloring=pb.Coloring(palette="plasma"))
# A few seconds of work (about 3 s on two cores, a 20 MB PNG): long enough to be caught RUNNING
# and killed, and still a result of several chunks. A quarter of it under the sanitizers, which
# run it some ten times slower.
SIDE = 2400 if SANITIZED else 4800
SLOW = pb.RenderRequest(julia=SLOW_JULIA, width=SIDE, height=SIDE, max_iter=3000, view=pb.View(width=0.5))


def pg_bindir():
    """The folder of initdb and pg_ctl, or None."""
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10).stdout.strip()
        if out and os.path.exists(os.path.join(out, "initdb")):
            return out
    except (OSError, subprocess.SubprocessError):
        pass
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """A throwaway PostgreSQL cluster. initdb refuses to run as root, so as root the cluster runs
    as `nobody` (runuser), owning its temporary directory."""

    def __init__(self):
        self.bindir = pg_bindir()
        if not self.bindir:
            raise unittest.SkipTest("PostgreSQL server binaries not found (scripts/install-deps.sh installs them)")
        self.dir = tempfile.mkdtemp(prefix="fractald-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.prefix = []
        if os.geteuid() == 0:
            if not shutil.which("runuser"):
                shutil.rmtree(self.dir, ignore_errors=True)
                raise unittest.SkipTest("running as root without runuser: initdb cannot run")
            os.chmod(self.dir, 0o755)
            shutil.chown(self.dir, user="nobody")
            self.prefix = ["runuser", "-u", "nobody", "--"]
        self.running = False
        atexit.register(self.destroy)
        try:
            self.run("initdb", "-D", self.data, "-A", "trust", "-U", "fractald", "--no-sync")
        except subprocess.CalledProcessError as e:
            self.destroy()
            lines = (e.stderr or "").strip().splitlines()
            raise unittest.SkipTest("initdb%s failed: %s" % (" (as nobody)" if self.prefix else "",
                                                            lines[-1] if lines else e))
        self.start()
        self.next_db = 0

    def run(self, tool, *args, check=True):
        return subprocess.run(self.prefix + [os.path.join(self.bindir, tool), *args], capture_output=True,
                              text=True, timeout=120, check=check)

    def start(self):
        self.run("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "log"), "-w", "-t", "60", "-o",
                 "-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off" % (self.port, self.dir), "start")
        self.running = True

    def stop(self):
        if self.running:
            self.run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop", check=False)
            self.running = False

    def new_database(self):
        """A fresh database; returns its URI."""
        self.next_db += 1
        name = "fleet%d" % self.next_db
        self.run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "fractald", name)
        return "postgresql://fractald@127.0.0.1:%d/%s" % (self.port, name)

    def query(self, uri, sql):
        """One value from psql."""
        return self.run("psql", "-X", "-A", "-t", "-c", sql, uri).stdout.strip()

    def destroy(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


PG = None


def setUpModule():
    global PG
    PG = Postgres()


def tearDownModule():
    if PG:
        PG.destroy()


def wait_job(stub, job_id, states=FINISHED, timeout=TIMEOUT):
    return test_jobs.wait_job(stub, job_id, timeout=timeout, states=states)


class FleetCase(unittest.TestCase):
    def setUp(self):
        self.uri = PG.new_database()
        self.servers, self.channels = [], []

    def server(self, *args):
        """A fleet member on this test's database; returns its stub."""
        srv = h.Server("--job-store", self.uri, "--job-lease-ms", str(LEASE_MS), "--workers", "2", *args)
        self.servers.append(srv)
        channel = grpc.insecure_channel(srv.target, options=OPTIONS)
        self.channels.append(channel)
        return pbg.RendererStub(channel)

    def runner_of(self, job_id):
        """Index in self.servers of the server running job_id, from the owner column
        ("<random>@<host>/<pid>")."""
        owner = PG.query(self.uri, "SELECT owner FROM fractald_jobs WHERE id = '%s'" % job_id)
        pids = [srv.proc.pid for srv in self.servers]
        self.assertIn(int(owner.rsplit("/", 1)[1]), pids, owner)
        return pids.index(int(owner.rsplit("/", 1)[1]))

    def tearDown(self):
        for channel in self.channels:
            channel.close()
        for srv in self.servers:
            if srv.proc.poll() is None:
                self.assertEqual(srv.stop(), 0)
            shutil.rmtree(srv.spool, ignore_errors=True)  # kept by kill()


class FleetTests(FleetCase):
    def test_submit_here_poll_and_fetch_there_list_everywhere(self):
        a, b, c = self.server(), self.server("--job-runners", "0"), self.server("--job-runners", "0")
        job = a.SubmitJob(SMALL, timeout=10)
        done = wait_job(b, job.id)
        self.assertEqual(done.state, pb.JOB_STATE_SUCCEEDED, done.error_message)
        self.assertEqual((done.width, done.height, done.content_type), (160, 120, "image/png"))
        self.assertEqual(done.progress.rows_done, 120)
        data, _, stats = fetch(b, job.id)
        self.assertEqual(len(data), done.result_bytes)
        self.assertEqual(data, c.Render(SMALL, timeout=60).data)
        self.assertEqual(stats.samples, 160 * 120)
        self.assertEqual(fetch(c, job.id)[0], data)

        second = c.SubmitJob(pb.RenderRequest(width=32, height=32), timeout=10)
        second_done = wait_job(a, second.id)
        stats = b.GetStats(pb.GetStatsRequest(), timeout=10)
        self.assertEqual((stats.jobs_held, stats.spool_bytes), (2, done.result_bytes + second_done.result_bytes))
        listings = [[j.id for j in stub.ListJobs(pb.ListJobsRequest(), timeout=10).jobs] for stub in (a, b, c)]
        self.assertEqual(listings, [[second.id, job.id]] * 3)
        self.assertEqual(len(b.ListJobs(pb.ListJobsRequest(limit=1), timeout=10).jobs), 1)
        self.assertEqual(a.GetJob(pb.JobRef(id=job.id), timeout=10), done)

    def test_queued_jobs_have_positions_everywhere(self):
        # No server runs jobs, so they stay queued in order.
        a, b = self.server("--job-runners", "0"), self.server("--job-runners", "0")
        ids = [a.SubmitJob(pb.RenderRequest(width=16, height=16), timeout=10).id for _ in range(3)]
        listed = b.ListJobs(pb.ListJobsRequest(state=pb.JOB_STATE_QUEUED), timeout=10).jobs
        self.assertEqual([(j.id, j.progress.queue_position) for j in listed], list(zip(ids[::-1], (3, 2, 1))))
        self.assertEqual(b.GetJob(pb.JobRef(id=ids[1]), timeout=10).progress.queue_position, 2)
        b.CancelJob(pb.JobRef(id=ids[0]), timeout=10)
        self.assertEqual(a.GetJob(pb.JobRef(id=ids[0]), timeout=10).state, pb.JOB_STATE_CANCELLED)
        self.assertEqual(a.GetJob(pb.JobRef(id=ids[2]), timeout=10).progress.queue_position, 2)

    def test_notify_wakes_the_workers_of_another_server(self):
        a = self.server("--job-runners", "0")
        b = self.server()
        for _ in range(3):
            job = a.SubmitJob(pb.RenderRequest(width=64, height=64), timeout=10)
            done = wait_job(a, job.id, timeout=30)
            self.assertEqual(done.state, pb.JOB_STATE_SUCCEEDED, done.error_message)
        self.assertEqual(len(b.ListJobs(pb.ListJobsRequest(state=pb.JOB_STATE_SUCCEEDED), timeout=10).jobs), 3)

    def test_kill_9_of_the_running_server_and_another_finishes(self):
        stubs = [self.server(), self.server()]
        slow = stubs[0].SubmitJob(SLOW, timeout=10)
        wait_job(stubs[1], slow.id, states=(pb.JOB_STATE_RUNNING,))
        others = [stubs[0].SubmitJob(pb.RenderRequest(width=48, height=40, max_iter=200 + k), timeout=10).id
                  for k in range(2)]
        runner = self.runner_of(slow.id)
        survivor = stubs[1 - runner]
        self.servers[runner].kill()
        killed_at, killed_unix_ms = time.monotonic(), time.time() * 1000
        done = wait_job(survivor, slow.id)
        self.assertEqual(done.state, pb.JOB_STATE_SUCCEEDED, done.error_message)
        # Started again (by the survivor) after the kill, and not before the lease ran out.
        self.assertGreater(done.started_unix_ms, killed_unix_ms)
        self.assertGreater(time.monotonic() - killed_at, LEASE_MS / 1000 * 0.5)
        self.assertEqual(fetch(survivor, slow.id)[0], survivor.Render(SLOW, timeout=TIMEOUT).data)
        for k, job_id in enumerate(others):
            job = wait_job(survivor, job_id)
            self.assertEqual(job.state, pb.JOB_STATE_SUCCEEDED, job.error_message)
            req = pb.RenderRequest(width=48, height=40, max_iter=200 + k)
            self.assertEqual(fetch(survivor, job_id)[0], survivor.Render(req, timeout=60).data)

    def test_late_finish_of_a_server_whose_lease_was_taken_is_dropped(self):
        stubs = [self.server(), self.server()]
        job = stubs[0].SubmitJob(SLOW, timeout=10)
        wait_job(stubs[0], job.id, states=(pb.JOB_STATE_RUNNING,))
        runner = self.runner_of(job.id)
        frozen, other = self.servers[runner], stubs[1 - runner]
        # Frozen, the runner renews nothing: the other takes the job over once the lease ran out.
        frozen.proc.send_signal(signal.SIGSTOP)
        try:
            stopped_unix_ms = time.time() * 1000
            deadline = time.monotonic() + TIMEOUT
            while other.GetJob(pb.JobRef(id=job.id), timeout=10).started_unix_ms < stopped_unix_ms:
                self.assertLess(time.monotonic(), deadline, "the job was never taken over")
                time.sleep(0.05)
        finally:
            frozen.proc.send_signal(signal.SIGCONT)
        done = wait_job(other, job.id)
        self.assertEqual(done.state, pb.JOB_STATE_SUCCEEDED, done.error_message)
        self.assertGreater(done.started_unix_ms, stopped_unix_ms)
        self.assertEqual(fetch(stubs[runner], job.id)[0], other.Render(SLOW, timeout=TIMEOUT).data)
        # The runner woke to a lost lease: its render stopped or its finish was refused, and its
        # chunks are gone.
        self.assertEqual(PG.query(self.uri, "SELECT count(DISTINCT claim) FROM fractald_job_result_chunks"), "1")
        code, log = frozen.stop_and_read_log()
        self.assertEqual(code, 0, log)
        self.assertRegex(log, "lease=lost|taken over by")

    def test_drain_requeues_for_another_server(self):
        stubs = [self.server("--grace-ms", "300"), self.server("--grace-ms", "300")]
        job = stubs[0].SubmitJob(SLOW, timeout=10)
        wait_job(stubs[0], job.id, states=(pb.JOB_STATE_RUNNING,))
        runner = self.runner_of(job.id)
        stopped_unix_ms = time.time() * 1000
        self.assertEqual(self.servers[runner].stop(), 0)
        done = wait_job(stubs[1 - runner], job.id)
        self.assertEqual(done.state, pb.JOB_STATE_SUCCEEDED, done.error_message)
        self.assertGreater(done.started_unix_ms, stopped_unix_ms)  # run again, by the other
        self.assertEqual(done.result_bytes, len(fetch(stubs[1 - runner], job.id)[0]))

    def test_cancel_through_a_third_server(self):
        a = self.server()
        b, c = self.server("--job-runners", "0"), self.server("--job-runners", "0")
        job = b.SubmitJob(SLOW, timeout=10)
        wait_job(b, job.id, states=(pb.JOB_STATE_RUNNING,))
        start = time.monotonic()
        c.CancelJob(pb.JobRef(id=job.id), timeout=10)
        cancelled = wait_job(b, job.id, timeout=30)
        self.assertEqual(cancelled.state, pb.JOB_STATE_CANCELLED)
        # The NOTIFY stops it at once; the heartbeat would within a third of the lease.
        self.assertLess(time.monotonic() - start, LEASE_MS / 1000 + (8 if SANITIZED else 2))
        with self.assertRaises(grpc.RpcError) as cm:
            list(a.FetchJobResult(pb.JobRef(id=job.id), timeout=10))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)

    def test_limits_count_across_the_fleet(self):
        a = self.server("--job-runners", "0", "--max-jobs", "2")
        b = self.server("--job-runners", "0", "--max-jobs", "2")
        a.SubmitJob(pb.RenderRequest(width=16, height=16), timeout=10)
        b.SubmitJob(pb.RenderRequest(width=16, height=16), timeout=10)
        with self.assertRaises(grpc.RpcError) as cm:
            a.SubmitJob(pb.RenderRequest(width=16, height=16), timeout=10)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("holds 2 jobs", cm.exception.details())

    def test_result_past_the_budget_fails_the_job(self):
        a = self.server("--job-disk-budget", "1K")
        job = wait_job(a, a.SubmitJob(SMALL, timeout=10).id)
        self.assertEqual(job.state, pb.JOB_STATE_FAILED)
        self.assertEqual(job.error_code, grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
        self.assertIn("budget of 1024 bytes", job.error_message)
        self.assertEqual(PG.query(self.uri, "SELECT count(*) FROM fractald_job_result_chunks"), "0")

    def test_a_newer_schema_is_refused(self):
        self.server().SubmitJob(pb.RenderRequest(width=16, height=16), timeout=10)
        PG.query(self.uri, "UPDATE fractald_schema SET version = 99")
        proc = subprocess.run([h.FRACTALD, "--listen", "127.0.0.1:0", "--log-level", "warn", "--job-store", self.uri],
                              capture_output=True, text=True, timeout=60)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn("schema version 99, from a newer fractald", proc.stderr)

    def test_expiry_deletes_on_every_server(self):
        a = self.server("--job-retention-ms", "0")
        b = self.server("--job-runners", "0", "--job-retention-ms", "0")
        job = b.SubmitJob(pb.RenderRequest(width=16, height=16), timeout=10)
        deadline = time.monotonic() + 30
        while True:
            try:
                state = b.GetJob(pb.JobRef(id=job.id), timeout=10).state
            except grpc.RpcError as e:
                self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND)
                break
            self.assertLess(time.monotonic(), deadline, "job still %s" % pb.JobState.Name(state))
            time.sleep(0.05)
        self.assertEqual(list(a.ListJobs(pb.ListJobsRequest(), timeout=10).jobs), [])


class StartupTests(unittest.TestCase):
    def start_fails(self, store):
        proc = subprocess.run([h.FRACTALD, "--listen", "127.0.0.1:0", "--log-level", "warn", "--job-store", store],
                              capture_output=True, text=True, timeout=60)
        lines = proc.stderr.strip().splitlines()
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertEqual(len(lines), 1, proc.stderr)
        return lines[0]

    def test_bad_uri_is_one_line_and_exit_2(self):
        line = self.start_fails("postgresql://fractald@127.0.0.1/x?no_such_option=1")
        self.assertIn("--job-store", line)
        self.assertIn("not a valid libpq connection string", line)
        line = self.start_fails("postgresql://fractald@127.0.0.1:notaport/x")
        self.assertIn("invalid integer value \"notaport\"", line)

    def test_unreachable_database_is_one_line_and_exit_2(self):
        line = self.start_fails("postgresql://fractald@127.0.0.1:%d/x?connect_timeout=2" % free_port())
        self.assertIn("cannot connect to the job store database", line)


class OutageTests(FleetCase):
    def test_database_stopped_then_back(self):
        a = self.server()
        job = a.SubmitJob(SMALL, timeout=10)
        self.assertEqual(wait_job(a, job.id).state, pb.JOB_STATE_SUCCEEDED)
        PG.stop()
        try:
            # (ListJobs is left out: rpc_jobs.c answers every jobs_list failure RESOURCE_EXHAUSTED.)
            for call, arg in ((a.GetJob, pb.JobRef(id=job.id)), (a.SubmitJob, SMALL),
                              (a.CancelJob, pb.JobRef(id=job.id)),
                              (lambda ref, timeout: list(a.FetchJobResult(ref, timeout=timeout)),
                               pb.JobRef(id=job.id))):
                with self.assertRaises(grpc.RpcError) as cm:
                    call(arg, timeout=20)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE, cm.exception.details())
            # Renders do not need the database.
            self.assertEqual(len(a.Render(SMALL, timeout=60).data) > 0, True)
        finally:
            PG.start()
        # The pool reconnects: the job and its result are there again.
        deadline = time.monotonic() + 30
        while True:
            try:
                self.assertEqual(a.GetJob(pb.JobRef(id=job.id), timeout=10).state, pb.JOB_STATE_SUCCEEDED)
                break
            except grpc.RpcError as e:
                self.assertEqual(e.code(), grpc.StatusCode.UNAVAILABLE)
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.1)
        self.assertEqual(fetch(a, job.id)[0], a.Render(SMALL, timeout=60).data)
        again = a.SubmitJob(pb.RenderRequest(width=16, height=16), timeout=10)
        self.assertEqual(wait_job(a, again.id).state, pb.JOB_STATE_SUCCEEDED)
        self.assertEqual(self.servers[0].stop(), 0)


if __name__ == "__main__":
    unittest.main()
