"""The default sweep grid for one seed, trained batched against one at a time.

    python benchmarks/sweep_batching.py [--params FILE] [--seed 0] [--repeats 1]

Prepares the target and source tasks and pretrains models A and B from the
params (not timed), then trains the seed's whole grid both ways, interleaved in
this one process: per target size, the one-at-a-time run (`run_variant` per
variant) and the batched run (`batched.train_variants_batched`) alternate,
and which goes first alternates too, so load from other processes falls on
both. Each mode runs at every thread count of `--threads` (1 and 2: the
one-at-a-time loop's tiny tensors hardly gain from a second thread, the
batched groups' large ones do), and the verdict compares each mode at its
faster count. Prints the device, the totals, the speed-ups and the largest
difference in test accuracy between any two runs of the same variant (the
tolerance is `batched.ACCURACY_TOLERANCE`). Beside the wall-clock figures it
prints this process's CPU time, which load from other processes on a shared
machine disturbs much less.
On a GPU it runs the same on CUDA.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


def target_and_sources(params, device):
    """The params' target task and its source networks A and B, pretrained as the
    pretrain stage trains them (not timed by the benchmarks)."""
    from transferlab.data.prepared import prepare_dataset
    from transferlab.pretrain import train_network

    d = params.data
    source, target, _ = prepare_dataset(params.dataset, d.split, d.source_classes,
                                        d.target_classes, d.test_fraction, params.seed)
    sources = {}
    for label, task in (("A", source), ("B", target)):
        model, _ = train_network(params, task, seed=params.seed, aux_heads=0, progress=False,
                                 desc=f"pretrain {label}")
        sources[label] = model.to(device)
    return target, sources


def main() -> None:
    import torch

    from transferlab import batched, runs
    from transferlab.experiment import run_variant
    from transferlab.params import load_params
    from transferlab.train import pick_device

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1, help="rounds of both runs per size")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                    help="torch thread counts to run both modes at")
    ap.add_argument("--cpu", action="store_true", help="stay on the CPU even with CUDA")
    args = ap.parse_args()

    params = load_params(args.params)
    device = torch.device("cpu") if args.cpu else pick_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {device.type} ({name}), torch threads: {args.threads}")
    start = time.perf_counter()
    target, sources = target_and_sources(params, device)
    print(f"pretrained A and B in {time.perf_counter() - start:.1f} s (not counted)")

    variants = runs.grid(params, args.seed)
    notes = []

    def single(chunk):
        return {v.key: run_variant(params, target, sources, v, device=device) for v in chunk}

    def together(chunk):
        return batched.train_variants_batched(params, target, sources, chunk, device=device,
                                              log=notes.append)

    # Every (mode, threads) run of a size follows the others at once, in an order that
    # rotates, so load from other processes falls on all of them alike.
    runs = [(mode, threads) for threads in args.threads for mode in ("single", "batched")]
    seconds = {run: 0.0 for run in runs}
    cpu_seconds = {run: 0.0 for run in runs}
    by_size = {size: {run: 0.0 for run in runs} for size in params.sweep.subsample}
    results = {run: {} for run in runs}
    modes = {"single": single, "batched": together}
    turn = 0
    for _ in range(args.repeats):
        for size in params.sweep.subsample:
            chunk = [v for v in variants if v.subsample == size]
            for mode, threads in runs[turn % len(runs):] + runs[:turn % len(runs)]:
                torch.set_num_threads(threads)
                begin, begin_cpu = time.perf_counter(), time.process_time()
                results[mode, threads].update(modes[mode](chunk))
                took = time.perf_counter() - begin
                cpu_seconds[mode, threads] += time.process_time() - begin_cpu
                seconds[mode, threads] += took
                by_size[size][mode, threads] += took
            turn += 1
    for note in dict.fromkeys(notes):
        print(f"note: {note}")
    per = args.repeats
    reference = results[runs[0]]
    print(f"grid: {len(variants)} variants (seed {args.seed}, sizes {params.sweep.subsample})")
    for threads in args.threads:
        one, both = ("single", threads), ("batched", threads)
        for size, took in by_size.items():
            print(f"threads {threads}, size {size:>3}/class: one at a time "
                  f"{took[one] / per:6.2f} s   batched {took[both] / per:6.2f} s   "
                  f"speed-up {took[one] / took[both]:.2f}x")
        print(f"threads {threads}: one at a time {seconds[one] / per:.2f} s   batched "
              f"{seconds[both] / per:.2f} s per grid, speed-up "
              f"{seconds[one] / seconds[both]:.2f}x (process CPU time "
              f"{cpu_seconds[one] / per:.2f} s vs {cpu_seconds[both] / per:.2f} s)")
    best_single = min((seconds["single", t], t) for t in args.threads)
    best_batched = min((seconds["batched", t], t) for t in args.threads)
    print(f"speed-up batched / one at a time, each at its faster thread count "
          f"({best_batched[1]} vs {best_single[1]}): "
          f"{best_single[0] / best_batched[0]:.2f}x (target >= 4x on the 2-core CPU, "
          ">= 20x on a GPU)")
    diff = max(abs(r[k]["test_score"] - reference[k]["test_score"])
               for r in results.values() for k in reference)
    means = "  ".join(f"{mode}@{threads} "
                      f"{sum(r['test_score'] for r in res.values()) / len(res):.4f}"
                      for (mode, threads), res in results.items())
    print(f"largest test-accuracy difference between any two runs of a variant: {diff:.4f} "
          f"(tolerance {batched.ACCURACY_TOLERANCE}); means {means}")


if __name__ == "__main__":
    main()
