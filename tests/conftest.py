"""Shared fixtures: real files in tmp_path, the optional Topaz weights, and the real-data folder."""
from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import pytest

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


@pytest.fixture(autouse=True)
def no_leaked_threads():
    """Fail any test that leaves a non-daemon thread running (the daemon's invariants depend on it)."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon]
    assert not leaked, f"threads left running: {leaked}"


@pytest.fixture(scope="session")
def model_path(tmp_path_factory) -> Path:
    """The daemon tests' tiny random model (daemon_harness.save_tiny_model), saved once per run."""
    from daemon_harness import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny.pt")


@pytest.fixture
def topaz_model_path():
    """Path of Topaz's pretrained resnet16_u64 when topaz-em is installed (.ci/run installs it)."""
    if importlib.util.find_spec("topaz") is None:
        pytest.skip("topaz-em is not installed (pip install --no-deps topaz-em==0.3.20)")
    from streampick.nets.checkpoint import find_topaz_pretrained

    return find_topaz_pretrained("resnet16_u64")


@pytest.fixture
def real_data() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip(f"real data folder {REAL_DATA} is absent (a fresh clone without ../shared)")
    return REAL_DATA
