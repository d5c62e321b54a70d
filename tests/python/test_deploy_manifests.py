"""The Kubernetes manifests in deploy/kubernetes against the fractald they deploy: every flag they
pass exists and starts a server, the probes ask the health service for names it answers
SERVING, the ports and Services line up, every path fractald writes is on a volume, and the grace
periods agree. No cluster is involved."""
import os
import re
import signal
import subprocess
import shutil
import tempfile
import unittest

import fractald_harness as h

import grpc
from fractal_health import health_pb2, health_pb2_grpc

try:
    import yaml
except ImportError:  # python3-yaml (scripts/install-deps.sh)
    yaml = None

SOURCE = os.environ.get("FRACTAL_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
KUBE = os.path.join(SOURCE, "deploy", "kubernetes")


def flag_pairs(args):
    """{flag: value} from a container's args ("--flag", "value" pairs; a flag alone maps to None)."""
    out, i = {}, 0
    while i < len(args):
        assert args[i].startswith("--"), "not a flag: %r" % args[i]
        if i + 1 < len(args) and not args[i + 1].startswith("--"):
            out[args[i]] = args[i + 1]
            i += 2
        else:
            out[args[i]] = None
            i += 1
    return out


@unittest.skipUnless(yaml, "skipped 'python3-yaml is not installed (scripts/install-deps.sh installs it)'")
class ManifestTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(os.path.join(KUBE, "kustomization.yaml")) as f:
            cls.kustomization = yaml.safe_load(f)
        cls.docs = []
        for name in cls.kustomization["resources"]:
            with open(os.path.join(KUBE, name)) as f:
                cls.docs += [d for d in yaml.safe_load_all(f) if d]
        cls.by_kind = {}
        for d in cls.docs:
            cls.by_kind.setdefault(d["kind"], []).append(d)
        cls.deployment = cls.by_kind["Deployment"][0]
        cls.pod = cls.deployment["spec"]["template"]["spec"]
        cls.container = cls.pod["containers"][0]
        cls.flags = flag_pairs(cls.container["args"])

    def test_kustomization_lists_every_manifest(self):
        files = sorted(f for f in os.listdir(KUBE) if f.endswith(".yaml") and f != "kustomization.yaml")
        self.assertEqual(sorted(self.kustomization["resources"]), files)
        self.assertEqual({k: len(v) for k, v in self.by_kind.items()},
                         {"ConfigMap": 1, "Deployment": 1, "PodDisruptionBudget": 1, "Service": 2})

    def test_every_flag_exists(self):
        usage = subprocess.run([h.FRACTALD, "--help"], capture_output=True, text=True, check=True).stdout
        known = set(re.findall(r"^  (--[a-z-]+)", usage, re.M))
        self.assertIn("--grace-ms", known, "could not read fractald --help")
        self.assertEqual(sorted(set(self.flags) - known), [], "flags fractald does not have")

    def port_of(self, name_or_number):
        for p in self.container["ports"]:
            if name_or_number in (p["name"], p["containerPort"]):
                return p["containerPort"]
        self.fail("no container port %r" % name_or_number)

    def test_ports_agree(self):
        self.assertEqual(self.flags["--listen"], "0.0.0.0:%d" % self.port_of("grpc"))
        self.assertEqual(self.flags["--http-listen"], "0.0.0.0:%d" % self.port_of("http"))
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            self.assertEqual(self.port_of(self.container[probe]["grpc"]["port"]), self.port_of("grpc"), probe)
        services = {s["metadata"]["name"]: s["spec"] for s in self.by_kind["Service"]}
        labels = self.deployment["spec"]["template"]["metadata"]["labels"]
        self.assertEqual(services["fractald-grpc"]["clusterIP"], "None", "the gRPC Service must be headless")
        self.assertEqual([self.port_of(p["targetPort"]) for p in services["fractald-grpc"]["ports"]],
                         [self.port_of("grpc")])
        self.assertEqual([self.port_of(p["targetPort"]) for p in services["fractald-http"]["ports"]],
                         [self.port_of("http")])
        for spec in list(services.values()) + [self.by_kind["PodDisruptionBudget"][0]["spec"]["selector"]["matchLabels"],
                                                self.deployment["spec"]["selector"]["matchLabels"]]:
            selector = spec.get("selector", spec)
            self.assertTrue(selector and set(selector.items()) <= set(labels.items()), selector)

    def test_grace_periods_agree(self):
        grace_s = int(self.flags["--grace-ms"]) / 1000
        pre_stop = self.container["lifecycle"]["preStop"]["exec"]["command"]
        self.assertEqual(pre_stop[0], "sleep")
        # The kubelet's clock runs from the preStop hook on; the process needs a moment to exit.
        self.assertGreaterEqual(self.pod["terminationGracePeriodSeconds"], float(pre_stop[1]) + grace_s + 5)
        # Liveness reads NOT_SERVING during the drain too: it must not give up before the drain ends.
        live = self.container["livenessProbe"]
        self.assertGreater(live["periodSeconds"] * live["failureThreshold"], grace_s)

    def test_gpu_and_resources(self):
        res = self.container["resources"]
        self.assertEqual(res["limits"]["nvidia.com/gpu"], 1)
        self.assertTrue(any(t["key"] == "nvidia.com/gpu" for t in self.pod["tolerations"]))
        self.assertTrue(self.pod["nodeSelector"])
        # fractald's "one thread per CPU" would see the node's CPUs, not the container's limit.
        self.assertEqual(int(self.flags["--threads"]), int(res["limits"]["cpu"]))

    def mount_of(self, path):
        """(volume, mount) holding `path` in the container."""
        best = None
        for m in self.container["volumeMounts"]:
            mp = m["mountPath"].rstrip("/")
            if path == mp or path.startswith(mp + "/"):
                if not best or len(mp) > len(best["mountPath"]):
                    best = m
        self.assertIsNotNone(best, "%s is on no volume" % path)
        volume = next(v for v in self.pod["volumes"] if v["name"] == best["name"])
        return volume, best

    def device_ini(self):
        cm = self.by_kind["ConfigMap"][0]
        volume, mount = self.mount_of(self.flags["--config"])
        self.assertEqual(volume["configMap"]["name"], cm["metadata"]["name"])
        return cm["data"][mount["subPath"]]

    def test_paths_are_on_volumes(self):
        self.assertTrue(self.container["securityContext"]["readOnlyRootFilesystem"])
        self.device_ini()
        secret = self.mount_of(self.flags["--token-file"])[0]["secret"]
        # Secret files belong to root, group fsGroup: fractald, not root, reads them by its group.
        self.assertTrue(secret["defaultMode"] & 0o040 and self.pod["securityContext"]["fsGroup"],
                        "fractald could not read its tokens")
        cache_dir = re.search(r"^cache_dir = (\S+)", self.device_ini(), re.M).group(1)
        env = {e["name"]: e["value"] for e in self.container["env"]}
        # What fractald writes: the job spool, its OpenCL program cache, the drivers' caches.
        for path in (self.flags["--spool-dir"], cache_dir, env["XDG_CACHE_HOME"]):
            volume, mount = self.mount_of(path)
            self.assertIn("emptyDir", volume, path)
            self.assertFalse(mount.get("readOnly"), path)

    def test_device_config_parses(self):
        with tempfile.NamedTemporaryFile("w", suffix=".ini") as f:
            f.write(self.device_ini())
            f.flush()
            r = subprocess.run([h.FRACTALD, "--config", f.name, "--list-devices"], capture_output=True, text=True,
                               timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"(?m)^cpu +used ")

    def test_server_starts_with_the_manifest_flags_and_probes_see_serving(self):
        """fractald with the Deployment's args, but for where it listens and the paths in the pod,
        answers SERVING to the probes' health service names and NOT_SERVING once draining."""
        tmp = tempfile.mkdtemp(prefix="fractald-manifest-")
        self.addCleanup(shutil.rmtree, tmp, True)
        tokens = os.path.join(tmp, "tokens")
        with open(tokens, "w") as f:
            f.write("probe-test:%s\n" % ("ab" * 24))
        config = os.path.join(tmp, "devices.ini")
        with open(config, "w") as f:
            f.write(self.device_ini().replace("/var/cache/fractald", os.path.join(tmp, "cache")))
        args = []
        for flag, value in self.flags.items():
            if flag in ("--listen", "--spool-dir", "--log-level"):
                continue  # the harness's: 127.0.0.1 on an ephemeral port, a temporary spool
            value = {"--http-listen": "127.0.0.1:0", "--token-file": tokens, "--config": config}.get(flag, value)
            args += [flag] if value is None else [flag, value]
        server = h.Server(*args)
        channel = grpc.insecure_channel(server.target)
        try:
            health = health_pb2_grpc.HealthStub(channel)
            services = {self.container[p]["grpc"].get("service", "")
                        for p in ("readinessProbe", "livenessProbe", "startupProbe")}
            for service in services:
                status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
                self.assertEqual(status, health_pb2.HealthCheckResponse.SERVING, repr(service))
            with self.assertRaises(grpc.RpcError) as cm:
                health.Check(health_pb2.HealthCheckRequest(service="fractal.v1.NoSuchService"), timeout=10)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
            # The readiness probe turns the pod unready as soon as the drain begins.
            watch = health.Watch(health_pb2.HealthCheckRequest(
                service=self.container["readinessProbe"]["grpc"]["service"]), timeout=30)
            self.assertEqual(next(watch).status, health_pb2.HealthCheckResponse.SERVING)
            server.proc.send_signal(signal.SIGTERM)
            self.assertEqual(next(watch).status, health_pb2.HealthCheckResponse.NOT_SERVING)
        finally:
            channel.close()
            self.assertEqual(server.stop(), 0)
