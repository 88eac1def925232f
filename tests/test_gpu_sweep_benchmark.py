"""benchmarks/gpu_sweep.py (issue 10's CIFAR-100-sized GPU sweep) at its --tiny size on
the CPU: the grid it runs and what it prints, so the script is known to work before a
GPU machine is lent to run it at full size."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_tiny_gpu_sweep_runs_the_yosinski_grid_on_the_cpu():
    out = subprocess.run([sys.executable, "benchmarks/gpu_sweep.py", "--tiny", "--cpu"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    # base once per size, the four copying treatments at each of the convnet's 5 layers.
    sweep = re.search(r"sweep: (\d+) variants .*layers \[1, 2, 3, 4, 5\]; sizes \[2, 12\]",
                      out.stdout)
    assert sweep and int(sweep.group(1)) == 2 * (1 + 4 * 5), out.stdout
    assert "device: cpu" in out.stdout
    assert "GPU utilisation: not sampled" in out.stdout
    means = dict(re.findall(r"^  (\S+)\s+mean test accuracy ([0-9.]+)", out.stdout, re.M))
    assert sorted(means) == sorted(["base", "AnB", "AnB+", "BnB", "BnB+"])
    assert all(0.0 <= float(v) <= 1.0 for v in means.values())
