import pytest


@pytest.fixture(autouse=True)
def _native_kernels(monkeypatch):
    """These tests exercise the native kernels themselves: a CREMA_KERNELS=reference in the
    environment (used to run the rest of the suite on numpy) must not turn them off. Tests that
    need an ISA cap set CREMA_MAX_ISA themselves."""
    monkeypatch.delenv("CREMA_KERNELS", raising=False)
