"""stalled_client: a raw HTTP/2 gRPC client that never lets the server send message data (it
advertises a flow-control window of 0 and never opens it), to test what hostile or stuck readers
can do to fractald. No gRPC library would behave like this on purpose, hence the hand-written
framing: the connection preface, SETTINGS, HEADERS with literal header fields, one DATA frame."""
import socket
import struct
import threading

SETTINGS, HEADERS, DATA, PING = 4, 1, 0, 6
INITIAL_WINDOW_SIZE = 4


def _frame(ftype, flags, stream_id, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream_id) + payload


def _literal(name, value):
    """A header field as an HPACK literal without indexing, new name (short strings only)."""
    n, v = name.encode(), value.encode()
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


class StalledConnection:
    """One HTTP/2 connection to 127.0.0.1:port whose streams never receive a byte of data."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" +
                          _frame(SETTINGS, 0, 0, struct.pack(">HI", INITIAL_WINDOW_SIZE, 0)))
        self.next_stream = 1
        self.closed = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _recv(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def _read(self):
        """Acknowledges SETTINGS and PINGs (so the peer keeps the connection) and nothing else."""
        try:
            while True:
                head = self._recv(9)
                length, ftype, flags = int.from_bytes(head[:3], "big"), head[3], head[4]
                payload = self._recv(length)
                if ftype == SETTINGS and not flags & 1:
                    self.sock.sendall(_frame(SETTINGS, 1, 0))
                elif ftype == PING and not flags & 1:
                    self.sock.sendall(_frame(PING, 1, 0, payload))
        except (EOFError, OSError):
            self.closed.set()

    def call(self, path, message=b""):
        """Starts a call of `path` with one request message (serialized protobuf); no deadline."""
        sid, self.next_stream = self.next_stream, self.next_stream + 2
        headers = (_literal(":method", "POST") + _literal(":scheme", "http") + _literal(":path", path) +
                   _literal(":authority", "127.0.0.1") + _literal("content-type", "application/grpc") +
                   _literal("te", "trailers"))
        body = b"\x00" + struct.pack(">I", len(message)) + message
        self.sock.sendall(_frame(HEADERS, 4, sid, headers) + _frame(DATA, 1, sid, body))
        return sid

    def close(self):
        self.sock.close()
