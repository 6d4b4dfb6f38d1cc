"""Fetch one verified file from a source: an HTTP(S) URL, a ``file://`` URL or a local path.

This is the only module that imports :mod:`requests`. Files stream into a destination the caller
chose (a temporary folder under the cache), are checked against their registered size and sha256
while and after they arrive, and are left in place only when they match. Transient network errors
(connection refused or reset, timeouts, a connection closed half-way, HTTP 429/5xx) are retried with
exponential back-off; anything else fails at once. Zip archives are extracted member by member after
every member name has been checked (no absolute path, no ``..``, no link). A failed write to the
destination (a full or read-only disk) is no source's fault: it is raised as the OSError it is, and no
other source is tried.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import socket
import threading
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional
from urllib.parse import unquote, urlparse

if TYPE_CHECKING:
    import requests

from ..exceptions import DownloadError, UnsafeArchiveError

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 16
#: A transfer is cut when it takes longer than its size at this rate (or MIN_DEADLINE_S if longer): the
#: read timeout bounds each read, not the transfer, so a server sending a byte every few seconds would
#: hold the install lock (and every process waiting on it) for days. 10 kB/s is far below any link
#: that works (`large`, 2 MB: 200 s), so only a stalled or hostile server is cut.
MIN_RATE_BYTES_S = 10_000.0
#: The least time any one file is given, whatever its size (small files, a slow start).
MIN_DEADLINE_S = 300.0


@dataclass(frozen=True)
class Progress:
    """One progress report: ``done`` of ``total`` bytes (``total`` None when unknown) of ``label``."""

    label: str
    done: int
    total: Optional[int]


#: Called from the downloading thread after each chunk; must be cheap.
ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class DownloadPolicy:
    """How hard to try one source: timeouts (s), attempts per file, first back-off delay (s,
    doubled after each failed attempt), the largest archive accepted (bytes), and how long to wait
    for another process installing the same model (s)."""

    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    attempts: int = 3
    backoff_s: float = 0.5
    max_archive_bytes: int = 1 << 30
    lock_timeout_s: float = 1800.0
    min_rate_bytes_s: float = MIN_RATE_BYTES_S
    min_deadline_s: float = MIN_DEADLINE_S

    def deadline_s(self, size: Optional[int]) -> float:
        """The longest one transfer of ``size`` bytes may take (s)."""
        return max(self.min_deadline_s, (size or 0) / self.min_rate_bytes_s)


@dataclass(frozen=True)
class Expected:
    """What a file must be: its name (a plain file name), size in bytes and sha256 (hex)."""

    name: str
    size: Optional[int]
    sha256: Optional[str]


class _Transient(Exception):
    """An error worth retrying after a pause."""


def new_session() -> requests.Session:
    """An HTTP session (connection reuse) for the downloads of one install."""
    import requests  # here, not at the top: a segmentation with the model cached never needs it

    session = requests.Session()
    session.headers["User-Agent"] = "sct-gm (model download)"
    # the bytes as published: a compressed transfer's Content-Length is not the file's size
    session.headers["Accept-Encoding"] = "identity"
    return session


def is_url(source: str) -> bool:
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", source) is not None


def local_path(source: str) -> Optional[Path]:
    """The local path a source names (a plain path or a ``file://`` URL), else None."""
    if not is_url(source):
        return Path(source).expanduser()
    parsed = urlparse(source)
    return Path(unquote(parsed.path)) if parsed.scheme == "file" else None


def join_source(base: str, name: str) -> str:
    """The address of file ``name`` under a base URL or folder."""
    if is_url(base):
        return base if base.endswith("/" + name) else base.rstrip("/") + "/" + name
    return str(Path(base).expanduser() / name)


def _short(exc: BaseException) -> str:
    """A one-line reason: the root cause of a requests error, without the connection object's repr."""
    import requests

    inner = exc.args[0] if isinstance(exc, requests.RequestException) and exc.args else exc
    inner = getattr(inner, "reason", None) or inner
    text = re.sub(r"^(<[^>]*>|\w+\(host=[^)]*\)): ", "", str(inner).replace("\n", " "))
    return text if len(text) <= 160 else text[:157] + "..."


def _http_chunks(session: requests.Session, url: str, expected: Expected, policy: DownloadPolicy,
                 max_bytes: Optional[int]) -> Iterator[tuple[bytes, Optional[int]]]:
    """Yield (chunk, total) from one GET; raise _Transient or DownloadError."""
    import requests

    try:
        resp = session.get(url, stream=True, timeout=(policy.connect_timeout_s, policy.read_timeout_s))
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise _Transient(f"connection failed ({_short(exc)})") from exc
    except requests.RequestException as exc:
        raise DownloadError(f"request failed ({_short(exc)})") from exc
    with resp:
        if resp.status_code == 429 or resp.status_code >= 500:
            raise _Transient(f"HTTP {resp.status_code} {resp.reason}")
        if resp.status_code >= 400:
            raise DownloadError(f"HTTP {resp.status_code} {resp.reason}")
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if resp.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity"):
            # compressed on the fly although asked not to (some servers and proxies): Content-Length is
            # the compressed size and iter_content decompresses; the byte cap and sha256 still hold
            total = None
        if total is not None and expected.size is not None and total != expected.size:
            raise DownloadError(f"server announces {total} bytes, expected {expected.size}")
        if total is not None and max_bytes is not None and total > max_bytes:
            raise DownloadError(f"server announces {total} bytes, more than the {max_bytes} accepted")
        deadline = policy.deadline_s(expected.size or total or max_bytes)
        cut = threading.Event()
        timer = threading.Timer(deadline, _cut_transfer, args=(resp, cut))
        timer.daemon = True
        timer.start()
        too_slow = f"transfer cut after {deadline:g} s (slower than {policy.min_rate_bytes_s:.0f} bytes/s)"
        try:
            for chunk in resp.iter_content(CHUNK_BYTES):
                yield chunk, total
        except (requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:
            if cut.is_set():
                raise DownloadError(too_slow) from exc
            raise _Transient(f"connection lost during transfer ({_short(exc)})") from exc
        except requests.RequestException as exc:  # e.g. a compressed body that does not decompress
            raise DownloadError(too_slow if cut.is_set() else f"transfer failed ({_short(exc)})") from exc
        finally:
            timer.cancel()
        if cut.is_set():
            raise DownloadError(too_slow)


def _cut_transfer(resp: requests.Response, cut: threading.Event) -> None:
    """Runs in a timer thread at the deadline: shut the connection's socket down, which wakes the read
    blocked in the downloading thread (a plain close would not)."""
    cut.set()
    sock = getattr(getattr(resp.raw, "connection", None), "sock", None)  # urllib3's HTTPConnection
    if isinstance(sock, socket.socket):
        try:  # socket.socket's own shutdown, not SSLSocket's (which also drops the TLS state under the reader)
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass  # already closed


def _file_chunks(path: Path) -> Iterator[tuple[bytes, Optional[int]]]:
    if not path.is_file():
        raise DownloadError(f"{path} not found")
    try:
        total = path.stat().st_size
        with open(path, "rb") as f:
            while block := f.read(CHUNK_BYTES):
                yield block, total
    except OSError as exc:  # the source's fault; an OSError from _copy_verified is the destination's
        raise DownloadError(f"cannot read ({_short(exc)})") from exc


def _copy_verified(chunks: Iterator[tuple[bytes, Optional[int]]], dest: Path, expected: Expected,
                   label: str, progress: Optional[ProgressCallback], max_bytes: Optional[int]) -> None:
    """Write ``chunks`` to ``dest``, checked. The chunk iterators turn their own read errors into
    DownloadError, so an OSError raised here is a failed write: ``dest``'s disk, not the source."""
    h = hashlib.sha256()
    done = 0
    limit = expected.size if expected.size is not None else max_bytes
    with open(dest, "wb") as out:
        for chunk, total in chunks:
            done += len(chunk)
            if limit is not None and done > limit:
                raise DownloadError(f"more than the expected {limit} bytes")
            h.update(chunk)
            out.write(chunk)
            if progress is not None:
                progress(Progress(label, done, expected.size or total))
    if expected.size is not None and done != expected.size:
        raise DownloadError(f"got {done} bytes, expected {expected.size}")
    if expected.sha256 is not None and h.hexdigest() != expected.sha256.lower():
        raise DownloadError(f"sha256 {h.hexdigest()[:12]}..., expected {expected.sha256[:12]}...")


def fetch_file(source: str, dest: Path, expected: Expected, *, session: Optional[requests.Session] = None,
               policy: DownloadPolicy = DownloadPolicy(), progress: Optional[ProgressCallback] = None,
               label: str = "", max_bytes: Optional[int] = None) -> None:
    """Copy ``source`` (URL or path) to ``dest``, verified against ``expected``.

    Raises :class:`DownloadError` with a short reason (the caller names the source), or the
    :class:`OSError` of a failed write to ``dest`` (a full or read-only disk: no other source would
    do better; the caller names the folder); ``dest`` is removed on failure.
    """
    label = label or expected.name
    path = local_path(source)
    attempt = 0
    while True:
        attempt += 1
        try:
            if path is not None:
                chunks = _file_chunks(path)
            else:
                if session is None:
                    session = new_session()
                chunks = _http_chunks(session, source, expected, policy, max_bytes)
            _copy_verified(chunks, dest, expected, label, progress, max_bytes)
            return
        except _Transient as exc:
            dest.unlink(missing_ok=True)
            if attempt >= policy.attempts:
                raise DownloadError(f"{exc}, {attempt} attempts") from exc
            time.sleep(policy.backoff_s * 2 ** (attempt - 1))
        except (DownloadError, OSError):  # an OSError: writing dest failed (a full or read-only disk)
            with contextlib.suppress(OSError):
                dest.unlink(missing_ok=True)
            raise


def _unsafe_reason(info: zipfile.ZipInfo) -> Optional[str]:
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "is an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "contains '..'"
    if (info.external_attr >> 16) & 0o170000 == 0o120000:
        return "is a symbolic link"
    return None


def check_archive(zf: zipfile.ZipFile, archive: str) -> None:
    """Refuse the whole archive if any member could land outside the extraction folder."""
    for info in zf.infolist():
        reason = _unsafe_reason(info)
        if reason:
            raise UnsafeArchiveError(f"archive {archive}: member '{info.filename}' {reason}; refusing "
                                     "to extract anything from it")


def extract_verified(archive: Path, wanted: list[Expected], target: Path, *, label: str = "",
                     progress: Optional[ProgressCallback] = None) -> dict[str, str]:
    """Extract the members named like ``wanted`` (matched by base name, in any folder) into
    ``target``, each verified. Returns {name: reason} for those missing or not matching; the good
    ones are written to ``target / name``. Raises :class:`UnsafeArchiveError` for unsafe archives."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DownloadError(f"not a readable zip archive ({_short(exc)})") from exc
    failures: dict[str, str] = {}
    with zf:
        check_archive(zf, label or str(archive))
        by_base: dict[str, list[zipfile.ZipInfo]] = {}
        for info in zf.infolist():
            if not info.is_dir():
                by_base.setdefault(PurePosixPath(info.filename.replace("\\", "/")).name, []).append(info)
        for exp in wanted:
            members = by_base.get(exp.name, [])
            if len(members) != 1:
                failures[exp.name] = "not in the archive" if not members else "several members named so"
                continue
            info = members[0]
            if exp.size is not None and info.file_size != exp.size:
                failures[exp.name] = f"member is {info.file_size} bytes, expected {exp.size}"
                continue
            dest = target / exp.name
            try:
                _copy_verified(_member_chunks(zf, info), dest, exp, exp.name, progress, info.file_size)
            except DownloadError as exc:
                dest.unlink(missing_ok=True)
                failures[exp.name] = _short(exc)
            except OSError:  # writing dest failed (a full or read-only disk): not the archive's fault
                with contextlib.suppress(OSError):
                    dest.unlink(missing_ok=True)
                raise
    return failures


def _member_chunks(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[tuple[bytes, Optional[int]]]:
    try:
        with zf.open(info) as member:
            while block := member.read(CHUNK_BYTES):
                yield block, info.file_size
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:  # a damaged member (CRC, deflate data)
        raise DownloadError(_short(exc)) from exc


def fetch_from_sources(wanted: list[Expected], sources: list[dict[str, Any]], target: Path, *, label: str,
                       policy: DownloadPolicy = DownloadPolicy(),
                       progress: Optional[ProgressCallback] = None) -> tuple[list[str], list[str], list[str]]:
    """Put every ``wanted`` file, verified, in ``target``, trying ``sources`` in order.

    A source is ``{"kind": "files" | "zip", "url": base URL/folder or archive URL/path, "origin": why it
    is tried}`` (a zip source may add its own ``size``/``sha256``). The first failure of a "files"
    source abandons it for the files still missing; each failure is logged as a warning. Returns
    (addresses used, "address (origin): reason" for each failure, names still missing). An OSError
    writing in ``target`` is raised at once (another source would fill the same disk).
    """
    remaining = {e.name: e for e in wanted}
    failures: list[str] = []
    used: list[str] = []

    def failed(address: str, origin: str, reason: str) -> None:
        failures.append(f"{address} ({origin}): {reason}")
        log.warning("%s: %s (%s) failed: %s; trying the next source", label, address, origin, reason)

    with new_session() as session:
        for source in sources:
            kind, address, origin = source["kind"], source["url"], source.get("origin", "source")
            if not remaining:
                break
            if kind == "files":
                for name, exp in list(remaining.items()):
                    url = join_source(address, name)
                    try:
                        fetch_file(url, target / name, exp, session=session, policy=policy, progress=progress,
                                   label=f"{label}: {name}")
                    except DownloadError as exc:
                        failed(url, origin, str(exc))
                        break
                    del remaining[name]
                    used.append(url)
                continue
            archive = local_path(address)
            tmp_archive = target / ".archive.zip"
            try:
                if archive is None:
                    archive = tmp_archive
                    exp = Expected(archive.name, source.get("size"), source.get("sha256"))
                    fetch_file(address, archive, exp, session=session, policy=policy, progress=progress,
                               label=f"{label}: {address.rsplit('/', 1)[-1]}",
                               max_bytes=policy.max_archive_bytes)
                elif not archive.is_file():
                    raise DownloadError(f"{archive} not found")
                bad = extract_verified(archive, list(remaining.values()), target, label=address)
            except DownloadError as exc:
                failed(address, origin, str(exc))
                continue
            finally:
                tmp_archive.unlink(missing_ok=True)
            for name in [n for n in remaining if n not in bad]:
                del remaining[name]
                used.append(f"{address}#{name}")
            if bad:
                failed(address, origin, ", ".join(f"{n}: {r}" for n, r in bad.items()))
    return used, failures, list(remaining)
