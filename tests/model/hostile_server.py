"""An HTTP server on 127.0.0.1 that serves correct bytes in ways tests/serve.py's does not: compressed on
the fly (``gzip``: ``Content-Encoding: gzip``, Content-Length the compressed size, whatever the client
asks in Accept-Encoding, as some proxies do) or trickled (``trickle``: one byte every ``trickle_s``, so
that no read ever times out). URL: ``/<mode>/<file name>``, files from ``root``."""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from ..serve import _Server


class HostileServer:
    def __init__(self, root: Path, trickle_s: float = 0.05) -> None:
        self.root = root
        self.trickle_s = trickle_s
        self.accept_encoding: list[str] = []  # what each request asked for
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                server.accept_encoding.append(self.headers.get("Accept-Encoding", ""))
                mode, _, name = self.path.lstrip("/").partition("/")
                path = server.root / name
                if "/" in name or not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                self.send_response(200)
                if mode == "gzip":
                    data = gzip.compress(data)
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if mode != "trickle":
                    self.wfile.write(data)
                    return
                self.close_connection = True
                try:
                    for i in range(len(data)):
                        if server._stop.wait(server.trickle_s):
                            return
                        self.wfile.write(data[i:i + 1])
                        self.wfile.flush()
                except OSError:
                    pass  # the client hung up: what the test wants

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/"

    def __enter__(self) -> "HostileServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
