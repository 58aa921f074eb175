"""The measured FMA peak per ISA and the kernels' thread-count setting."""
import os
import subprocess
import sys

import pytest

import engine
from engine import kernels

from engine import _kernels as native  # must be built: a missing module fails here
ISAS = kernels.runnable_isas()


def test_peak_gflops_measures_every_runnable_isa():
    # Only that each ISA's probe runs and yields a rate: comparing the rates would be a timed test
    # (a shared or sanitized machine makes any ordering between them fail at random).
    peaks = kernels.peak_gflops_all(seconds=0.02)
    assert set(peaks) == set(ISAS)
    assert all(v > 0.0 for v in peaks.values()), peaks


def test_peak_gflops_default_isa_and_errors(monkeypatch):
    assert kernels.peak_gflops(seconds=0.02) > 1.0
    with pytest.raises(ValueError, match="unknown ISA"):
        kernels.peak_gflops("sse9", 0.01)
    with pytest.raises(ValueError, match="seconds"):
        kernels.peak_gflops("scalar", 0.0)
    kernels.set_max_isa("scalar")
    assert list(kernels.peak_gflops_all(seconds=0.01)) == ["scalar"]
    if len(ISAS) > 1:
        with pytest.raises(ValueError, match="not usable"):
            kernels.peak_gflops(ISAS[0], 0.01)


def test_thread_count_round_trip():
    old = engine.get_num_threads()
    assert old >= 1
    try:
        engine.set_num_threads(1)
        assert engine.get_num_threads() == 1
        engine.set_num_threads(3)
        if kernels.openmp_enabled():
            assert engine.get_num_threads() == 3
        else:  # without OpenMP the kernels run on the calling thread; the request is recorded
            assert engine.get_num_threads() == 1
            assert native.requested_num_threads() == 3
        with pytest.raises(ValueError, match="between 1 and 1024"):
            engine.set_num_threads(0)
        with pytest.raises(ValueError, match="between 1 and 1024"):
            engine.set_num_threads(100000)
        with pytest.raises(ValueError, match="at most 1024"):
            native.set_num_threads(100000)
    finally:
        engine.set_num_threads(old)
    assert engine.get_num_threads() == old


def test_omp_num_threads_sets_the_starting_count():
    env = dict(os.environ, OMP_NUM_THREADS="3")
    out = subprocess.run(
        [sys.executable, "-c", "import engine; print(engine.get_num_threads())"],
        env=env, capture_output=True, text=True, check=True, timeout=120)
    assert int(out.stdout.split()[-1]) == (3 if kernels.openmp_enabled() else 1)
