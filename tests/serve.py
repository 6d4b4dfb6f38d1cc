"""A counting HTTP server on 127.0.0.1 for the download tests, with scripted misbehaviour.

``behaviour[path]`` is a list of modes consumed one request at a time (the last one repeats):
"ok", "404", "500", "wrong" (same length, other bytes), "half" (announces the full length, sends half,
closes the connection), "slow" (waits ``slow_s`` before answering). Files come from ``root`` or from
``extra[path]`` (bytes), e.g. a zip archive built by the test.
"""

from __future__ import annotations

import socket
import threading
import time
import zipfile
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for the handlers: nothing outlives the test
    block_on_close = True

    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)  # a client that hung up early is expected


class ModelServer:
    def __init__(self, root: Path, slow_s: float = 0.0) -> None:
        self.root = root
        self.slow_s = slow_s
        self.behaviour: dict[str, list[str]] = {}
        self.extra: dict[str, bytes] = {}
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.lstrip("/")
                with server._lock:
                    server.counts[path] += 1
                    modes = server.behaviour.get(path, ["ok"])
                    mode = modes.pop(0) if len(modes) > 1 else modes[0]
                if mode == "slow" or server.slow_s:
                    time.sleep(server.slow_s)
                if path in server.extra:
                    data = server.extra[path]
                elif (server.root / path).is_file() and "/" not in path:
                    data = (server.root / path).read_bytes()
                else:
                    mode = "404"
                if mode in ("404", "500"):
                    self.send_error(int(mode))
                    return
                if mode == "wrong":
                    data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if mode == "half":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(data)

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/"

    def __enter__(self) -> "ModelServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def refused_url() -> str:
    """A local address where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def make_zip(members: dict[str, bytes]) -> bytes:
    """A zip archive (bytes) with the given member names, written verbatim (even unsafe ones)."""
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return buf.getvalue()


def make_symlink_zip(name: str, target: str) -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo(name)
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, target)
    return buf.getvalue()
