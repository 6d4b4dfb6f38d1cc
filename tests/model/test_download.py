"""sctgm.model.download: one verified file from HTTP or disk, retries, and safe zip extraction."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..serve import ModelServer, make_symlink_zip, make_zip, refused_url
from sctgm.model.download import DownloadPolicy, Expected, extract_verified, fetch_file, join_source
from sctgm.exceptions import DownloadError, UnsafeArchiveError
from sctgm.model.install import sha256_of

FAST = DownloadPolicy(attempts=3, backoff_s=0.0, read_timeout_s=5.0)
NAME = "challenge_model.json"


@pytest.fixture
def expected(shared_models: Path) -> Expected:
    p = shared_models / NAME
    return Expected(NAME, p.stat().st_size, sha256_of(p))


def test_http_ok_with_progress(server: ModelServer, expected: Expected, tmp_path: Path) -> None:
    seen = []
    fetch_file(server.url + NAME, tmp_path / NAME, expected, policy=FAST, progress=seen.append)
    assert sha256_of(tmp_path / NAME) == expected.sha256
    assert seen[-1].done == seen[-1].total == expected.size
    assert server.counts[NAME] == 1


@pytest.mark.parametrize("mode, reason, gets", [
    ("404", "HTTP 404", 1),            # not transient: no retry
    ("500", "HTTP 500", 3),            # transient: retried
    ("wrong", "sha256", 1),            # wrong bytes: no retry, next source
    ("half", "connection lost", 3),    # closed half-way: retried
])
def test_http_failures(server: ModelServer, expected: Expected, tmp_path: Path, mode: str, reason: str,
                       gets: int) -> None:
    server.behaviour[NAME] = [mode]
    with pytest.raises(DownloadError, match=reason):
        fetch_file(server.url + NAME, tmp_path / NAME, expected, policy=FAST)
    assert server.counts[NAME] == gets
    assert not (tmp_path / NAME).exists()


def test_transient_then_ok(server: ModelServer, expected: Expected, tmp_path: Path) -> None:
    server.behaviour[NAME] = ["half", "500", "ok"]
    fetch_file(server.url + NAME, tmp_path / NAME, expected, policy=FAST)
    assert server.counts[NAME] == 3
    assert sha256_of(tmp_path / NAME) == expected.sha256


def test_connection_refused_and_timeout(shared_models: Path, expected: Expected, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="connection failed.*refused"):
        fetch_file(refused_url() + NAME, tmp_path / NAME, expected, policy=FAST)
    with ModelServer(shared_models, slow_s=1.0) as slow:
        with pytest.raises(DownloadError, match="timed out|connection"):
            fetch_file(slow.url + NAME, tmp_path / NAME, expected,
                       policy=DownloadPolicy(attempts=1, read_timeout_s=0.2))
    assert not (tmp_path / NAME).exists()


def test_size_announced_wrong(server: ModelServer, expected: Expected, tmp_path: Path) -> None:
    wrong = Expected(NAME, expected.size + 1, expected.sha256)
    with pytest.raises(DownloadError, match="announces"):
        fetch_file(server.url + NAME, tmp_path / NAME, wrong, policy=FAST)


def test_local_sources(shared_models: Path, expected: Expected, tmp_path: Path) -> None:
    fetch_file(join_source(str(shared_models), NAME), tmp_path / "a", expected)
    fetch_file((shared_models / NAME).as_uri(), tmp_path / "b", expected)
    assert sha256_of(tmp_path / "a") == sha256_of(tmp_path / "b") == expected.sha256
    with pytest.raises(DownloadError, match="not found"):
        fetch_file(str(tmp_path / "nope"), tmp_path / "c", expected)


def test_join_source() -> None:
    assert join_source("http://h/x", "f") == "http://h/x/f"
    assert join_source("http://h/x/", "f") == "http://h/x/f"
    assert join_source("/d", "f") == "/d/f"


def test_zip_extraction_verified(shared_models: Path, expected: Expected, tmp_path: Path) -> None:
    data = (shared_models / NAME).read_bytes()
    other = Expected("large_model.json", 62, sha256_of(shared_models / "large_model.json"))
    archive = tmp_path / "m.zip"
    archive.write_bytes(make_zip({f"models/{NAME}": data, "models/large_model.json": b"x" * 62,
                                  "README": b""}))
    out = tmp_path / "out"
    out.mkdir()
    bad = extract_verified(archive, [expected, other, Expected("absent.bin", 1, None)], out)
    assert sha256_of(out / NAME) == expected.sha256
    assert set(bad) == {"large_model.json", "absent.bin"} and "sha256" in bad["large_model.json"]
    assert sorted(p.name for p in out.iterdir()) == [NAME]


@pytest.mark.parametrize("member", ["../evil", "a/../../evil", "/tmp/evil", "C:/evil", "..\\evil"])
def test_zip_unsafe_member_refused(member: str, expected: Expected, tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    archive.write_bytes(make_zip({NAME: b"{}", member: b"pwned"}))
    out = tmp_path / "deep" / "out"
    out.mkdir(parents=True)
    with pytest.raises(UnsafeArchiveError, match="refusing"):
        extract_verified(archive, [expected], out)
    assert list(out.iterdir()) == []
    assert not (tmp_path / "deep" / "evil").exists() and not Path("/tmp/evil").exists()


def test_zip_symlink_refused(expected: Expected, tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    archive.write_bytes(make_symlink_zip(NAME, "/etc/passwd"))
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        extract_verified(archive, [expected], tmp_path)


def test_not_a_zip(expected: Expected, tmp_path: Path) -> None:
    (tmp_path / "x.zip").write_bytes(b"not a zip")
    with pytest.raises(DownloadError, match="zip"):
        extract_verified(tmp_path / "x.zip", [expected], tmp_path)


@pytest.fixture
def hostile(shared_models: Path):
    from .hostile_server import HostileServer

    with HostileServer(shared_models) as s:
        yield s


def test_a_server_that_compresses_on_the_fly_is_accepted(hostile, tmp_path: Path) -> None:
    """Content-Length is then the compressed size, and requests hands back the decompressed bytes:
    the size and sha256 of what arrives are what count (F1)."""
    name = "challenge_model.hdf5"
    p = hostile.root / name
    exp = Expected(name, p.stat().st_size, sha256_of(p))
    fetch_file(hostile.url + "gzip/" + name, tmp_path / name, exp, policy=FAST)
    assert sha256_of(tmp_path / name) == exp.sha256
    assert hostile.accept_encoding == ["identity"]  # asked not to compress: the bytes as published
    with pytest.raises(DownloadError, match="more than the expected"):  # the byte cap still holds
        fetch_file(hostile.url + "gzip/" + name, tmp_path / "small", Expected(name, 1000, None), policy=FAST)
    assert not (tmp_path / "small").exists()


def test_a_server_that_trickles_is_cut_at_the_deadline(hostile, expected: Expected, tmp_path: Path) -> None:
    """One byte every 50 ms never trips the read timeout (5 s): the transfer's deadline cuts it, once,
    not retried (F2). The production deadline is the same rule with minutes instead of 0.5 s."""
    policy = DownloadPolicy(attempts=3, backoff_s=0.0, read_timeout_s=5.0, min_deadline_s=0.5)
    with pytest.raises(DownloadError, match=r"transfer cut after 0.5 s \(slower than 10000 bytes/s\)"):
        fetch_file(hostile.url + "trickle/" + NAME, tmp_path / NAME, expected, policy=policy)
    assert len(hostile.accept_encoding) == 1  # one request: not retried (no wall-clock bound: a loaded CI)
    assert not (tmp_path / NAME).exists()


def test_the_deadline_grows_with_the_size() -> None:
    policy = DownloadPolicy()
    assert policy.deadline_s(None) == policy.deadline_s(1000) == 300.0
    assert policy.deadline_s(10_000_000) == 1000.0
