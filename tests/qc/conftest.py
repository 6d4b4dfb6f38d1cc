"""Fixtures of the QC editor's tests (server and browser alike)."""

from __future__ import annotations

import pytest

from . import editing


@pytest.fixture
def site(tmp_path):
    """Two tiny BIDS subjects stored RPI and LAS, segmented, with a review server on their QC folder:
    (running server, the subjects' paths, tmp_path)."""
    paths = editing.build(tmp_path, {"sub-01": "RPI", "sub-02": "LAS"})
    run = editing.Running(tmp_path / "qc")
    yield run, paths, tmp_path
    run.stop()
