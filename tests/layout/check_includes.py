"""check_includes: the layout's rules about third-party headers, checked on the sources: each of
grpc, OpenCL, libpng, SQLite, libpq, inih, MPFR and libmicrohttpd is included by the one module that
owns it, so the folders keep meaning what docs/ARCHITECTURE.md says. (Which of our own headers a
stage may include is enforced by the build: each library sees only the folders of the libraries
it links.)"""
import os
import re
import sys

# Header prefix -> the files (relative to the source root) that may include it.
OWNERS = {
    "grpc/": ("server/rpc/", "client/fractal.c", "client/stream.c", "client/jobs.c", "client/internal.h"),
    "CL/": ("server/engines/engine_cl_internal.h",),
    "png.h": ("server/image/encode.c",),
    "sqlite3.h": ("server/jobs/jobs_journal.c",),
    "ini.h": ("server/config.c", "server/engines/devconf.c"),
    "microhttpd.h": ("server/http/http_mhd.c",),
    # MPFR: the deep-zoom engine, and the tests' independent brute-force renderer beside it.
    "mpfr.h": ("server/deep/deep_internal.h", "tests/deep/"),
    # PostgreSQL (--job-store): the shared job store's backend.
    "libpq-fe.h": ("server/jobs/jobs_pg_internal.h",),
}
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.M)


def main(root):
    bad = []
    for top in ("server", "client", "proto", "kernels"):
        for folder, _, files in os.walk(os.path.join(root, top)):
            for name in files:
                if not name.endswith((".c", ".h", ".cl")):
                    continue
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, root)
                with open(path, encoding="utf-8") as f:
                    text = f.read()
                for header in INCLUDE.findall(text):
                    if header.startswith("../") or "/../" in header:
                        bad.append("%s: includes %s by a relative path" % (rel, header))
                    if header.endswith(".pb-c.h"):
                        continue  # protobuf-c's generated types (grpc/health/...): not grpc's API
                    for prefix, owners in OWNERS.items():
                        if header.startswith(prefix) and not rel.startswith(owners):
                            bad.append("%s: includes <%s>, which only %s may" % (rel, header, ", ".join(owners)))
    for line in bad:
        print(line)
    print("%d passed, %d failed" % (1 if not bad else 0, 1 if bad else 0))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..")))
