"""What `sweep.curves: true` costs: one seed's sweep grid with curves off and on.

    python benchmarks/sweep_curves.py [--params FILE] [--seed 0] [--repeats 1] [--single N]

Prepares the tasks and pretrains A and B from the params (not timed), then
trains the seed's grid batched (the sweep's default mode), per target size
with curves off and on in alternating order, in this one process, so load
from other processes falls on both. With `--single N`, the first N variants of
each size are also trained one at a time (`run_variant`) off and on. Prints
the totals and the ratio on / off per mode, and checks that curves change no
final score. Threads are pinned to one (`--threads`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    import torch
    from sweep_batching import target_and_sources

    from transferlab.config.params import load_params
    from transferlab.training import batched
    from transferlab.training import sweep as runs
    from transferlab.training.variant import run_variant

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--single", type=int, default=0,
                    help="also train this many variants per size one at a time")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    loaded = load_params(args.params)
    params = {flag: dataclasses.replace(loaded, sweep=dataclasses.replace(loaded.sweep,
                                                                          curves=flag))
              for flag in (False, True)}
    target, sources = target_and_sources(loaded, device)

    variants = runs.grid(loaded, args.seed)
    seconds = {(mode, flag): 0.0 for mode in ("batched", "single") for flag in (False, True)}
    scores: dict = {}
    points = []

    def batched_run(chunk, flag):
        return batched.train_variants_batched(params[flag], target, sources, chunk,
                                              device=device, log=lambda _: None)

    def single_run(chunk, flag):
        return {v.key: run_variant(params[flag], target, sources, v, device=device,
                                   curves=flag) for v in chunk}

    turn = 0
    for _ in range(args.repeats):
        for size in loaded.sweep.subsample:
            chunk = [v for v in variants if v.subsample == size]
            runs_here = [("batched", batched_run, chunk)]
            if args.single:
                runs_here.append(("single", single_run, chunk[:args.single]))
            for mode, run, these in runs_here:
                flags = (False, True) if turn % 2 == 0 else (True, False)
                turn += 1
                for flag in flags:
                    begin = time.perf_counter()
                    got = run(these, flag)
                    seconds[mode, flag] += time.perf_counter() - begin
                    for key, result in got.items():
                        scores.setdefault((mode, key), set()).add(result["test_score"])
                        if flag:
                            points.append(len(result["curve"]))
    print(f"grid: {len(variants)} variants (seed {args.seed}, sizes {loaded.sweep.subsample}, "
          f"transfer.steps {loaded.transfer.steps}); torch threads {torch.get_num_threads()}; "
          f"curve points per variant {min(points)}-{max(points)}")
    for mode in ("batched", "single"):
        off, on = seconds[mode, False], seconds[mode, True]
        if off:
            print(f"{mode}: curves off {off / args.repeats:.2f} s, on {on / args.repeats:.2f} s"
                  f" per round; on / off {on / off:.2f}x")
    changed = [key for key, values in scores.items() if len(values) > 1]
    print(f"final scores changed by curves: {len(changed)} of {len(scores)}")


if __name__ == "__main__":
    main()
