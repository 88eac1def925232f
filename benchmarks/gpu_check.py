"""The GPU path, measured once: one script for a lent GPU's 15-minute window.

    PYTHONPATH=src timeout 420 python benchmarks/gpu_check.py --out $OUT/gpu   # ~6 min, GPU
    PYTHONPATH=src python benchmarks/gpu_check.py --tiny --out /tmp/gpucheck    # < 1 min, CPU

Runs the sections of `SECTIONS` in order, each under its own time budget (the
budgets add up to under 6 minutes on one H100; `--tiny` shrinks every size so the
whole runs on a CPU in under a minute, as tests/test_gpu_check.py does):

  environment     device, torch / CUDA / cuDNN / driver versions
  cuda_tests      `pytest -q -k cuda tests/`: pass / fail / skip counts and the output's tail
  loop_vs_bare    benchmarks/loop_vs_bare.py: the convnet at 32x32, AlexNet at 57 px
                  (batch 256), DenseNet-BC at 32 px; must hold: ratio bare / project
                  >= 0.95 for the convnet and AlexNet
  sweep_batching  benchmarks/sweep_batching.py on the default grid at 32x32 (synthetic);
                  must hold: batched >= 10x faster than one at a time, every variant's
                  test accuracy within batched.ACCURACY_TOLERANCE of its lone run
  yosinski_sweep  benchmarks/gpu_sweep.py shortened: 50 + 50 synthetic classes of
                  CIFAR-100's size, 1 seed, every layer and treatment, one target size
                  (500 per class), 500 of the recipe's 8820 steps, 3 of its 90 pretraining
                  epochs; wall time, images/s, GPU utilisation, and the full sweep's time
                  extrapolated; must hold: at most 30 minutes for the full sweep

The benchmarks run as subprocesses with a timeout; their output is echoed as it
comes and their figures read from the last `json: {...}` line they print. A
section that fails or runs out of time records its error and the output's tail,
and the next one runs. After every section the record is rewritten whole
(atomically) to DIR/gpu_check.json and DIR/gpu_check.txt, so a run cut short
keeps what it measured. Verdicts bind only on CUDA at full size; on a CPU or
with `--tiny` they are printed as "not binding".
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

LOOP_RATIO = 0.95     # loop_vs_bare: bare / project, convnet and AlexNet
BATCH_SPEEDUP = 10.0  # sweep_batching: one at a time / batched
SWEEP_MINUTES = 30.0  # yosinski_sweep: the full sweep, extrapolated
TAIL = 4000           # characters of a section's output kept in the record
NESTED = "TRANSFERLAB_GPU_CHECK"  # set for the benchmarks it runs: it never runs inside itself


class Check:
    """One must-hold: a named figure against its bound."""

    def __init__(self, name: str, value, bound: float, at_least: bool = True):
        self.name, self.value, self.bound, self.at_least = name, value, bound, at_least
        self.passed = value is not None and (value >= bound if at_least else value <= bound)

    def record(self, binding: bool) -> dict:
        return {"name": self.name, "value": self.value, "bound": self.bound,
                "rule": ">=" if self.at_least else "<=", "pass": self.passed,
                "binding": binding}


def check_line(check: dict) -> str:
    value = "missing" if check["value"] is None else f"{check['value']:.4g}"
    verdict = "PASS" if check["pass"] else "FAIL"
    note = "" if check["binding"] else "  (not binding: a tiny or CPU run)"
    return f"{verdict}  {check['name']}: {value} {check['rule']} {check['bound']:g}{note}"


def last_json(output: str) -> dict:
    """The figures of the last `json: {...}` line of a benchmark's output ({} if none)."""
    lines = [line for line in output.splitlines() if line.startswith("json: ")]
    return json.loads(lines[-1][len("json: "):]) if lines else {}


class Ctx:
    """What the sections share: the run's options, device and the child it runs."""

    def __init__(self, tiny: bool, cuda: bool):
        self.tiny, self.cuda = tiny, cuda
        self.child: subprocess.Popen | None = None
        self.lines: list[str] = []  # the running or last benchmark's output

    def run(self, argv: list[str], timeout: float) -> tuple[int | None, str]:
        """Run `python argv...` in the repository root, echoing its output as it comes;
        its exit status (None: killed at `timeout` seconds) and its output."""
        env = dict(os.environ, TRANSFERLAB_NO_PROGRESS="1", **{NESTED: "1"},
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                            os.environ.get("PYTHONPATH")])))
        if self.tiny:  # a shared CPU: one thread each keeps the smoke run quick
            env["OMP_NUM_THREADS"] = "1"
        print(f"  $ python {' '.join(argv)}", flush=True)
        self.child = subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, start_new_session=True)
        self.lines = lines = []

        def pump(stream):
            for line in stream:
                lines.append(line)
                if not line.startswith("json: "):  # the figures, printed below in words
                    print(f"  | {line}", end="", flush=True)

        reader = threading.Thread(target=pump, args=(self.child.stdout,), daemon=True)
        reader.start()
        try:
            rc = self.child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
        finally:
            self.stop_child()
        reader.join(timeout=5)
        return rc, "".join(lines)

    def stop_child(self) -> None:
        if self.child is not None and self.child.poll() is None:
            os.killpg(self.child.pid, signal.SIGKILL)
            self.child.wait()
        self.child = None


def finish(rc: int | None, output: str, timeout: float) -> None:
    """Raise, naming why, when a benchmark did not end well (the figures it printed
    before are kept by the caller)."""
    if rc is None:
        raise TimeoutError(f"timed out after {timeout:.0f} s")
    if rc != 0:
        last = (output.strip().splitlines() or [""])[-1]
        raise RuntimeError(f"exit status {rc}: {last}")


# ---- the sections: each fills `out` (figures, checks, lines) and raises on failure ----

def environment(ctx: Ctx, out: dict, timeout: float) -> None:
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    for package in ("torchvision", "timm", "scikit-learn", "numpy", "dvc", "pytest"):
        try:
            from importlib.metadata import version
            versions[package] = version(package)
        except Exception:
            versions[package] = None
    figures = {"cuda_available": ctx.cuda, "versions": versions,
               "cpu_count": os.cpu_count(), "host": platform.node()}
    if ctx.cuda:
        props = torch.cuda.get_device_properties(0)
        figures |= {"device": torch.cuda.get_device_name(0), "gpu_count":
                    torch.cuda.device_count(), "gpu_memory_gib": props.total_memory / 2**30,
                    "capability": f"{props.major}.{props.minor}"}
        if shutil.which("nvidia-smi"):
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,"
                                  "noheader"], capture_output=True, text=True, timeout=20)
            figures["driver"] = smi.stdout.strip().splitlines()[0] if smi.stdout else None
    else:
        figures["device"] = "CPU"
    out["figures"] = figures
    out["lines"] = [f"device: {figures['device']}" + (
        f" x{figures['gpu_count']}, {figures['gpu_memory_gib']:.0f} GiB, capability "
        f"{figures['capability']}, driver {figures.get('driver')}" if ctx.cuda else ""),
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items())]


def cuda_tests(ctx: Ctx, out: dict, timeout: float) -> None:
    if importlib.util.find_spec("pytest") is None:
        out["figures"] = {"pytest": "missing"}
        out["lines"] = ["pytest is not installed: the CUDA tests were not run"]
        raise RuntimeError("pytest is not installed")
    rc, output = ctx.run(["-m", "pytest", "-q", "-k", "cuda", "-p", "no:cacheprovider",
                          "--continue-on-collection-errors", "tests/"], timeout)
    counts = {}
    summary = [line for line in output.splitlines()
               if re.search(r"\d+ (passed|failed|skipped|deselected|errors?)\b", line)]
    if summary:
        for n, what in re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?|"
                                  r"xfailed|xpassed)\b", summary[-1]):
            counts["errors" if what.startswith("error") else what] = int(n)
    counts = {k: counts.get(k, 0) for k in ("passed", "failed", "skipped", "deselected",
                                            "errors")}
    out["figures"] = {"exit_status": rc, "summary": summary[-1].strip("= ") if summary
                      else None, **counts}
    out["lines"] = [", ".join(f"{k} {v}" for k, v in counts.items()) +
                    " (errors: test modules that could not be imported, e.g. without DVC)"]
    out["checks"] = [Check("CUDA tests failed", counts["failed"], 0, at_least=False),
                     Check("CUDA tests passed", counts["passed"], 1)]
    if rc is None:
        finish(rc, output, timeout)
    if not summary:
        raise RuntimeError(f"no pytest summary line (exit status {rc})")


LOOP_CASES = ["convnet 32x32", "alexnet", "densenet_bc"]


def loop_vs_bare(ctx: Ctx, out: dict, timeout: float) -> None:
    size = (["--steps", "1", "--rounds", "1", "--images", "8", "--batch", "4"] if ctx.tiny
            else ["--steps", "40", "--rounds", "10"])
    rc, output = ctx.run(["benchmarks/loop_vs_bare.py", "--threads", "1", *size,
                          "--cases", *LOOP_CASES], timeout)
    figures = last_json(output)
    out["figures"] = figures
    cases = figures.get("cases", {})
    out["lines"] = [f"{name} (batch {c['batch']}): project {c['project_ms_per_step']:.3f} "
                    f"ms/step, bare {c['bare_ms_per_step']:.3f} ms/step, ratio bare/project "
                    f"{c['ratio']:.3f}" for name, c in cases.items()]

    def ratio(prefix):
        return next((c["ratio"] for name, c in cases.items() if name.startswith(prefix)),
                    None)

    out["checks"] = [Check(f"loop_vs_bare {prefix} ratio", ratio(prefix), LOOP_RATIO)
                     for prefix in ("convnet 32x32", "alexnet")]
    finish(rc, output, timeout)


def sweep_batching(ctx: Ctx, out: dict, timeout: float) -> None:
    size = ["--tiny", "--image-size", "8"] if ctx.tiny else ["--image-size", "32"]
    rc, output = ctx.run(["benchmarks/sweep_batching.py", "--threads", "1", "--no-ceiling",
                          *size], timeout)
    f = last_json(output)
    out["figures"] = f
    if f:
        out["lines"] = [f"{f['variants']} variants of {f['image_shape']}: one at a time "
                        f"{f['one_at_a_time_s']:.2f} s, batched {f['batched_s']:.2f} s, "
                        f"speed-up {f['speedup']:.2f}x; largest accuracy difference "
                        f"{f['max_accuracy_difference']:.4f} (tolerance {f['tolerance']})"]
    out["checks"] = [Check("sweep_batching speed-up", f.get("speedup"), BATCH_SPEEDUP),
                     Check("sweep_batching largest accuracy difference",
                           f.get("max_accuracy_difference"), f.get("tolerance", 0.0),
                           at_least=False)]
    finish(rc, output, timeout)


def yosinski_sweep(ctx: Ctx, out: dict, timeout: float) -> None:
    size = (["--tiny", "--sizes", "12"] if ctx.tiny
            else ["--sizes", "500", "--steps", "500", "--pretrain-epochs", "3"])
    rc, output = ctx.run(["benchmarks/gpu_sweep.py", *size], timeout)
    f = last_json(output)
    out["figures"] = f
    if "sweep_s" in f:
        util = ("not sampled" if f["gpu_utilisation_mean"] is None else
                f"{f['gpu_utilisation_mean']:.0f} % mean of {f['gpu_utilisation_samples']} "
                f"samples ({f['gpu_utilisation_source']})")
        out["lines"] = [
            f"{f['variants']} variants at {f['sizes']}/class, {f['steps']} steps each: "
            f"{f['sweep_s']:.1f} s, {f['images_per_s']:,.0f} training images/s; "
            f"GPU utilisation {util}",
            f["formula"],
            f"pretraining A and B: {f['pretrain_s']:.1f} s for {f['pretrain_epochs']} "
            f"epochs, {f['pretrain_full_min']:.1f} min at {f['recipe_pretrain_epochs']}; "
            f"full sweep with pretraining {f['full_with_pretraining_min']:.1f} min"]
    out["checks"] = [Check("full Yosinski sweep, minutes (extrapolated)",
                           f.get("full_sweep_min"), SWEEP_MINUTES, at_least=False)]
    finish(rc, output, timeout)


SECTIONS = [  # name, function, time budget (s) on the GPU; the budgets add up to 5m40s
    ("environment", environment, 20),
    ("cuda_tests", cuda_tests, 90),
    ("loop_vs_bare", loop_vs_bare, 60),
    ("sweep_batching", sweep_batching, 60),
    ("yosinski_sweep", yosinski_sweep, 110),
]


def summary_text(record: dict) -> str:
    lines = [f"transferlab GPU check, started {record['started']}, "
             f"{record['seconds']:.0f} s{' (--tiny)' if record['tiny'] else ''}; "
             f"{record['state']}",
             f"device {record['device']}, torch {record['torch']}, CUDA {record['torch_cuda']}"]
    for name, s in record["sections"].items():
        lines.append(f"[{name}] {s['status']}, {s.get('seconds', 0):.1f} s of "
                     f"{s['budget_s']} s" + (f": {s['error']}" if s.get("error") else ""))
        lines += [f"  {line}" for line in s.get("lines", [])]
        lines += [f"  {check_line(c)}" for c in s.get("checks", [])]
    checks = [c for s in record["sections"].values() for c in s.get("checks", [])]
    failed = [c["name"] for c in checks if not c["pass"]]
    binding = " (none binding: a tiny or CPU run)" if not any(c["binding"] for c in checks) \
        else ""
    lines.append(f"must-holds: {len(checks) - len(failed)} of {len(checks)} PASS{binding}" +
                 (f"; FAIL: {', '.join(failed)}" if failed else ""))
    return "\n".join(lines) + "\n"


def main() -> None:
    from transferlab.io import write_json_atomic, write_text_atomic

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the JSON and summary")
    ap.add_argument("--tiny", action="store_true", help="every size shrunk: a CPU smoke run")
    ap.add_argument("--only", nargs="+", choices=[s[0] for s in SECTIONS],
                    help="run only these sections")
    args = ap.parse_args()
    if os.environ.get(NESTED):  # e.g. a test that runs it, selected by its `pytest -k cuda`
        sys.exit(f"gpu_check: not run inside gpu_check (${NESTED} is set)")

    def stop(signum, _frame):  # `timeout` sends SIGTERM: end as an interrupted section
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop)
    began = time.perf_counter()
    import torch

    ctx = Ctx(tiny=args.tiny, cuda=torch.cuda.is_available())
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "tiny": args.tiny, "cuda": ctx.cuda,
              "device": torch.cuda.get_device_name(0) if ctx.cuda else "CPU",
              "torch": torch.__version__,
              "torch_cuda": torch.version.cuda, "state": "running", "seconds": 0.0,
              "sections": {}}

    def save():
        record["seconds"] = time.perf_counter() - began
        write_json_atomic(args.out / "gpu_check.json", record)
        write_text_atomic(args.out / "gpu_check.txt", summary_text(record))

    print(f"gpu_check: device {record['device']}, torch {torch.__version__}, CUDA "
          f"{torch.version.cuda}{' (--tiny)' if args.tiny else ''}; writing {args.out}",
          flush=True)
    try:
        for name, section, budget in SECTIONS:
            if args.only and name not in args.only:
                continue
            out = record["sections"][name] = {"status": "running", "budget_s": budget}
            ctx.lines = []
            save()
            print(f"[{name}] budget {budget} s", flush=True)
            start = time.perf_counter()
            try:
                section(ctx, out, budget)
                out["status"] = "ok"
            except KeyboardInterrupt as stop_signal:
                out["status"], out["error"] = "interrupted", str(stop_signal) or "interrupted"
                raise
            except Exception as error:  # noqa: BLE001 - recorded; the next section runs
                out["status"], out["error"] = "failed", f"{type(error).__name__}: {error}"
            finally:
                ctx.stop_child()
                out["seconds"] = time.perf_counter() - start
                if ctx.lines:
                    out["output_tail"] = "".join(ctx.lines)[-TAIL:]
                out["checks"] = [c.record(ctx.cuda and not args.tiny) if isinstance(c, Check)
                                 else c for c in out.get("checks", [])]
                for line in out.get("lines", []):
                    print(f"  {line}", flush=True)
                for check in out["checks"]:
                    print(f"  {check_line(check)}", flush=True)
                if out.get("error"):
                    print(f"  {out['status']}: {out['error']}", flush=True)
                save()
        record["state"] = "finished"
    except KeyboardInterrupt:
        record["state"] = "interrupted"
    finally:
        signal.signal(signal.SIGTERM, previous)
    save()
    print(summary_text(record), end="", flush=True)


if __name__ == "__main__":
    main()
