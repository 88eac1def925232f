"""The project's training loop (`train.fit`) against a bare PyTorch loop.

    python benchmarks/loop_vs_bare.py [--steps 200] [--rounds 5] [--threads 1] [--cases NAME ...]

Same model (the same initial weights), data (random images held on the
device), optimiser (`train.make_optimizer` from the shipped transfer recipe),
batch size and number of steps. The two run interleaved in this one process,
in many short rounds with the order alternating, so load from other
processes falls on both; threads are pinned. Prints the device and, per
case, the median time per step of each over the rounds and the ratio of the
medians, bare / project (1.0: as fast as bare PyTorch; target >= 0.95), and
the ratio of the totals. Cases: the convnet at 8x8 (batch 32) and 28x28 (batch 64);
on a GPU also the convnet at 32x32 colour (batch 64), AlexNet at 57 px (batch 256) and
DenseNet-BC at 32 px. `--cases` runs the cases whose names start with the given
prefixes ("alexnet", "convnet 32x32"), on whatever device. After each case it prints
one line `json: {...}` holding every figure so far (benchmarks/gpu_check.py reads the
last one).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

CASES = [  # name, arch, model kwargs, (channels, side), batch, classes, GPU only
    ("convnet 8x8 b32", "convnet", {"width": 32, "hidden": 128}, (1, 8), 32, 5, False),
    ("convnet 28x28 b64", "convnet", {"width": 32, "hidden": 128}, (1, 28), 64, 5, False),
    ("convnet 32x32 b64", "convnet", {"width": 32, "hidden": 128}, (3, 32), 64, 50, True),
    ("alexnet 57px b256", "alexnet", {"channels": [96, 256, 384, 384, 256], "fc": 4096,
                                      "groups": 2, "lrn": True, "dropout": 0.5},
     (3, 57), 256, 50, True),
    ("densenet_bc 32px b64", "densenet_bc", {"depth": 100, "growth": 12, "compression": 0.5},
     (3, 32), 64, 50, True),
]


def bare_loop(model, x, y, batch_size, steps, cfg, device):
    """What one writes without a framework: shuffle, slice, forward, backward, step."""
    import torch
    from torch.nn import functional as F

    from transferlab.training.loop import make_optimizer

    optimizer = make_optimizer([{"params": list(model.parameters())}], cfg)
    model.train()
    step = 0
    while step < steps:
        order = torch.randperm(len(y)).to(device)
        for start in range(0, len(y), batch_size):
            if step >= steps:
                break
            idx = order[start:start + batch_size]
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = F.cross_entropy(model(x[idx]).float(), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    return loss


def main() -> None:
    import torch

    from transferlab.config.params import load_params
    from transferlab.models import build_model
    from transferlab.training.loop import Batches, fit, pick_device

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50, help="steps per round")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--cpu", action="store_true", help="stay on the CPU even with CUDA")
    ap.add_argument("--cases", nargs="+", metavar="NAME",
                    help="only the cases whose names start with these (any device)")
    ap.add_argument("--batch", type=int, help="every case at this batch size (a smoke run)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device("cpu") if args.cpu else pick_device()
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    print(f"device: {device.type} ({name}), torch threads: {torch.get_num_threads()}")
    cfg = load_params(ROOT / "params.yaml").transfer

    def sync():
        if cuda:
            torch.cuda.synchronize()

    figures = {"device": device.type, "device_name": name, "steps": args.steps,
               "rounds": args.rounds, "cases": {}}
    for label, arch, kwargs, (channels, side), batch, classes, gpu_only in CASES:
        if args.cases is not None:
            if not any(label.startswith(prefix) for prefix in args.cases):
                continue
        elif gpu_only and not cuda:
            print(f"{label:<22} skipped: no CUDA device")
            continue
        batch = args.batch or batch
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(args.images, channels, side, side, generator=gen).to(device)
        y = torch.randint(0, classes, (args.images,), generator=gen).to(device)
        torch.manual_seed(0)
        initial = build_model(arch, (channels, side, side), classes, **kwargs).to(device)
        if cuda and arch != "feedback":
            initial = initial.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)

        def project(model, x=x, y=y, batch=batch):
            fit(model, Batches(x, y, batch, 0), cfg, steps=args.steps, progress=False)

        def bare(model, x=x, y=y, batch=batch):
            bare_loop(model, x, y, batch, args.steps, cfg, device)

        project(copy.deepcopy(initial))  # warm-up of both (allocator, kernels)
        bare(copy.deepcopy(initial))
        seconds: dict[str, list[float]] = {"project": [], "bare": []}
        runs = [("project", project), ("bare", bare)]
        for r in range(args.rounds):
            for which, run in runs if r % 2 == 0 else runs[::-1]:
                model = copy.deepcopy(initial)
                sync()
                start = time.perf_counter()
                run(model)
                sync()
                seconds[which].append(time.perf_counter() - start)
        project_s, bare_s = (statistics.median(seconds[k]) for k in ("project", "bare"))
        print(f"{label:<22} project {project_s / args.steps * 1e3:7.3f} ms/step   "
              f"bare {bare_s / args.steps * 1e3:7.3f} ms/step   "
              f"ratio bare/project {bare_s / project_s:.3f} (target >= 0.95; totals "
              f"{sum(seconds['bare']) / sum(seconds['project']):.3f})")
        figures["cases"][label] = {
            "batch": batch, "project_ms_per_step": project_s / args.steps * 1e3,
            "bare_ms_per_step": bare_s / args.steps * 1e3, "ratio": bare_s / project_s,
            "ratio_totals": sum(seconds["bare"]) / sum(seconds["project"])}
        print("json: " + json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
