"""``sct-gm qc --serve QC_DIR``: the QC report on 127.0.0.1 with the slice editor switched on.

The standard library's :class:`http.server.ThreadingHTTPServer` serves it: a handful of static files
and three JSON/bytes routes for one local user need no framework (no new dependency, nothing to
configure, and the whole request surface is the ~100 lines below, which the tests walk through).

Security (tests/qc/test_serve.py tries each):

- loopback only: any other host is refused before a socket is opened, and requests whose ``Host``
  header is not this server's loopback address are refused (DNS rebinding);
- every URL starts with a random token (``http://127.0.0.1:PORT/<token>/index.html``): without it,
  or with another, the answer is 403 and nothing else is read; relative links in the page carry it;
- the request never names a path: it names an entry id (``[A-Za-z0-9._-]``, an existing folder of
  ``QC_DIR/entries``) and a slice number; the server derives the image, the automatic mask and the
  corrected mask's path from that entry (:func:`sctgm.labels.correction_path`) and writes nothing else;
- a mask payload must be exactly rows x cols bytes of 0 or 1, else 400 and nothing is written;
- saves are serialised (a thread lock and the QC folder's file lock, which other sct-gm processes
  writing this folder take too) and written to a temporary file renamed into place: a server killed
  mid-save leaves the previous file or the new one, never a partial one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import threading
from collections import OrderedDict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ..exceptions import InvalidOptionError, QcError, SctGmError
from . import corrections, report

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost")
#: Largest request body accepted (a 2048 x 2048 slice is 4 MiB).
MAX_BODY_BYTES = 16 << 20
#: Entries kept loaded (image and masks) for quick slice changes.
CACHE_ENTRIES = 4
_SAFE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
_SLICE_ROUTE = re.compile(r"^api/entries/([^/]+)/slices/(\d{1,6})$")
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".png": "image/png", ".json": "application/json"}
#: The page's policy, also sent as a header: scripts and data from this server only.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; object-src 'none'; frame-ancestors 'none'")


class ReviewServer(ThreadingHTTPServer):
    """The server of one QC folder; ``url`` is the address to open (it holds the token)."""

    daemon_threads = True

    def __init__(self, qc_dir: Path, host: str, port: int, token: str) -> None:
        self.root = qc_dir.resolve()
        self.token = token
        self.save_lock = threading.Lock()
        self.cache_lock = threading.Lock()
        self.cache: OrderedDict[tuple[str, float], corrections.EntryVolume] = OrderedDict()
        super().__init__((host, port), _Handler)
        self.host_names = {f"{h}:{self.server_address[1]}" for h in LOOPBACK}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{self.token}/index.html"

    def entry(self, entry_id: str) -> tuple[dict[str, Any], float]:
        """The record of entry ``entry_id`` of this folder and its mtime (QcError 404 when none)."""
        if not _SAFE.match(entry_id):
            raise _NotFound(f"entry {entry_id!r}: not an entry id")
        path = self.root / report.ENTRIES_DIR / entry_id / report.ENTRY_JSON
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            mtime = path.stat().st_mtime
        except (OSError, ValueError):
            raise _NotFound(f"entry {entry_id!r}: no such entry in {self.root}") from None
        if not isinstance(record, dict) or record.get("id") != entry_id:
            raise _NotFound(f"entry {entry_id!r}: no such entry in {self.root}")
        return record, mtime

    def volume(self, entry_id: str, *, fresh: bool = False) -> corrections.EntryVolume:
        record, mtime = self.entry(entry_id)
        key = (entry_id, mtime)
        with self.cache_lock:
            if not fresh and key in self.cache:
                self.cache.move_to_end(key)
                return self.cache[key]
        vol = corrections.open_entry(record)
        with self.cache_lock:
            self.cache[key] = vol
            while len(self.cache) > CACHE_ENTRIES:
                self.cache.popitem(last=False)
        return vol

    def save(self, entry_id: str, file_slice: int, body: bytes) -> dict[str, Any]:
        """Check the payload, then (serialised) reload the entry's masks and save the slice."""
        try:
            with self.save_lock, FileLock(str(self.root / report.LOCK_NAME), timeout=report.LOCK_TIMEOUT_S):
                vol = self.volume(entry_id, fresh=True)  # another process may have saved since
                shape = corrections.slice_view_shape(vol)
                mask = corrections.parse_mask(body, *shape)
                result = corrections.save_slice(vol, file_slice, mask)
                report.rebuild_index(self.root)  # the report lists the corrected slices, served or not
        except Timeout:
            raise QcError(f"{self.root}: another sct-gm process held the QC folder for {report.LOCK_TIMEOUT_S:.0f} s; "
                          "not saved, try again") from None
        return result


class _NotFound(QcError):
    pass


def start_server(qc_dir: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 0,
                 token: str | None = None) -> ReviewServer:
    """Bind a :class:`ReviewServer` for ``qc_dir`` (``port`` 0: a free one); call ``serve_forever()``.
    Refuses any host but the loopback address (:class:`~sctgm.exceptions.InvalidOptionError`) and a
    folder that is not a QC report (:class:`~sctgm.exceptions.QcError`)."""
    if host not in LOOPBACK:
        raise InvalidOptionError(f"host {host!r}: the review server listens on 127.0.0.1 only (it can write masks; "
                                 f"reach it from another machine through an SSH tunnel)", parameter="host")
    root = report.report_folder(qc_dir)  # sct-gm's report inside another tool's QC folder, if that is where it is
    if not (root / report.INDEX_HTML).is_file() or not (root / report.ENTRIES_DIR).is_dir():
        raise QcError(f"{root}: not a QC report folder (no {report.INDEX_HTML} and {report.ENTRIES_DIR}/); "
                      f"segmenting with a QC folder, or adding a QC entry, makes one")
    with FileLock(str(root / report.LOCK_NAME), timeout=report.LOCK_TIMEOUT_S):
        report.install_assets(root)  # a report made by an older sct-gm gets the editor's files
        report.rebuild_index(root)
    try:
        return ReviewServer(root, "127.0.0.1", port, token or secrets.token_urlsafe(24))
    except OSError as exc:
        raise InvalidOptionError(f"port {port}: cannot listen on 127.0.0.1 ({exc.strerror or exc})",
                                 parameter="port") from None


class _Handler(BaseHTTPRequestHandler):
    server: ReviewServer
    server_version = "sct-gm"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        log.debug("%s %s", self.address_string(), format % args)

    def _route(self) -> str | None:
        """The path after a valid token, or None after answering 403 (bad host, token or origin)."""
        host_ok = self.headers.get("Host", "") in self.server.host_names
        origin = self.headers.get("Origin")
        origin_ok = origin is None or origin in {f"http://{h}" for h in self.server.host_names}
        parts = self.path.split("?", 1)[0].split("/", 2)  # "", token, rest
        token_ok = len(parts) >= 2 and secrets.compare_digest(parts[1].encode(), self.server.token.encode())
        if not (host_ok and origin_ok and token_ok):
            self._send(HTTPStatus.FORBIDDEN, b"forbidden\n", "text/plain; charset=utf-8")
            return None
        return parts[2] if len(parts) == 3 else ""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        rest = self._route()
        if rest is None:
            return
        try:
            if rest == "api/info":
                return self._json({"editing": True, "qc_dir": str(self.server.root)})
            m = _SLICE_ROUTE.match(rest)
            if m:
                vol = self.server.volume(m.group(1))
                return self._json(corrections.slice_view(vol, int(m.group(2))))
            return self._static(rest or report.INDEX_HTML)
        except SctGmError as exc:
            self._error(exc)

    def do_POST(self) -> None:  # noqa: N802
        rest = self._route()
        if rest is None:
            return
        m = _SLICE_ROUTE.match(rest)
        if not m:
            return self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/octet-stream":
            return self._send(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, b"expected application/octet-stream\n",
                              "text/plain; charset=utf-8")
        try:
            n = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._send(HTTPStatus.LENGTH_REQUIRED, b"Content-Length required\n", "text/plain; charset=utf-8")
        if not 0 <= n <= MAX_BODY_BYTES:
            return self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"too large\n", "text/plain; charset=utf-8")
        body = self.rfile.read(n)
        try:
            self._json(self.server.save(m.group(1), int(m.group(2)), body))
        except SctGmError as exc:
            self._error(exc)

    def do_PUT(self) -> None:  # noqa: N802
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"method not allowed\n", "text/plain; charset=utf-8")

    do_DELETE = do_PATCH = do_PUT  # noqa: N815

    def _static(self, rest: str) -> None:
        parts = rest.split("/")
        allowed = (len(parts) == 1 and parts[0] in (report.INDEX_HTML, report.INDEX_JS)) or \
            (len(parts) == 2 and parts[0] == report.ASSETS_DIR) or (len(parts) == 3 and parts[0] == report.ENTRIES_DIR)
        path = self.server.root.joinpath(*parts)
        if not (allowed and all(_SAFE.match(p) for p in parts) and path.suffix in _TYPES and path.is_file()
                and path.resolve().is_relative_to(self.server.root)):
            return self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
        self._send(HTTPStatus.OK, path.read_bytes(), _TYPES[path.suffix])

    def _error(self, exc: SctGmError) -> None:
        status = HTTPStatus.NOT_FOUND if isinstance(exc, _NotFound) else (
            HTTPStatus.BAD_REQUEST if isinstance(exc, QcError) else HTTPStatus.CONFLICT)
        log.info("%s: %s", self.path.split("/", 2)[-1], exc)
        self._json({"error": str(exc)}, status)

    def _json(self, obj: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", CSP)
        self.end_headers()
        self.wfile.write(body)
