"""Load test on loopback, bounded in count and time: 32 concurrent clients send a mix of small
tiles, full images, streams and jobs, some with short deadlines and some
cancelled. Every call must end with its image or an explicit status; none may hang or be lost;
health answers throughout; the server's memory stays bounded."""
import random
import threading
import time
import unittest

import fractald_harness as h
from test_service import SLOW_JULIA, peak_rss_bytes, reassemble

import grpc
from fractal.v1 import fractal_pb2 as pb
from fractal.v1 import fractal_pb2_grpc as pbg
from fractal_health import health_pb2, health_pb2_grpc

CLIENTS = 32
CALLS_PER_CLIENT = 10
OPTIONS = [("grpc.max_receive_message_length", 256 << 20)]
A = dict(julia=pb.Julia(c=pb.Complex(re=-0.8, im=0.156)), width=1920, height=1080, view=pb.View(width=3.0))
SLOW = pb.RenderRequest(julia=SLOW_JULIA, width=4096, height=4096, max_iter=2000, view=pb.View(width=0.5))


class LoadTest(unittest.TestCase):
    def test_mixed_load(self):
        server = h.Server("--queue", "48")
        outcomes, errors, health_lat = [], [], []
        lock = threading.Lock()
        stop = threading.Event()
        try:
            channel = grpc.insecure_channel(server.target, options=OPTIONS)
            stub = pbg.RendererStub(channel)

            def record(kind, result):
                with lock:
                    outcomes.append((kind, result))

            def tile(rng):
                x, y = rng.randrange(0, 1920 - 256, 64), rng.randrange(0, 1080 - 256, 64)
                r = stub.Render(pb.RenderRequest(max_iter=256, region=pb.Region(x=x, y=y, width=256, height=256), **A),
                                timeout=60)
                assert (r.width, r.height) == (256, 256) and h.png_info(r.data)[:2] == (256, 256)

            def full(rng):
                r = stub.Render(pb.RenderRequest(), timeout=60)
                assert h.png_info(r.data)[:2] == (600, 400)

            def stream(rng):
                data, _, _, done = reassemble(stub.RenderStream(pb.RenderRequest(width=1200, height=900), timeout=60))
                assert h.png_info(data)[:2] == (1200, 900) and done.samples == 1200 * 900

            def job(rng):
                submitted = stub.SubmitJob(pb.RenderRequest(width=320, height=240, max_iter=200 + rng.randrange(100)),
                                           timeout=30)
                deadline = time.monotonic() + 120
                while True:
                    state = stub.GetJob(pb.JobRef(id=submitted.id), timeout=30).state
                    if state == pb.JOB_STATE_SUCCEEDED:
                        break
                    assert state in (pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING), pb.JobState.Name(state)
                    assert time.monotonic() < deadline, "job never finished"
                    time.sleep(0.05)
                data, _, _, _ = reassemble(stub.FetchJobResult(pb.JobRef(id=submitted.id), timeout=30))
                assert h.png_info(data)[:2] == (320, 240)

            def short_deadline(rng):
                stub.Render(SLOW, timeout=0.05 + rng.random() * 0.2)
                raise AssertionError("a render of ~3e10 iterations finished inside its short deadline")

            def cancelled(rng):
                fut = stub.Render.future(SLOW, timeout=60)
                time.sleep(rng.random() * 0.2)
                fut.cancel()
                try:
                    fut.result()
                except grpc.FutureCancelledError:
                    raise grpc.FutureCancelledError()

            mix = [tile] * 5 + [full] * 2 + [stream] * 2 + [job] * 2 + [short_deadline, cancelled]
            allowed = {
                tile: {grpc.StatusCode.RESOURCE_EXHAUSTED},
                full: {grpc.StatusCode.RESOURCE_EXHAUSTED},
                stream: {grpc.StatusCode.RESOURCE_EXHAUSTED},
                job: {grpc.StatusCode.RESOURCE_EXHAUSTED},
                short_deadline: {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED},
                cancelled: {grpc.StatusCode.CANCELLED, grpc.StatusCode.RESOURCE_EXHAUSTED},
            }

            def client(seed):
                rng = random.Random(seed)
                for _ in range(CALLS_PER_CLIENT):
                    op = rng.choice(mix)
                    try:
                        op(rng)
                        record(op.__name__, "ok")
                    except grpc.FutureCancelledError:
                        record(op.__name__, "CANCELLED")
                    except grpc.RpcError as e:
                        if e.code() in allowed[op]:
                            record(op.__name__, e.code().name)
                        else:
                            with lock:
                                errors.append("%s: %s %s" % (op.__name__, e.code(), e.details()))
                            record(op.__name__, "unexpected")
                    except Exception as e:  # noqa: BLE001 - every failure is reported
                        with lock:
                            errors.append("%s: %r" % (op.__name__, e))
                        record(op.__name__, "unexpected")

            def health():
                hs = health_pb2_grpc.HealthStub(channel)
                while not stop.is_set():
                    start = time.monotonic()
                    status = hs.Check(health_pb2.HealthCheckRequest(), timeout=5).status
                    health_lat.append(time.monotonic() - start)
                    assert status == health_pb2.HealthCheckResponse.SERVING
                    time.sleep(0.02)

            hthread = threading.Thread(target=health)
            hthread.start()
            threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
            start = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=300)
            elapsed = time.monotonic() - start
            stop.set()
            hthread.join(10)
            self.assertFalse(any(t.is_alive() for t in threads), "a client hung")
            self.assertEqual(errors, [])
            self.assertEqual(len(outcomes), CLIENTS * CALLS_PER_CLIENT, "calls lost")
            self.assertGreater(sum(1 for _, r in outcomes if r == "ok"), CLIENTS * CALLS_PER_CLIENT // 2)
            self.assertTrue(health_lat, "health never answered")
            self.assertLess(max(health_lat), 1.0, "health took %.3f s under load" % max(health_lat))
            self.assertLess(peak_rss_bytes(server.proc.pid), 1 << 30)
            # After the storm the server is idle and serves as before.
            # (A worker counts its render done just after the reply went out: poll briefly.)
            deadline = time.monotonic() + 10
            while True:
                stats = stub.GetStats(pb.GetStatsRequest(), timeout=10)
                if (stats.queue_depth, stats.running) == (0, 0) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            self.assertEqual((stats.queue_depth, stats.running), (0, 0))
            self.assertEqual(stub.Render(pb.RenderRequest(width=8, height=8), timeout=10).width, 8)
            summary = {}
            for kind, result in outcomes:
                summary[(kind, result)] = summary.get((kind, result), 0) + 1
            print("\nload: %d calls in %.1f s, health max %.1f ms, peak RSS %d MiB: %s" % (
                len(outcomes), elapsed, max(health_lat) * 1000, peak_rss_bytes(server.proc.pid) >> 20,
                sorted(summary.items())))
            channel.close()
        finally:
            stop.set()
            self.assertEqual(server.stop(), 0)


if __name__ == "__main__":
    unittest.main()
