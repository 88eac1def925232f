"""Wall time of each stage of the default `dvc repro`, and the share spent outside
training, feature extraction and head fitting (imports, DVC, I/O, plotting).

Runs the real pipeline on a copy of this checkout in a temporary git repository
(nothing cached), then a second `dvc repro` that must run nothing.

    python benchmarks/pipeline_overhead.py [--params FILE] [--keep DIR]

Each stage process records how long it ran (from before its imports) and how
long it spent in compute; the stage's wall time is the time between DVC's
"Running stage" lines, so DVC's own work is counted as overhead too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT_DIRS = ("data/", "models/", "results/", "dvclive/", "metrics/", "plots/")


def copy_checkout(dest: Path, params: Path | None) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.split()
    for rel in files:
        src = ROOT / rel
        # Code and params only: no outputs, lock or results of an earlier run.
        if src.is_file() and (not rel.startswith(OUTPUT_DIRS) or rel.startswith("data/raw/")) \
                and rel != "dvc.lock":
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    if params is not None:
        # Both files: the given params.yaml and the recipe.yaml beside it, re-split.
        sys.path.insert(0, str(ROOT / "src"))
        from transferlab.config.params import read_params_file, write_params_files

        write_params_files(read_params_file(params), dest)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "bench"]):
        subprocess.run(cmd, cwd=dest, check=True, env=tool_env())


def tool_env() -> dict:
    """Environment for git and dvc in a scratch repository: this venv's tools first, and a
    commit identity, since a fresh machine may have no global git config."""
    return {**os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "GIT_AUTHOR_NAME": "transferlab", "GIT_AUTHOR_EMAIL": "transferlab@localhost",
            "GIT_COMMITTER_NAME": "transferlab", "GIT_COMMITTER_EMAIL": "transferlab@localhost",
            "TRANSFERLAB_NO_PROGRESS": "1"}


def timed_repro(cwd: Path, env: dict) -> tuple[float, dict[str, float], str]:
    """Run `dvc repro`; return total seconds, per-stage wall seconds and the output."""
    start = time.perf_counter()
    proc = subprocess.Popen(["dvc", "repro"], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    marks: list[tuple[str, float]] = []
    lines = []
    for line in proc.stdout:
        lines.append(line)
        m = re.match(r"Running stage '([^']+)'", line)
        if m:
            marks.append((m.group(1), time.perf_counter()))
    proc.wait()
    end = time.perf_counter()
    output = "".join(lines)
    if proc.returncode != 0:
        sys.exit(f"dvc repro failed:\n{output}")
    walls = {}
    for i, (name, t) in enumerate(marks):
        walls[name] = (marks[i + 1][1] if i + 1 < len(marks) else end) - t
    return end - start, walls, output


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path,
                    help="a params.yaml to use, with the recipe.yaml beside it")
    ap.add_argument("--keep", type=Path, help="run in this (new) directory and keep it")
    args = ap.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="transferlab-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    copy_checkout(work, args.params)
    timings = work / ".timings.jsonl"
    # A store and a parse cache of its own: the run is cold, not served by the user's store
    # of trained results or by imports parsed in an earlier run.
    env = {**tool_env(), "TRANSFERLAB_TIMINGS": str(timings),
           "TRANSFERLAB_STORE": str(work / "store")}
    try:
        total, walls, _ = timed_repro(work, env)
        records = {}
        for line in timings.read_text().splitlines():
            rec = json.loads(line)
            records[rec["stage"]] = rec
        print(f"{'stage':<14}{'wall s':>9}{'process s':>11}{'compute s':>11}{'overhead s':>12}")
        compute_total = 0.0
        for name, wall in walls.items():
            rec = records.get(name, {})
            comp = rec.get("compute_seconds", 0.0)
            compute_total += comp
            print(f"{name:<14}{wall:>9.1f}{rec.get('process_seconds', 0.0):>11.1f}"
                  f"{comp:>11.1f}{wall - comp:>12.1f}")
        overhead = total - compute_total
        print(f"{'total':<14}{total:>9.1f}{'':>11}{compute_total:>11.1f}{overhead:>12.1f}")
        print(f"share outside training, feature extraction and heads: "
              f"{overhead / total:.1%} (target < 15%)")
        print(f"default dvc repro wall time: {total:.1f} s (target <= 120 s)")
        compiled = sum(rec.get("compile_seconds", 0.0) for rec in records.values())
        if compiled:
            print(f"of the compute, torch.compile's first steps (pretrain/transfer.compile): "
                  f"{compiled:.1f} s")
        for stage in ("diagnostics", "transferability", "binary_aux"):
            if stage in walls:
                print(f"{stage} stage: {walls[stage]:.1f} s wall, "
                      f"{walls[stage] / total:.1%} of the total")

        noop_start = time.perf_counter()
        _, ran, out = timed_repro(work, env)
        noop = time.perf_counter() - noop_start
        print(f"second dvc repro: {noop:.2f} s, stages run: {sorted(ran) or 'none'} "
              "(target < 5 s; only validate, which is always_changed)")
        if ran:
            print(out)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
