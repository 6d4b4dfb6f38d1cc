"""Fixtures of the model tests (the shared ones are in tests/conftest.py)."""

from __future__ import annotations

import signal
from typing import Iterator

import pytest


@pytest.fixture
def no_hang() -> Iterator[None]:
    """Before the fix a FIFO blocked the open for ever: fail the test instead of hanging the run."""
    def hung(*_: object) -> None:
        raise TimeoutError("blocked: a FIFO was opened")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)
