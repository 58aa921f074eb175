"""The README's main job (examples/mnist/lenet_demo.py) runs and learns."""
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_lenet_demo_learns_synthetic_digits():
    out = subprocess.run([sys.executable, str(REPO / "examples/mnist/lenet_demo.py"), "--iters", "30"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    losses = [float(v) for v in re.findall(r"iteration +\d+: loss = ([\d.]+)", out.stdout)]
    assert len(losses) == 4 and losses[-1] < 0.5 * losses[0]
    assert "held-out accuracy" in out.stdout
