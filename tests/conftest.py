"""Shared test helpers: where the real scanner data lives, and skips when it does not."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# fixtures/ holds generators in code; make them importable as `fixtures.*` in tests.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def shared_path(*parts: str) -> Path:
    """Return ``../shared/data/<parts>``, or skip the test with the reason it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs real scanner data at {path} (the ../shared folder is beside CI's clone, not a user's)")
    return path


@pytest.fixture
def shared_data() -> Path:
    return shared_path()


@pytest.fixture
def config_dir(tmp_path, monkeypatch) -> Path:
    """A fresh, empty per-user config folder (no key file yet) and no ``$MEDLOAD_PHI_KEY``."""
    folder = tmp_path / "user-config"
    monkeypatch.setenv("MEDLOAD_CONFIG_DIR", str(folder))
    monkeypatch.delenv("MEDLOAD_PHI_KEY", raising=False)
    return folder
