"""fractald_harness: start a real fractald on 127.0.0.1 with an ephemeral port for a test, and
always stop it (also when the test fails or the runner dies)."""
import atexit
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile

GEN = os.environ.get("FRACTAL_PY_GEN")
if GEN and GEN not in sys.path:
    sys.path.insert(0, GEN)

FRACTALD = os.environ.get("FRACTALD_BIN", "fractald")
FRACTAL_CLI = os.environ.get("FRACTAL_CLI_BIN", "fractal")

_live = []


def _stop_all():
    for proc in list(_live):
        if proc.poll() is None:
            proc.kill()
            proc.wait()


atexit.register(_stop_all)


class Server:
    """A fractald child process. `target` is "127.0.0.1:PORT" once started. Each server gets its
    own job spool in a temporary directory (removed by stop()) unless `spool` names one to keep,
    e.g. to restart a server on the same journal."""

    # A cold start compiles the OpenCL kernels (seconds; more under sanitizers) before listening.
    def __init__(self, *args, spool=None, ready_timeout=90.0):
        self.own_spool = spool is None
        self.spool = tempfile.mkdtemp(prefix="fractald-spool-") if spool is None else spool
        cmd = [FRACTALD, "--listen", "127.0.0.1:0", "--log-level", "warn", "--spool-dir", self.spool, *args]
        # PR_SET_PDEATHSIG is not reachable from Python's stdlib; atexit plus the test's own
        # stop() cover normal and failing runs, and the kernel closes the pipe if we are killed.
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _live.append(self.proc)
        ready, _, _ = select.select([self.proc.stdout], [], [], ready_timeout)
        line = self.proc.stdout.readline() if ready else ""
        m = re.match(r"fractald listening on (\S+):(\d+)", line)
        if not m:
            # stop() closes the pipes (and shows stderr when the exit code says it failed).
            self.stop()
            raise RuntimeError("fractald did not start: %r" % line)
        self.port = int(m.group(2))
        self.target = "127.0.0.1:%d" % self.port

    def stop(self, timeout=15.0):
        """SIGTERM, then SIGKILL if it does not exit in time. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc in _live:
            _live.remove(self.proc)
        # A server that did not exit cleanly says why on stderr (a sanitizer report, an abort):
        # show its end, or a CI failure says only "exit code 1".
        if self.proc.returncode != 0 and self.proc.stderr:
            sys.stderr.write("fractald exited with %d; the end of its stderr:\n%s\n"
                             % (self.proc.returncode, self.proc.stderr.read()[-20000:]))
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()
        if self.own_spool:
            shutil.rmtree(self.spool, ignore_errors=True)
        return self.proc.returncode

    def stop_and_read_log(self, timeout=15.0):
        """SIGTERM, wait for the exit, and return (exit code, everything it wrote to stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if self.proc in _live:
            _live.remove(self.proc)
        if self.own_spool:
            shutil.rmtree(self.spool, ignore_errors=True)
        return self.proc.returncode, err

    def kill(self):
        """SIGKILL, as a crash: nothing gets a chance to clean up. The spool is kept."""
        self.proc.kill()
        self.proc.wait()
        if self.proc in _live:
            _live.remove(self.proc)
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()


def png_chunks(data):
    """Yields (type, payload) for each chunk of a PNG byte string; asserts the signature and CRCs."""
    import zlib
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    pos = 8
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        ctype = data[pos + 4:pos + 8]
        payload = data[pos + 8:pos + 8 + length]
        crc = int.from_bytes(data[pos + 8 + length:pos + 12 + length], "big")
        assert zlib.crc32(ctype + payload) == crc, "bad CRC in %r chunk" % ctype
        yield ctype.decode("ascii"), payload
        pos += 12 + length


def png_info(data):
    """(width, height, bit_depth, colour_type, {text keyword: text}, raw decompressed IDAT)."""
    import zlib
    texts, idat, ihdr = {}, b"", None
    for ctype, payload in png_chunks(data):
        if ctype == "IHDR":
            ihdr = payload
        elif ctype == "tEXt":
            key, _, value = payload.partition(b"\0")
            texts[key.decode("latin-1")] = value.decode("latin-1")
        elif ctype == "zTXt":
            key, _, rest = payload.partition(b"\0")
            texts[key.decode("latin-1")] = zlib.decompress(rest[1:]).decode("latin-1")
        elif ctype == "iTXt":
            key, _, rest = payload.partition(b"\0")
            flag, _method = rest[0], rest[1]
            _lang, _, rest = rest[2:].partition(b"\0")
            _tkey, _, text = rest.partition(b"\0")
            texts[key.decode("latin-1")] = (zlib.decompress(text) if flag else text).decode("utf-8")
        elif ctype == "IDAT":
            idat += payload
    width, height = int.from_bytes(ihdr[0:4], "big"), int.from_bytes(ihdr[4:8], "big")
    return width, height, ihdr[8], ihdr[9], texts, zlib.decompress(idat)


def png_pixels(data):
    """Decodes an 8-bit RGB or 16-bit grey non-interlaced PNG into a list of rows of bytes
    (unfiltered scanlines)."""
    width, height, depth, ctype, _, raw = png_info(data)
    bpp = {(8, 2): 3, (16, 0): 2, (8, 0): 1}[(depth, ctype)]
    stride = width * bpp
    rows, prev, pos = [], bytearray(stride), 0
    for _ in range(height):
        ftype = raw[pos]
        line = bytearray(raw[pos + 1:pos + 1 + stride])
        pos += 1 + stride
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 255
            elif ftype == 2:
                line[i] = (line[i] + b) & 255
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 255
        rows.append(bytes(line))
        prev = line
    return rows
