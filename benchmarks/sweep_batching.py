"""The default sweep grid for one seed, trained batched against one at a time.

    python benchmarks/sweep_batching.py [--params FILE] [--seed 0] [--repeats 1]
    python benchmarks/sweep_batching.py --image-size 32 --threads 1   # the grid on 32x32 colour
    python benchmarks/sweep_batching.py --tiny   # seconds: 1 pretraining epoch, 4 steps, 2 sizes

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

Then the ceiling, measured in the same run (`--no-ceiling` skips it): the
batched grid's arithmetic (convolutions and matrix products, forward and
backward, counted by torch's FlopCounterMode over one more batched run, not
timed) divided by this machine's best float32 matrix-product rate (a large
matrix product at each thread count, or one thread's rate times the count
where that is higher) is the least time any batched kernel of
the same arithmetic can take, and the one-at-a-time time over it is the
largest speed-up batching alone can give here.
On a GPU it runs the same on CUDA.

`--image-size SIDE` trains the same grid on synthetic colour images of that side
(`gpu_sweep.synthetic_task`: as many source and target classes as the params' split,
125 training and 50 test images per class, about the digits' counts) in place of the
params' dataset: the grid at CIFAR's 32x32, where no dataset can be downloaded. The
last line printed is `json: {...}`, the figures for benchmarks/gpu_check.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


def target_and_sources(params, device, image_size: int | None = None,
                       per_class: tuple[int, int] = (125, 50)):
    """The params' target task and its source networks A and B, pretrained as the
    pretrain stage trains them (not timed by the benchmarks). With `image_size`, the
    tasks are synthetic colour images of that side (`per_class`: training and test
    images per class) with the params' numbers of source and target classes."""
    from transferlab.data.prepared import prepare_tasks
    from transferlab.training.pretrain import train_network

    d = params.data
    if image_size is None:  # as the prepare stage makes them: data.root, split, normalise
        source, target, _ = prepare_tasks(params.dataset, d, params.seed, progress=False)
    else:
        from gpu_sweep import synthetic_task

        source, target = (synthetic_task(len(classes), *per_class, image_size,
                                         seed=offset + params.seed)
                          for offset, classes in ((1000, d.source_classes),
                                                  (2000, d.target_classes)))
    sources = {}
    for label, task in (("A", source), ("B", target)):
        model, _ = train_network(params, task, seed=params.seed, aux_heads=0, progress=False,
                                 desc=f"pretrain {label}")
        sources[label] = model.to(device)
    return target, sources


def conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding,
                        _dilation, transposed, _output_padding, _groups, output_mask,
                        out_shape=None, **kwargs) -> int:
    """FLOPs of a convolution's backward pass: each of the input and the weight gradient
    costs what the forward pass costs. torch's own formula ignores `groups` and counts a
    grouped convolution's backward pass G times over."""
    from torch.utils.flop_counter import conv_flop_count

    if transposed:
        raise NotImplementedError("transposed convolutions are not counted")
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def grid_flops(train) -> float:
    """Convolution and matrix-product FLOPs of running `train()` (multiply-adds count 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten.convolution_backward: conv_backward_flops})
    with counter:
        train()
    return float(counter.get_total_flops())


def matmul_rate(threads: int, side: int = 1024, repeats: int = 20) -> float:
    """This machine's float32 matrix-product rate (FLOP/s) at `threads` torch threads: the
    best of `repeats` products of two side x side matrices."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(side, side), torch.randn(side, side)
    best = float("inf")
    for _ in range(repeats + 3):  # the first few warm the kernels up
        begin = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - begin)
    return 2 * side ** 3 / best


def main() -> None:
    import torch

    from transferlab.config.params import load_params, parse_params, read_params_file
    from transferlab.config.presets import merge
    from transferlab.training import batched
    from transferlab.training import sweep as runs
    from transferlab.training.loop import pick_device
    from transferlab.training.variant import run_variant

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1, help="rounds of both runs per size")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                    help="torch thread counts to run both modes at")
    ap.add_argument("--cpu", action="store_true", help="stay on the CPU even with CUDA")
    ap.add_argument("--no-ceiling", action="store_true",
                    help="skip counting the arithmetic and the speed-up it allows")
    ap.add_argument("--image-size", type=int, metavar="SIDE",
                    help="synthetic colour images of this side in place of the dataset")
    ap.add_argument("--tiny", action="store_true",
                    help="a smoke run: 1 pretraining epoch, 4 transfer steps, sizes 1 and 5; "
                         "with --image-size, 12 training and 4 test images per class")
    args = ap.parse_args()

    params = load_params(args.params)
    per_class = (125, 50)
    if args.tiny:
        params = parse_params(merge(read_params_file(args.params), {
            "pretrain": {"epochs": 1, "milestones": []},
            "transfer": {"steps": 4, "milestones": []},
            "sweep": {"subsample": [1, 5]}, "report": {"subsample": 1}}))
        per_class = (12, 4)
    device = torch.device("cpu") if args.cpu else pick_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {device.type} ({name}), torch threads: {args.threads}")
    start = time.perf_counter()
    target, sources = target_and_sources(params, device, args.image_size, per_class)
    shape = "x".join(str(n) for n in target.x_train.shape[1:])
    print(f"target: {target.num_classes} classes, {len(target.y_train)} training images of "
          f"{shape}" + (" (synthetic)" if args.image_size else f" ({params.dataset})"))
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
          ">= 10x on a GPU)")
    if not args.no_ceiling and device.type == "cpu":
        flops = grid_flops(lambda: together(variants))
        # A second thread can at most double one thread's rate: counting it so keeps the
        # ceiling an upper bound even when another process takes a core while measuring.
        one_thread = matmul_rate(1)
        rate = max(max(matmul_rate(threads), one_thread * threads) for threads in args.threads)
        floor = flops / rate  # seconds, one grid
        print(f"ceiling: the batched grid is {flops / 1e9:.0f} GFLOP of convolutions and "
              f"matrix products; at this CPU's best float32 matrix-product rate "
              f"({rate / 1e9:.0f} GFLOP/s) that takes at least {floor:.2f} s, so batching can "
              f"give at most {best_single[0] / per / floor:.2f}x here (measured batched: "
              f"{flops / 1e9 / (best_batched[0] / per):.0f} GFLOP/s)")
    diff = max(abs(r[k]["test_score"] - reference[k]["test_score"])
               for r in results.values() for k in reference)
    means = "  ".join(f"{mode}@{threads} "
                      f"{sum(r['test_score'] for r in res.values()) / len(res):.4f}"
                      for (mode, threads), res in results.items())
    print(f"largest test-accuracy difference between any two runs of a variant: {diff:.4f} "
          f"(tolerance {batched.ACCURACY_TOLERANCE}); means {means}")
    print("json: " + json.dumps({
        "device": device.type, "device_name": name, "variants": len(variants),
        "image_shape": shape, "synthetic": args.image_size is not None,
        "sizes": list(params.sweep.subsample), "repeats": per,
        "one_at_a_time_s": best_single[0] / per, "one_at_a_time_threads": best_single[1],
        "batched_s": best_batched[0] / per, "batched_threads": best_batched[1],
        "speedup": best_single[0] / best_batched[0], "max_accuracy_difference": diff,
        "tolerance": batched.ACCURACY_TOLERANCE}), flush=True)


if __name__ == "__main__":
    main()
