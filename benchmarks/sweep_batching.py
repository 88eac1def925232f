"""The default sweep grid for one seed, trained batched against one at a time.

    python benchmarks/sweep_batching.py [--params FILE] [--seed 0] [--repeats 1]

Prepares the target and source tasks and pretrains models A and B from the
params (not timed), then trains the seed's whole grid both ways, interleaved in
this one process: per target size, the one-at-a-time run (`run_variant` per
variant) and the batched run (`batched.train_variants_batched`) alternate,
and which goes first alternates too, so load from other processes falls on
both. Prints the device, both totals, the speed-up and the largest difference
in test accuracy between the two runs of the same variant (the tolerance is
`batched.ACCURACY_TOLERANCE`). Threads are pinned to one (`--threads`). Beside
the wall-clock ratio it prints the ratio of this process's CPU time, which load
from other processes on a shared machine disturbs much less.
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
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cpu", action="store_true", help="stay on the CPU even with CUDA")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    device = torch.device("cpu") if args.cpu else pick_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {device.type} ({name}), torch threads: {torch.get_num_threads()}")
    start = time.perf_counter()
    target, sources = target_and_sources(params, device)
    print(f"pretrained A and B in {time.perf_counter() - start:.1f} s (not counted)")

    variants = runs.grid(params, args.seed)
    seconds = {"single": 0.0, "batched": 0.0}
    cpu_seconds = {"single": 0.0, "batched": 0.0}
    by_size = {size: {"single": 0.0, "batched": 0.0} for size in params.sweep.subsample}
    results = {"single": {}, "batched": {}}
    notes = []

    def single(chunk):
        return {v.key: run_variant(params, target, sources, v, device=device) for v in chunk}

    def together(chunk):
        return batched.train_variants_batched(params, target, sources, chunk, device=device,
                                              log=notes.append)

    turn = 0
    for _ in range(args.repeats):
        for size in params.sweep.subsample:
            chunk = [v for v in variants if v.subsample == size]
            order = [("single", single), ("batched", together)]
            for mode, run in order if turn % 2 == 0 else order[::-1]:
                begin, begin_cpu = time.perf_counter(), time.process_time()
                results[mode].update(run(chunk))
                took = time.perf_counter() - begin
                cpu_seconds[mode] += time.process_time() - begin_cpu
                seconds[mode] += took
                by_size[size][mode] += took
            turn += 1
    for note in dict.fromkeys(notes):
        print(f"note: {note}")
    diff = max(abs(results["single"][k]["test_score"] - results["batched"][k]["test_score"])
               for k in results["single"])
    mean_single = sum(r["test_score"] for r in results["single"].values()) / len(variants)
    mean_batched = sum(r["test_score"] for r in results["batched"].values()) / len(variants)
    per = args.repeats
    for size, took in by_size.items():
        print(f"size {size:>3}/class: one at a time {took['single'] / per:6.2f} s   batched "
              f"{took['batched'] / per:6.2f} s   speed-up {took['single'] / took['batched']:.2f}x")
    print(f"grid: {len(variants)} variants (seed {args.seed}, sizes {params.sweep.subsample})")
    print(f"one at a time: {seconds['single'] / per:.2f} s   batched: "
          f"{seconds['batched'] / per:.2f} s   per grid")
    print(f"speed-up batched / one at a time: {seconds['single'] / seconds['batched']:.2f}x "
          "(target >= 4x on the 2-core CPU, >= 20x on a GPU)")
    print(f"same in process CPU time: {cpu_seconds['single'] / cpu_seconds['batched']:.2f}x "
          f"({cpu_seconds['single'] / per:.2f} s vs {cpu_seconds['batched'] / per:.2f} s)")
    print(f"largest test-accuracy difference: {diff:.4f} (tolerance "
          f"{batched.ACCURACY_TOLERANCE}); mean {mean_single:.4f} vs {mean_batched:.4f}")


if __name__ == "__main__":
    main()
