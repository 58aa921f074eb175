import pytest

from engine import kernels


@pytest.fixture(autouse=True)
def _native_kernels(monkeypatch):
    """These tests exercise the native kernels themselves: a CREMA_KERNELS=reference in the
    environment (used to run the rest of the suite on numpy) must not turn them off. Tests that
    need an ISA cap set it with kernels.set_max_isa / kernels.isa_cap; the cap the process started
    with is restored after each test."""
    monkeypatch.delenv("CREMA_KERNELS", raising=False)
    cap = kernels.max_isa()
    yield
    if cap in kernels.ISAS:
        kernels.set_max_isa(cap)
