"""A CIFAR-100-sized A/B transfer sweep on one device: wall time and GPU utilisation.

    python benchmarks/gpu_sweep.py [--params FILE] [--sizes 10 100 500] [--cpu]
    python benchmarks/gpu_sweep.py --tiny        # a seconds-long smoke run, any machine

Issue 10's GPU check: 50 source and 50 target classes of 32x32 colour images,
500 training and 100 test images per class (CIFAR-100's sizes), split in
halves as in Yosinski et al.; base, AnB, AnB+, BnB and BnB+ at every layer
of the convnet, 3 target sizes (images per class), 1 seed. Datasets cannot be
downloaded on the lent GPU machines, so the images are synthetic, of the real
size: each class a fixed random colour pattern plus per-image noise, which a
network can learn, so training does real work. The training recipe is
Yosinski et al.'s CIFAR-100 one, read from the preset
`yosinski-2014-cifar100-similar` (its pretrain and transfer sections: SGD,
batch 256, 90 epochs, the rate dropped four times; `--recipe params` keeps the
params file's instead), on the project's convnet (model.convnet of the params
file) and without training-time augmentation (synthetic images need none,
and augmented runs do not batch); the grid is the one above.

Prints the device, the time to pretrain A and B (apart), the sweep's wall
time through `runs.train_variants` (the sweep stage's one training path,
batched where the recipe batches), the mean GPU utilisation sampled by
`nvidia-smi` every 200 ms during the sweep, and the mean test accuracy per
treatment. On a CPU it runs the same, far slower: use `--tiny` there.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

TREATMENTS = ["base", "AnB", "AnB+", "BnB", "BnB+"]
PRESET = "yosinski-2014-cifar100-similar"


def synthetic_task(classes: int, train_per_class: int, test_per_class: int, size: int,
                   seed: int):
    """A TaskData of `classes` classes of uint8 3 x size x size images: each class a fixed
    random pattern, each image that pattern plus its own noise."""
    import numpy as np

    from transferlab.data.prepared import TaskData

    rng = np.random.default_rng(seed)
    patterns = rng.integers(0, 256, size=(classes, 3, size, size)).astype(np.float32)

    def part(per_class):
        y = np.repeat(np.arange(classes), per_class)
        noise = rng.normal(0.0, 80.0, size=(len(y), 3, size, size)).astype(np.float32)
        x = np.clip(patterns[y] * 0.5 + 64 + noise, 0, 255).astype(np.uint8)
        order = rng.permutation(len(y))
        return x[order], y[order].astype(np.int64)

    x_train, y_train = part(train_per_class)
    x_test, y_test = part(test_per_class)
    return TaskData(classes=list(range(classes)), x_train=x_train, y_train=y_train,
                    x_test=x_test, y_test=y_test, pixel_max=255,
                    mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


class UtilisationSampler:
    """`nvidia-smi` sampling GPU utilisation every 200 ms while it runs (nothing without
    an NVIDIA GPU)."""

    def __init__(self, device):
        self.proc = None
        if device.type == "cuda" and shutil.which("nvidia-smi"):
            index = device.index if device.index is not None else 0
            self.proc = subprocess.Popen(
                ["nvidia-smi", f"--id={index}", "--query-gpu=utilization.gpu",
                 "--format=csv,noheader,nounits", "-lms", "200"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def stop(self) -> list[float]:
        if self.proc is None:
            return []
        self.proc.terminate()
        out, _ = self.proc.communicate()
        return [float(v) for v in out.split() if v.strip().replace(".", "", 1).isdigit()]


def main() -> None:
    import torch
    import yaml

    from transferlab.config.params import parse_params, read_params_file
    from transferlab.config.presets import merge, preset_path
    from transferlab.models import layer_names_of
    from transferlab.training.loop import pick_device
    from transferlab.training.pretrain import train_network
    from transferlab.training.sweep import grid, train_variants

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--classes", type=int, default=50, help="classes on each side")
    ap.add_argument("--train-per-class", type=int, default=500)
    ap.add_argument("--test-per-class", type=int, default=100)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 500],
                    help="target training images per class, one sweep size each")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recipe", choices=["yosinski", "params"], default="yosinski")
    ap.add_argument("--cpu", action="store_true", help="stay on the CPU even with CUDA")
    ap.add_argument("--tiny", action="store_true",
                    help="4 classes, 12 images per class, 1 pretraining epoch, 4 steps")
    args = ap.parse_args()
    if args.tiny:
        args.classes, args.train_per_class, args.test_per_class = 4, 12, 3
        args.image_size, args.sizes = 16, [2, 12]

    device = torch.device("cpu") if args.cpu else pick_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {device.type} ({name}), torch threads: {torch.get_num_threads()}")
    raw = read_params_file(args.params)
    layers = list(range(1, len(layer_names_of("convnet", raw["model"]["convnet"])) + 1))
    changes = {"arch": "convnet", "sweep": {"treatments": TREATMENTS, "layers": layers,
                                            "treatment_layers": {},
                                            "subsample": args.sizes, "seeds": [args.seed]},
               "report": {"subsample": args.sizes[0]}}  # the report is not run; kept valid
    changes["data"] = {"crop": 0, "pad": 0, "flip": False}
    if args.recipe == "yosinski":
        preset = yaml.safe_load(preset_path(PRESET).read_text())
        changes |= {"pretrain": preset["pretrain"], "transfer": preset["transfer"]}
    if args.tiny:
        changes = merge(changes, {"pretrain": {"epochs": 1, "milestones": []},
                                  "transfer": {"steps": 4, "milestones": []}})
    params = parse_params(merge(raw, changes))
    source = synthetic_task(args.classes, args.train_per_class, args.test_per_class,
                            args.image_size, seed=1000 + args.seed)
    target = synthetic_task(args.classes, args.train_per_class, args.test_per_class,
                            args.image_size, seed=2000 + args.seed)
    print(f"tasks: {args.classes} + {args.classes} classes, {args.train_per_class} train / "
          f"{args.test_per_class} test images per class, 3x{args.image_size}x{args.image_size}")

    start = time.perf_counter()
    sources = {}
    for label, task in (("A", source), ("B", target)):
        model, metrics = train_network(params, task, seed=args.seed, aux_heads=0,
                                       progress=False, desc=f"pretrain {label}")
        sources[label] = model.to(device)
        print(f"pretrained {label}: test accuracy {metrics['test_score']:.3f}")
    print(f"pretraining A and B: {time.perf_counter() - start:.1f} s (not in the sweep time)")

    variants = grid(params, args.seed)
    sampler = UtilisationSampler(device)
    start = time.perf_counter()
    results = train_variants(params, target, sources, variants, device=device,
                             desc="gpu sweep", progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    took = time.perf_counter() - start
    samples = sampler.stop()
    print(f"sweep: {len(variants)} variants (treatments {', '.join(TREATMENTS)}; layers "
          f"{layers}; sizes {args.sizes}/class; seed {args.seed}) in {took:.1f} s "
          f"({took / 60:.1f} min; target <= 30 min on one H100)")
    if samples:
        busy = sum(samples) / len(samples)
        print(f"GPU utilisation during the sweep: mean {busy:.0f} % over {len(samples)} "
              f"samples (nvidia-smi, 200 ms)")
    else:
        print("GPU utilisation: not sampled (no NVIDIA GPU in use)")
    for treatment in TREATMENTS:
        scores = [r["test_score"] for v, r in ((v, results[v.key]) for v in variants)
                  if v.treatment == treatment]
        print(f"  {treatment:<5} mean test accuracy {sum(scores) / len(scores):.3f} "
              f"over {len(scores)} variants")


if __name__ == "__main__":
    main()
