"""Running code under a capped instruction set, for tests of the native kernels."""
import contextlib
import os


@contextlib.contextmanager
def isa_cap(isa):
    """CREMA_MAX_ISA=isa (and the native kernels on) for the block; a context manager rather than
    a fixture because hypothesis tests cannot take function-scoped fixtures."""
    old = {k: os.environ.get(k) for k in ("CREMA_MAX_ISA", "CREMA_KERNELS")}
    os.environ["CREMA_MAX_ISA"] = isa
    os.environ.pop("CREMA_KERNELS", None)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
