"""test_install: `make install` into a temporary prefix, then what a new user does with what it
installed: a C program built with pkg-config alone (shared, and once static) rendering on the
installed fractald, the installed `fractal` without LD_LIBRARY_PATH, Python stubs generated from
the installed protos, the example config and the systemd unit. And the man pages: they format
without a warning and document every option the programs' --help lists.

ctest runs it (tests/install/CMakeLists.txt) and passes the paths in the environment:
  python3 -m unittest -v test_install.InstallPrefix    (install.prefix)
  python3 -m unittest -v test_install.ManPages         (man.pages)
"""
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import unittest

import fractald_harness

BUILD_DIR = os.environ.get("FRACTALD_BUILD_DIR", "")
SOURCE_DIR = os.environ.get("FRACTAL_SOURCE_DIR", "")
VERSION = os.environ.get("FRACTALD_VERSION", "")
CC = os.environ.get("CC", "cc")
MAKE = os.environ.get("FRACTALD_MAKE", "make")
# A sanitizer build installs sanitized libraries; their users must link the runtime too.
EXTRA_CFLAGS = shlex.split(os.environ.get("FRACTAL_TEST_CFLAGS", ""))
PROTOC = os.environ.get("PROTOC", "protoc")
GRPC_PYTHON_PLUGIN = os.environ.get("GRPC_PYTHON_PLUGIN", "grpc_python_plugin")
SYSTEMD_ANALYZE = os.environ.get("SYSTEMD_ANALYZE") or shutil.which("systemd-analyze")
HERE = os.path.dirname(os.path.abspath(__file__))

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(cmd, env=None, timeout=120, cwd=None):
    """Runs cmd (a list); returns the CompletedProcess, text mode, output captured."""
    return subprocess.run(cmd, env=env, cwd=cwd, timeout=timeout, capture_output=True, text=True)


def user_env(**extra):
    """The environment of a user of the prefix: nothing from the build, no LD_LIBRARY_PATH."""
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    env.update(extra)
    return env


def make_install(prefix, destdir=""):
    """Runs the Makefile's own `install` recipe on ctest's build. `-o build -o deps` tells make
    that those prerequisites are done: the build is this one, already up to date, and `make build`
    would configure it again with the Makefile's flags (and rebuild it under the running tests)."""
    return run([MAKE, "--no-print-directory", "-C", SOURCE_DIR, "-o", "build", "-o", "deps", "install",
                "BUILD=" + BUILD_DIR, "PREFIX=" + prefix, "DESTDIR=" + destdir], timeout=300)


def png_size(data):
    """(width, height) of a PNG byte string; asserts the signature and that IHDR comes first."""
    assert data[:8] == PNG_SIGNATURE, "not a PNG signature: %r" % data[:8]
    assert data[12:16] == b"IHDR", "first chunk is %r, not IHDR" % data[12:16]
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


class InstallPrefix(unittest.TestCase):
    """One `make install PREFIX=$tmp` and one fractald started from it for every case."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fractald-install-")
        # Cleanups run even when setUpClass fails half way (tearDownClass would not).
        cls.addClassCleanup(shutil.rmtree, cls.tmp, ignore_errors=True)
        cls.prefix = os.path.join(cls.tmp, "prefix")
        done = make_install(cls.prefix)
        if done.returncode != 0:
            raise AssertionError("make install PREFIX=%s failed (%d):\n%s%s"
                                 % (cls.prefix, done.returncode, done.stdout, done.stderr))
        cls.install_log = done.stdout
        cls.bin = os.path.join(cls.prefix, "bin")
        cls.libdir = os.path.join(cls.prefix, "lib")
        cls.pkgconfig_env = user_env(PKG_CONFIG_PATH=os.path.join(cls.libdir, "pkgconfig"))
        # The installed server, not the build's; OpenCL off: this is about the install, and the
        # CPU engine starts in milliseconds.
        fractald_harness.FRACTALD = os.path.join(cls.bin, "fractald")
        cls.server = fractald_harness.Server("--devices", "opencl = off")
        cls.addClassCleanup(cls.server.stop)

    def path(self, *parts):
        return os.path.join(self.prefix, *parts)

    def assert_ok(self, done, what):
        self.assertEqual(done.returncode, 0, "%s exited %d:\n%s%s" % (what, done.returncode, done.stdout,
                                                                      done.stderr))

    def test_tree(self):
        """Every part of the install story is where the README says."""
        so = "libfractal.so.%s" % VERSION
        for rel in ["bin/fractald", "bin/fractal",
                    "lib/" + so, "lib/libfractal.so.%s" % VERSION.split(".")[0], "lib/libfractal.so",
                    "lib/libfractal.a", "lib/pkgconfig/fractal.pc",
                    "include/fractal/fractal.h", "include/fractal/version.h",
                    "share/fractald/proto/fractal/v1/fractal.proto",
                    "share/fractald/proto/grpc/health/v1/health.proto",
                    "share/man/man1/fractal.1", "share/man/man8/fractald.8",
                    "share/fractald/fractald.ini.example", "lib/systemd/system/fractald.service"]:
            self.assertTrue(os.path.isfile(self.path(rel)), "not installed: " + rel)
        for prog in ["bin/fractald", "bin/fractal"]:
            self.assertTrue(os.access(self.path(prog), os.X_OK), prog + " is not executable")

    def test_pkgconfig_names_the_install_prefix(self):
        """fractal.pc is written at install time: it names this prefix, not the configured one."""
        for args, want in [(["--modversion"], VERSION), (["--variable=prefix"], self.prefix),
                           (["--variable=libdir"], self.libdir),
                           (["--variable=includedir"], self.path("include"))]:
            done = run(["pkg-config"] + args + ["fractal"], env=self.pkgconfig_env)
            self.assert_ok(done, "pkg-config " + " ".join(args))
            self.assertEqual(done.stdout.strip(), want, args)

    def test_version_header(self):
        """fractal/version.h states the project's version, the one in CMakeLists.txt."""
        with open(self.path("include/fractal/version.h")) as f:
            text = f.read()
        major, minor, patch = VERSION.split(".")
        self.assertIn('#define FRACTAL_VERSION "%s"' % VERSION, text)
        for name, value in [("MAJOR", major), ("MINOR", minor), ("PATCH", patch)]:
            self.assertRegex(text, r"#define FRACTAL_VERSION_%s %s\n" % (name, value))

    def build_consumer(self, static):
        """Compiles consumer.c against the prefix with nothing but pkg-config's flags."""
        out = os.path.join(self.tmp, "consumer-static" if static else "consumer")
        flags = ["--static"] if static else []
        cflags = run(["pkg-config"] + flags + ["--cflags", "fractal"], env=self.pkgconfig_env)
        libs = run(["pkg-config"] + flags + ["--libs", "fractal"], env=self.pkgconfig_env)
        self.assert_ok(cflags, "pkg-config --cflags")
        self.assert_ok(libs, "pkg-config --libs")
        lib_args = shlex.split(libs.stdout)
        if static:
            # -lfractal would pick libfractal.so, which lies beside the archive: name the archive.
            self.assertIn("-lfractal", lib_args)
            lib_args = ["-l:libfractal.a" if a == "-lfractal" else a for a in lib_args]
        done = run([CC, "-std=c11", "-Wall", "-Wextra", "-pedantic", "-Werror", *EXTRA_CFLAGS,
                    os.path.join(HERE, "consumer.c"), "-o", out, *shlex.split(cflags.stdout), *lib_args],
                   env=self.pkgconfig_env)
        self.assert_ok(done, "cc consumer.c")
        return out

    def render_with(self, program, env):
        png = program + ".png"
        done = run([program, self.server.target, png], env=env, timeout=60)
        self.assert_ok(done, program)
        self.assertIn("libfractal %s\n" % VERSION, done.stdout)
        with open(png, "rb") as f:
            self.assertEqual(png_size(f.read()), (64, 48))

    def test_c_program_shared(self):
        """A program built with `pkg-config --cflags --libs fractal` renders on the server."""
        program = self.build_consumer(static=False)
        needed = run(["ldd", program], env=user_env(LD_LIBRARY_PATH=self.libdir))
        self.assertIn("%s/libfractal.so.%s " % (self.libdir, VERSION.split(".")[0]), needed.stdout)
        # pkg-config gives no rpath: a prefix outside the loader's path needs LD_LIBRARY_PATH.
        self.render_with(program, user_env(LD_LIBRARY_PATH=self.libdir))

    def test_c_program_static(self):
        """The same program linked with `pkg-config --static` and libfractal.a needs no
        libfractal.so and renders the same way."""
        program = self.build_consumer(static=True)
        dynamic = run(["readelf", "-d", program])
        self.assert_ok(dynamic, "readelf -d")
        self.assertNotIn("libfractal", dynamic.stdout)
        self.render_with(program, user_env())

    def test_static_library_exports_what_the_shared_one_does(self):
        """libfractal.a defines only the public fractal_* functions globally, as libfractal.so
        exports them: the protobuf-c descriptors and helpers inside stay local."""
        def symbols(args, path):
            done = run(["nm"] + args + [path])
            self.assert_ok(done, "nm " + path)
            return sorted(line.split()[-1] for line in done.stdout.splitlines()
                          if len(line.split()) == 3)
        static = symbols(["-g", "--defined-only"], self.path("lib/libfractal.a"))
        shared = symbols(["-D", "--defined-only"], self.path("lib/libfractal.so"))
        self.assertIn("fractal_render", shared)
        self.assertEqual(static, shared)

    def test_installed_cli_runs_without_ld_library_path(self):
        """`fractal --version` finds the installed libfractal through its $ORIGIN rpath."""
        cli = os.path.join(self.bin, "fractal")
        needed = run(["ldd", cli], env=user_env())
        self.assert_ok(needed, "ldd fractal")
        loaded = re.search(r"^\s*libfractal\.so\.\d+ => (\S+)", needed.stdout, re.M)
        self.assertIsNotNone(loaded, "ldd fractal lists no libfractal")
        self.assertEqual(os.path.realpath(loaded.group(1)),
                         os.path.realpath(os.path.join(self.libdir, "libfractal.so.%s" % VERSION.split(".")[0])),
                         "the installed fractal does not load the installed libfractal")
        done = run([cli, "--version"], env=user_env())
        self.assert_ok(done, "fractal --version")
        self.assertRegex(done.stdout, r"^fractal %s( \(libfractal %s\))?\n$" % (re.escape(VERSION), re.escape(VERSION)))
        done = run([cli, "health", "--server", self.server.target], env=user_env())
        self.assert_ok(done, "fractal health")
        self.assertEqual(done.stdout.strip(), "SERVING")
        done = run([os.path.join(self.bin, "fractald"), "--version"], env=user_env())
        self.assert_ok(done, "fractald --version")
        self.assertEqual(done.stdout.strip(), "fractald %s" % VERSION)

    def test_python_stubs_from_the_installed_protos(self):
        """Stubs generated from PREFIX/share/fractald/proto alone talk to the server."""
        import grpc
        protos = self.path("share/fractald/proto")
        gen = os.path.join(self.tmp, "pygen")
        health_gen = os.path.join(self.tmp, "pygen-health")
        os.makedirs(gen)
        os.makedirs(health_gen)
        plugin = ["--plugin=protoc-gen-grpc_python=" + GRPC_PYTHON_PLUGIN, "-I", protos]
        for out, proto in [(gen, "fractal/v1/fractal.proto"), (health_gen, "grpc/health/v1/health.proto")]:
            done = run([PROTOC, "--python_out=" + out, "--grpc_python_out=" + out, *plugin, proto])
            self.assert_ok(done, "protoc " + proto)
        sys.path.insert(0, gen)
        try:
            from fractal.v1 import fractal_pb2 as pb, fractal_pb2_grpc as pb_grpc
        finally:
            sys.path.remove(gen)
        self.assertTrue(pb.__file__.startswith(gen + os.sep), pb.__file__)
        # The generated health package is named grpc and would shadow grpcio's: load its
        # messages as a module of their own.
        spec = importlib.util.spec_from_file_location(
            "installed_health_pb2", os.path.join(health_gen, "grpc/health/v1/health_pb2.py"))
        health_pb2 = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(health_pb2)

        with grpc.insecure_channel(self.server.target) as channel:
            check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                                        response_deserializer=health_pb2.HealthCheckResponse.FromString)
            reply = check(health_pb2.HealthCheckRequest(service="fractal.v1.Renderer"), timeout=10)
            self.assertEqual(reply.status, health_pb2.HealthCheckResponse.SERVING)
            devices = pb_grpc.RendererStub(channel).ListDevices(pb.ListDevicesRequest(), timeout=10)
            self.assertIn("cpu", [d.id for d in devices.devices])

    def test_example_config(self):
        """The installed example is the README's device config, and the installed fractald takes
        it as it is and with its commented [server] section turned on."""
        example = self.path("share/fractald/fractald.ini.example")
        with open(example) as f:
            text = f.read()
        with open(os.path.join(SOURCE_DIR, "README.md")) as f:
            readme = f.read()
        blocks = [b for b in re.findall(r"```ini\n(.*?)```", readme, re.S) if "\n[devices]\n" in b]
        self.assertEqual(len(blocks), 1, "README.md has no ```ini block with a [devices] section")
        for line in blocks[0].splitlines():
            self.assertIn(line + "\n", text, "the README's example config line %r is not in the example" % line)
        server = re.sub(r"^;(\[server\]|[a-z_]+ = )", r"\1", text, flags=re.M)
        self.assertIn("\n[server]\n", server)
        for name, content in [("as-installed.ini", text), ("with-server.ini", server)]:
            conf = os.path.join(self.tmp, name)
            with open(conf, "w") as f:
                f.write(content)
            done = run([os.path.join(self.bin, "fractald"), "--config", conf, "--devices", "opencl = off",
                        "--list-devices"], env=user_env())
            self.assert_ok(done, "fractald --config " + name)

    def test_systemd_unit(self):
        """ExecStart names the installed fractald; systemd-analyze, where installed, finds no
        problem and rates the sandbox's exposure at most 2 of 10. systemd need not be running."""
        unit = self.path("lib/systemd/system/fractald.service")
        with open(unit) as f:
            text = f.read()
        self.assertRegex(text, r"\nExecStart=%s --spool-dir %%S/fractald/spool " % re.escape(
            os.path.join(self.bin, "fractald")))
        for key in ["DynamicUser=yes", "StateDirectory=fractald", "ProtectSystem=strict", "ProtectHome=yes",
                    "PrivateTmp=yes", "NoNewPrivileges=yes"]:
            self.assertIn("\n" + key + "\n", text)
        if not SYSTEMD_ANALYZE:
            self.skipTest("systemd-analyze is not installed (Debian package systemd)")
        # MANPATH: Documentation=man:fractald(8) must resolve to the installed page.
        env = user_env(MANPATH=self.path("share/man"))
        done = run([SYSTEMD_ANALYZE, "verify", unit], env=env)
        self.assertEqual((done.returncode, done.stderr), (0, ""), "systemd-analyze verify:\n" + done.stdout)
        # --threshold counts tenths: 20 is the exposure of 2.0 that `security` prints.
        done = run([SYSTEMD_ANALYZE, "security", "--offline=yes", "--threshold=20", "--no-pager", unit], env=env)
        self.assertEqual(done.returncode, 0, "systemd-analyze security rates the sandbox over 2.0:\n"
                         + done.stdout[-600:])

    def test_destdir_stages_for_the_prefix(self):
        """DESTDIR stages the files; what they say inside is the final prefix's."""
        stage = os.path.join(self.tmp, "stage")
        done = make_install("/usr/local", destdir=stage)
        self.assert_ok(done, "make install DESTDIR=")
        root = os.path.join(stage, "usr/local")
        self.assertTrue(os.path.isfile(os.path.join(root, "bin/fractald")))
        with open(os.path.join(root, "lib/pkgconfig/fractal.pc")) as f:
            self.assertIn("\nprefix=/usr/local\n", "\n" + f.read())
        with open(os.path.join(root, "lib/systemd/system/fractald.service")) as f:
            self.assertIn("\nExecStart=/usr/local/bin/fractald ", f.read())


def roff_text(path):
    """A man page's roff source with font changes and escapes taken out: words as man shows them."""
    with open(path) as f:
        text = f.read()
    text = re.sub(r"\\f[BIRP]|\\f\(..|\\f\[[^]]*\]", "", text)
    text = text.replace("\\-", "-").replace("\\&", "").replace("\\|", "").replace("\\c", "")
    return text


def sections(text):
    """{heading: text} for each .SH and .SS heading of a roff source (first word, lower case)."""
    out, name = {}, ""
    for line in text.splitlines():
        m = re.match(r"\.S[HS]\s+\"?([^\"\s]+)", line)
        if m:
            name = m.group(1).lower()
        out[name] = out.get(name, "") + line + "\n"
    return out


OPTION = r"(?<![\w-])(--?[A-Za-z][\w-]*)"
CAPS_NAME = r"\b([A-Z][A-Z0-9]*_[A-Z0-9_]+)\b"


def help_of(program, *args):
    done = run([program, *args, "--help"])
    assert done.returncode == 0, "%s %s --help exited %d" % (program, " ".join(args), done.returncode)
    return done.stdout


class ManPages(unittest.TestCase):
    """docs/man: man(7) pages that format cleanly and cover every option of --help."""

    def page(self, name):
        return os.path.join(SOURCE_DIR, "docs", "man", name)

    def test_lint(self):
        """man --warnings prints nothing, at several widths, and lexgrog reads the NAME line."""
        for name in ["fractald.8", "fractal.1"]:
            for width in ["60", "80", "120"]:
                done = run(["man", "--warnings", "-E", "UTF-8", "-l", self.page(name)],
                           env=user_env(MANWIDTH=width, LC_ALL="C.UTF-8"))
                self.assertEqual((done.returncode, done.stderr), (0, ""), "%s at width %s" % (name, width))
                self.assertIn("NAME", done.stdout)
            done = run(["lexgrog", self.page(name)])
            self.assertEqual(done.returncode, 0, "lexgrog %s: %s%s" % (name, done.stdout, done.stderr))
            self.assertIn('"%s - ' % name.split(".")[0], done.stdout)

    def assert_documents(self, help_text, page_text, what):
        """Every option (and every NAME_LIKE_THIS) of help_text is in page_text as a word."""
        for word in sorted(set(re.findall(OPTION, help_text)) | set(re.findall(CAPS_NAME, help_text))):
            self.assertTrue(re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(word), page_text),
                            "%s: %s is in --help, not in the man page" % (what, word))

    def test_fractald_options(self):
        """Every option and environment variable of `fractald --help` is in fractald.8."""
        text = roff_text(self.page("fractald.8"))
        self.assert_documents(help_of(os.environ["FRACTALD_BIN"]), text, "fractald")
        for var in ["FRACTALD_DEVICES", "FRACTALD_FAULT_INJECT", "XDG_STATE_HOME", "XDG_CACHE_HOME"]:
            self.assertIn(var, sections(text)["environment"])

    def test_fractal_options(self):
        """Every option of `fractal --help` is in fractal.1, and every option of
        `fractal CMD --help` in CMD's own section or under COMMON OPTIONS."""
        cli = os.environ["FRACTAL_CLI_BIN"]
        text = roff_text(self.page("fractal.1"))
        parts = sections(text)
        self.assert_documents(help_of(cli), text, "fractal")
        commands = re.findall(r"^  ([a-z]+)  ", help_of(cli), re.M)
        self.assertIn("render", commands)
        for command in commands:
            self.assertIn(command, parts, "fractal.1 has no section for %s" % command)
            # The exit statuses every command's --help repeats are documented once, under EXIT STATUS.
            self.assert_documents(help_of(cli, command), parts[command] + parts["common"] + parts["exit"],
                                  "fractal " + command)
        self.assertIn("FRACTAL_SERVER", parts["environment"])


if __name__ == "__main__":
    unittest.main()
