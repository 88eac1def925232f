"""The memory estimates the stages check before any work (`features.budget`) against the
peak RSS two real stages reach: feature extraction of a convnet at 28x28, and the heads
on a drawn subsample of a large layer. Each runs in its own process, which resets its
peak (`/proc/self/clear_refs`) once imports and inputs are in place, so the peak it
reports is what the stage itself added."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(),
                                reason="needs Linux's /proc/self/clear_refs")

PRELUDE = """
import json, sys
import numpy as np

def rss_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")

from transferlab.config.params import parse_params, read_params_file
raw = read_params_file()
"""

FEATURES = """
import dataclasses, math, torch
torch.set_num_threads(1)
from transferlab.data.prepared import TaskData
from transferlab.features.budget import features_peak, stored_shape
from transferlab.features.extract import layer_shapes, own_model_features, write_features
from transferlab.models import build_model

params = parse_params(raw)
f = dataclasses.replace(params.features, layers=("conv1", "conv2", "conv3", "conv4", "fc5"),
                        max_dim=9216, augment=dataclasses.replace(params.features.augment,
                                                                  copies=0))
rng = np.random.default_rng(0)
n_train, n_test = 6000, 1000
task = TaskData(classes=list(range(5)),
                x_train=rng.integers(0, 256, (n_train, 1, 28, 28), dtype=np.uint8),
                y_train=rng.integers(0, 5, n_train), pixel_max=255,
                x_test=rng.integers(0, 256, (n_test, 1, 28, 28), dtype=np.uint8),
                y_test=rng.integers(0, 5, n_test))
model = build_model("convnet", (1, 28, 28), 5, width=32, hidden=128)
fn = own_model_features(model, 255, list(f.layers), iterations=False,
                        device=torch.device("cpu"))
maps = layer_shapes(fn, (1, 28, 28))
dims = {n: math.prod(stored_shape(s, f.max_dim, f.pool)) for n, s in maps.items()}
estimate = features_peak(dims, {n: math.prod(s) for n, s in maps.items()}, n_train + n_test,
                         f.batch_size)
reset_peak()
before = rss_kib("VmRSS")
write_features(task, fn, f, 0, sys.argv[1])
print(json.dumps({"estimate": estimate, "added": (rss_kib("VmHWM") - before) * 1024}))
"""

HEADS = """
from transferlab.features.budget import heads_peak
from transferlab.features.store import write_store
from transferlab.heads.per_layer import fit_heads_per_layer, fitted_rows

raw["heads"].update(heads=["svm", "logreg"], cv_folds=2)
raw["heads"]["svm"]["C"] = [1.0]
raw["heads"]["logreg"]["C"] = [1.0]
raw["heads"]["lowshot"]["shots"] = []
cfg = parse_params(raw).heads
rng = np.random.default_rng(0)
n_train, n_test, dim, classes, per_class = 9000, 1000, 6000, 5, 100
def split(n):
    return {"y": np.arange(n) % classes, "index": np.arange(n), "copy": np.zeros(n, np.int16)}
store = sys.argv[1]
write_store(store, {s: {"big": rng.standard_normal((n, dim), dtype=np.float32)}
                    for s, n in (("train", n_train), ("test", n_test))},
            {"train": split(n_train), "test": split(n_test)}, {"layers": ["big"]})
estimate = heads_peak(dim, n_train, n_test, cfg.heads, fitted_rows(store, "big", per_class))
reset_peak()
before = rss_kib("VmRSS")
fit_heads_per_layer(cfg, layers=["big"], subsample=per_class, seed=0, features_dir=store,
                    out=sys.argv[1] + "-heads.json")
print(json.dumps({"estimate": estimate, "added": (rss_kib("VmHWM") - before) * 1024}))
"""


def measure(body: str, tmp_path: Path) -> dict:
    script = tmp_path / "stage.py"
    script.write_text(textwrap.dedent(PRELUDE) + textwrap.dedent(body))
    env = {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "store")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("stage", ["features", "heads"])
def test_estimated_peak_is_within_30_percent_of_the_measured_one(stage, tmp_path):
    result = measure(FEATURES if stage == "features" else HEADS, tmp_path)
    ratio = result["added"] / result["estimate"]
    # The estimate counts the arrays; the stage adds allocator slack and library buffers.
    assert result["estimate"] > 150 * 2 ** 20, result  # large enough to dominate the slack
    assert 0.7 <= ratio <= 1.3, f"{stage}: measured / estimated peak = {ratio:.2f}: {result}"
