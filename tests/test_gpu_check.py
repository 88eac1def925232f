"""benchmarks/gpu_check.py (the one prepared GPU script) at its --tiny size on the
CPU: every section runs, and the JSON record and the text summary hold each section's
figures, so the script is known to work before a GPU machine is lent to run it. Also:
a failing section is recorded and the next one still runs, and a benchmark past its
budget is killed with the figures it printed kept.

No test here may have "cuda" in its name: gpu_check runs `pytest -k cuda tests/`
(and refuses to run inside itself, should one be selected)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402

SECTIONS = ["environment", "cuda_tests", "loop_vs_bare", "sweep_batching", "yosinski_sweep"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--tiny", "--out",
                          str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    took = time.perf_counter() - start
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    record = json.loads((out / "gpu_check.json").read_text())
    return record, (out / "gpu_check.txt").read_text(), run.stdout, took


def test_tiny_run_finishes_every_section_and_prints_the_device(tiny_run):
    record, summary, stdout, took = tiny_run
    assert took < 120, f"--tiny took {took:.0f} s"
    assert record["state"] == "finished" and record["tiny"] is True
    assert sorted(record["sections"]) == sorted(SECTIONS)  # the JSON's keys are sorted
    assert [summary.index(f"[{name}] ") for name in SECTIONS] == \
        sorted(summary.index(f"[{name}] ") for name in SECTIONS)  # the summary's in order
    assert {name: s["status"] for name, s in record["sections"].items()} == \
        {name: "ok" for name in SECTIONS}
    assert record["torch"] == torch.__version__
    assert f"torch {torch.__version__}" in stdout.splitlines()[0]
    assert record["sections"]["environment"]["figures"]["versions"]["torch"] == \
        torch.__version__
    for name in SECTIONS:
        assert f"[{name}] ok" in summary


def test_the_gpu_tests_are_counted(tiny_run):
    record, summary, _, _ = tiny_run
    f = record["sections"]["cuda_tests"]["figures"]
    # The CUDA tests are selected (skipped without a GPU), everything else deselected.
    assert f["failed"] == 0 and f["passed"] + f["skipped"] >= 4 and f["deselected"] > 100
    if not torch.cuda.is_available():
        assert f["passed"] == 0
    assert f"skipped {f['skipped']}" in summary
    assert "short test summary" in record["sections"]["cuda_tests"]["output_tail"]


def test_loop_vs_bare_ratios_of_the_three_cases(tiny_run):
    record, summary, _, _ = tiny_run
    section = record["sections"]["loop_vs_bare"]
    cases = section["figures"]["cases"]
    assert sorted(cases) == ["alexnet 57px b256", "convnet 32x32 b64", "densenet_bc 32px b64"]
    for name, c in cases.items():
        assert c["batch"] == 4 and c["project_ms_per_step"] > 0 and c["bare_ms_per_step"] > 0
        assert c["ratio"] == pytest.approx(c["bare_ms_per_step"] / c["project_ms_per_step"])
        assert f"{name} (batch 4): project" in summary
    checks = {c["name"]: c for c in section["checks"]}
    assert set(checks) == {"loop_vs_bare convnet 32x32 ratio", "loop_vs_bare alexnet ratio"}
    for check in checks.values():
        assert check["bound"] == 0.95 and check["pass"] == (check["value"] >= 0.95)
        assert check["binding"] is False  # a tiny run binds nothing


def test_sweep_batching_speedup_and_accuracy_difference(tiny_run):
    record, summary, _, _ = tiny_run
    section = record["sections"]["sweep_batching"]
    f = section["figures"]
    # The default grid for one seed at the tiny sizes 1 and 5: base, AnB-2fc once, and
    # AnB, AnB+, BnB, BnB+ at each of the convnet's 5 layers, per size.
    assert f["variants"] == 2 * (1 + 1 + 4 * 5) and f["image_shape"] == "3x8x8"
    assert f["speedup"] == pytest.approx(f["one_at_a_time_s"] / f["batched_s"])
    assert 0 <= f["max_accuracy_difference"] <= 1 and f["tolerance"] > 0
    assert [c["name"] for c in section["checks"]] == [
        "sweep_batching speed-up", "sweep_batching largest accuracy difference"]
    assert section["checks"][0]["bound"] == 10
    assert f"speed-up {f['speedup']:.2f}x" in summary


def test_yosinski_sweep_extrapolates_the_full_sweep(tiny_run):
    record, summary, _, _ = tiny_run
    section = record["sections"]["yosinski_sweep"]
    f = section["figures"]
    # One target size, every layer of the convnet and every treatment: base once,
    # AnB, AnB+, BnB, BnB+ at 5 layers.
    assert f["variants"] == 1 + 4 * 5 and f["sizes"] == [12] and f["steps"] == 4
    assert f["sweep_s"] > 0 and f["images_per_s"] > 0
    assert f["recipe_steps"] == 8820 and f["recipe_pretrain_epochs"] == 90
    assert f["full_sweep_min"] == pytest.approx(f["sweep_s"] * 8820 / 4 * 3 / 60)
    assert "8820/4 x 3/1" in f["formula"] and f["formula"] in summary
    if not torch.cuda.is_available():
        assert f["gpu_utilisation_mean"] is None and "not sampled" in summary
    assert set(f["accuracy"]) == {"base", "AnB", "AnB+", "BnB", "BnB+"}
    assert section["checks"][0]["bound"] == 30
    assert "must-holds: " in summary and "not binding" in summary


def test_a_failing_section_is_recorded_and_the_next_one_runs(tmp_path, monkeypatch):
    def broken(ctx, out, timeout):
        out["figures"] = {"half": 1}
        raise ValueError("no such kernel")

    monkeypatch.setattr(gpu_check, "SECTIONS", [("broken", broken, 5),
                                                ("environment", gpu_check.environment, 20)])
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--out", str(tmp_path)])
    gpu_check.main()
    record = json.loads((tmp_path / "gpu_check.json").read_text())
    assert record["state"] == "finished"
    assert record["sections"]["broken"]["status"] == "failed"
    assert record["sections"]["broken"]["error"] == "ValueError: no such kernel"
    assert record["sections"]["broken"]["figures"] == {"half": 1}
    assert record["sections"]["environment"]["status"] == "ok"
    assert "[broken] failed, " in (tmp_path / "gpu_check.txt").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name not in
                ("gpu_check.json", "gpu_check.txt")]  # no temporaries left


def test_a_benchmark_past_its_budget_is_killed_and_its_figures_kept():
    ctx = gpu_check.Ctx(tiny=True, cuda=False)
    start = time.perf_counter()
    rc, output = ctx.run(["-c", "import time; print('json: {\"ratio\": 0.97}', flush=True); "
                                "time.sleep(60)"], timeout=2)
    assert rc is None and time.perf_counter() - start < 30
    assert gpu_check.last_json(output) == {"ratio": 0.97}
    with pytest.raises(TimeoutError, match="timed out after 2 s"):
        gpu_check.finish(rc, output, 2)


def test_it_refuses_to_run_inside_itself(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), **{gpu_check.NESTED: "1"})
    run = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--tiny", "--out",
                          str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode != 0 and "not run inside gpu_check" in run.stderr
    assert not list(tmp_path.iterdir())
