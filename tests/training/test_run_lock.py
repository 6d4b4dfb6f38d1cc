"""The lock of a MODEL_DIR (sctgm/training/run_lock.py): held, it names its holder and refuses a second
holder at once; a run that takes the file just as its holder ends (and removes it) locks the new file,
never the removed one, so that two runs never both hold the output."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket

import pytest

from sctgm.exceptions import OutputError
from sctgm.training import run_lock as rl


def test_held_it_names_its_holder_and_refuses_another_at_once(tmp_path):
    out = tmp_path / "m"
    with rl.run_lock(out) as path:
        assert path == tmp_path / ".m.lock"
        assert json.loads(path.read_text()) == {"pid": os.getpid(), "host": socket.gethostname()}
        with pytest.raises(rl.RunInProgressError) as err, rl.run_lock(out):
            pass
        assert isinstance(err.value, OutputError) and err.value.exit_code == 3 and err.value.parameter == "output"
        assert f"(pid {os.getpid()} on host {socket.gethostname()})" in str(err.value)
        with rl.run_lock(tmp_path / "other"):  # another output beside it: its own lock
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_run_taking_the_lock_as_its_holder_ends_locks_the_new_file(tmp_path, monkeypatch):
    out = tmp_path / "m"
    first = contextlib.ExitStack()
    first.enter_context(rl.run_lock(out))
    real_flock = fcntl.flock
    calls = []

    def flock_after_the_holder_ends(fd, op):  # the second run opened the old file; the first ends now
        if not calls:
            first.close()  # removes the file, then releases it
        calls.append(fd)
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock_after_the_holder_ends)
    with rl.run_lock(out) as path:
        monkeypatch.setattr(fcntl, "flock", real_flock)
        assert len(calls) == 2  # it won the removed file, saw it gone, and locked a new one
        third = os.open(path, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):  # the file at the path is the one held
                fcntl.flock(third, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(third)


def test_a_file_system_without_locks_trains_unguarded_with_a_warning(tmp_path, monkeypatch, caplog):
    import errno

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with caplog.at_level("WARNING", logger="sctgm"), rl.run_lock(tmp_path / "m") as path:
        assert path.is_file()
    assert "cannot be locked (No locks available)" in caplog.text and not path.exists()


def test_the_lock_file_is_readable_by_all_whatever_the_umask(tmp_path):
    """A run killed under umask 077 leaves its lock file: another user's run must still open it (and take
    the lock the kernel released) instead of failing on a 0600 file."""
    old = os.umask(0o077)
    try:
        with rl.run_lock(tmp_path / "m") as path:
            assert path.stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_what_is_no_regular_file_at_the_locks_name_is_refused_never_waited_on(tmp_path):
    out = tmp_path / "m"
    os.mkfifo(rl.lock_path(out))
    with pytest.raises(OutputError, match=r"\.m\.lock, where its lock goes, is not a regular file"):
        with rl.run_lock(out):
            pass
    os.unlink(rl.lock_path(out))
    rl.lock_path(out).mkdir()
    with pytest.raises(OutputError, match=r"\.m\.lock, where its lock goes, is a link or a folder"):
        with rl.run_lock(out):
            pass


def test_a_file_at_the_locks_name_that_no_run_wrote_is_left_as_it_is(tmp_path):
    """sct-gm never rewrites a file it did not write: a user's `.m.lock` is refused, byte for byte kept;
    an empty one, or a killed run's record, is taken over."""
    out, lock = tmp_path / "m", rl.lock_path(tmp_path / "m")
    lock.write_text("my notes\n")
    with pytest.raises(OutputError, match=r"\.m\.lock, where its lock goes, holds a file sct-gm did not write"):
        with rl.run_lock(out):
            pass
    assert lock.read_text() == "my notes\n"
    for left in ("", json.dumps({"pid": 1, "host": "elsewhere"}) + "\n"):
        lock.write_text(left)
        with rl.run_lock(out) as path:
            assert json.loads(path.read_text())["pid"] == os.getpid()
        assert not lock.exists()
