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
