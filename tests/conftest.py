import os
from pathlib import Path

import pytest

from engine import kernels

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CREMA_SHARED", REPO.parent / "shared"))
NETS = SHARED / "nets"


@pytest.fixture(scope="session")
def nets_dir():
    assert NETS.is_dir(), f"../shared/nets not found beside the repository (looked in {NETS})"
    return NETS


@pytest.fixture(params=kernels.ISAS)
def isa(request):
    """Every ISA crema has, as the process's ISA cap for one test (the previous cap restored
    after it); an ISA this process cannot run is a skip that says why."""
    reason = kernels.isa_skip_reason(request.param)
    if reason is not None:
        pytest.skip(reason)
    with kernels.isa_cap(request.param):
        yield request.param
