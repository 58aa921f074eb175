import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CREMA_SHARED", REPO.parent / "shared"))
NETS = SHARED / "nets"


@pytest.fixture(scope="session")
def nets_dir():
    assert NETS.is_dir(), f"../shared/nets not found beside the repository (looked in {NETS})"
    return NETS
