"""A CIFAR-100-sized A/B transfer sweep on one device: wall time and GPU utilisation.

    python benchmarks/gpu_sweep.py [--params FILE] [--sizes 10 100 500] [--cpu]
    python benchmarks/gpu_sweep.py --sizes 500 --steps 500 --pretrain-epochs 3  # shortened
    python benchmarks/gpu_sweep.py --tiny        # a seconds-long smoke run, any machine

The GPU sweep check: 50 source and 50 target classes of 32x32 colour images,
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
batched where the recipe batches) and its training images per second, the mean
GPU utilisation sampled every 200 ms during the sweep (`torch.cuda.utilization()`,
or `nvidia-smi` where that needs a missing pynvml), and the mean test accuracy
per treatment. On a CPU it runs the same, far slower: use `--tiny` there.

Shortened runs (`--steps`, `--pretrain-epochs`, fewer `--sizes`; the rate
milestones scaled to fit) extrapolate the full sweep's time, linearly:

    full sweep = measured sweep x (recipe steps / steps) x (3 sizes / sizes run)

Every variant trains the recipe's fixed number of steps at batch 256 whatever its
target size (10 images per class already make 500 images), so a step costs the same
at every size; the per-variant set-up and test pass are scaled with the steps too,
which errs on the long side. Pretraining is extrapolated the same way, by epochs,
and reported apart. The last line printed is `json: {...}`, the figures for
benchmarks/gpu_check.py.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

TREATMENTS = ["base", "AnB", "AnB+", "BnB", "BnB+"]
PRESET = "yosinski-2014-cifar100-similar"
FULL_SIZES = [10, 100, 500]  # target sizes (images per class), 1 seed
GOAL_MINUTES = 30  # the full sweep on one H100


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
    """GPU utilisation (%) sampled every `period` seconds by a background thread while it
    runs: `torch.cuda.utilization()` (NVML, through pynvml), else `nvidia-smi`; nothing
    on a CPU. `source` says which one answered."""

    def __init__(self, device, period: float = 0.2):
        import torch

        self.samples: list[float] = []
        self.source = None
        self._stop = threading.Event()
        self._thread = None
        if device.type != "cuda":
            return
        index = device.index if device.index is not None else torch.cuda.current_device()
        try:
            torch.cuda.utilization(index)
            self._read, self.source = (lambda: torch.cuda.utilization(index)), "torch.cuda"
        except Exception:  # no pynvml (or no NVML): ask nvidia-smi each time
            if shutil.which("nvidia-smi"):
                self._read, self.source = (lambda: self._smi(index)), "nvidia-smi"
        if self.source is not None:
            self._thread = threading.Thread(target=self._run, args=(period,), daemon=True)
            self._thread.start()

    @staticmethod
    def _smi(index: int) -> float:
        out = subprocess.run(["nvidia-smi", f"--id={index}", "--query-gpu=utilization.gpu",
                              "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=5).stdout
        return float(out.split()[0])

    def _run(self, period: float) -> None:
        while not self._stop.wait(period):
            try:
                self.samples.append(float(self._read()))
            except Exception:  # a missed sample is no reason to stop the benchmark
                pass

    def stop(self) -> list[float]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.samples


def scaled(milestones, length: int, full: int) -> list[int]:
    """`milestones` of a schedule `full` long, placed alike in one `length` long."""
    return sorted({m * length // full for m in milestones} - {0})


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
    ap.add_argument("--sizes", type=int, nargs="+",
                    help=f"target training images per class, one sweep size each "
                         f"(default {FULL_SIZES})")
    ap.add_argument("--steps", type=int,
                    help="transfer steps per variant (default: the recipe's)")
    ap.add_argument("--pretrain-epochs", type=int,
                    help="pretraining epochs of A and B (default: the recipe's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recipe", choices=["yosinski", "params"], default="yosinski")
    ap.add_argument("--cpu", action="store_true", help="stay on the CPU even with CUDA")
    ap.add_argument("--tiny", action="store_true",
                    help="4 classes of 16 px, 12 images per class, sizes 2 and 12, "
                         "1 pretraining epoch, 4 steps (each unless given)")
    args = ap.parse_args()
    if args.tiny:
        args.classes, args.train_per_class, args.test_per_class = 4, 12, 3
        args.image_size = 16
        args.sizes = args.sizes or [2, 12]
        args.steps = args.steps or 4
        args.pretrain_epochs = args.pretrain_epochs or 1
    args.sizes = args.sizes or FULL_SIZES

    device = torch.device("cpu") if args.cpu else pick_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {device.type} ({name}), torch {torch.__version__}, CUDA "
          f"{torch.version.cuda}, torch threads: {torch.get_num_threads()}")
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
    full = parse_params(merge(raw, changes))  # the recipe as the full sweep runs it
    full_steps, full_epochs = full.transfer.steps, full.pretrain.epochs
    steps, epochs = args.steps or full_steps, args.pretrain_epochs or full_epochs
    changes = merge(changes, {
        "pretrain": {"epochs": epochs,
                     "milestones": scaled(full.pretrain.milestones, epochs, full_epochs)},
        "transfer": {"steps": steps,
                     "milestones": scaled(full.transfer.milestones, steps, full_steps)}})
    params = parse_params(merge(raw, changes))
    source = synthetic_task(args.classes, args.train_per_class, args.test_per_class,
                            args.image_size, seed=1000 + args.seed)
    target = synthetic_task(args.classes, args.train_per_class, args.test_per_class,
                            args.image_size, seed=2000 + args.seed)
    print(f"tasks: {args.classes} + {args.classes} classes, {args.train_per_class} train / "
          f"{args.test_per_class} test images per class, 3x{args.image_size}x{args.image_size}")
    figures = {"device": device.type, "device_name": name, "torch": torch.__version__,
               "cuda": torch.version.cuda, "classes": args.classes,
               "train_per_class": args.train_per_class, "image_size": args.image_size,
               "sizes": args.sizes, "steps": steps, "recipe_steps": full_steps,
               "pretrain_epochs": epochs, "recipe_pretrain_epochs": full_epochs}

    start = time.perf_counter()
    sources = {}
    for label, task in (("A", source), ("B", target)):
        model, metrics = train_network(params, task, seed=args.seed, aux_heads=0,
                                       progress=False, desc=f"pretrain {label}")
        sources[label] = model.to(device)
        print(f"pretrained {label}: test accuracy {metrics['test_score']:.3f}")
    pretrain_s = time.perf_counter() - start
    pretrain_full_s = pretrain_s * full_epochs / epochs
    figures |= {"pretrain_s": pretrain_s, "pretrain_full_min": pretrain_full_s / 60}
    print(f"pretraining A and B ({epochs} epochs each): {pretrain_s:.1f} s (not in the "
          f"sweep time); at the recipe's {full_epochs} epochs: {pretrain_s:.1f} s x "
          f"{full_epochs}/{epochs} = {pretrain_full_s / 60:.1f} min")
    print("json: " + json.dumps(figures), flush=True)

    variants = grid(params, args.seed)
    sampler = UtilisationSampler(device)
    start = time.perf_counter()
    results = train_variants(params, target, sources, variants, device=device,
                             desc="gpu sweep", progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    took = time.perf_counter() - start
    samples = sampler.stop()
    batch = params.transfer.batch_size
    images = sum(steps * min(batch, v.subsample * args.classes) for v in variants)
    print(f"sweep: {len(variants)} variants (treatments {', '.join(TREATMENTS)}; layers "
          f"{layers}; sizes {args.sizes}/class; seed {args.seed}; {steps} steps each) in "
          f"{took:.1f} s, {images / took:,.0f} training images/s")
    full_s = took * (full_steps / steps) * (len(FULL_SIZES) / len(args.sizes))
    formula = (f"full sweep = measured sweep x (recipe steps / steps) x "
               f"({len(FULL_SIZES)} sizes / sizes run) = {took:.1f} s x {full_steps}/{steps} "
               f"x {len(FULL_SIZES)}/{len(args.sizes)} = {full_s / 60:.1f} min")
    print(f"{formula} (goal <= {GOAL_MINUTES} min on one H100; with pretraining "
          f"{(full_s + pretrain_full_s) / 60:.1f} min)")
    figures |= {"variants": len(variants), "sweep_s": took, "images_per_s": images / took,
                "full_sweep_min": full_s / 60, "formula": formula,
                "goal_min": GOAL_MINUTES,
                "full_with_pretraining_min": (full_s + pretrain_full_s) / 60,
                "gpu_utilisation_source": sampler.source,
                "gpu_utilisation_samples": len(samples),
                "gpu_utilisation_mean": sum(samples) / len(samples) if samples else None}
    if samples:
        print(f"GPU utilisation during the sweep: mean {figures['gpu_utilisation_mean']:.0f} "
              f"% over {len(samples)} samples ({sampler.source}, every 200 ms)")
    else:
        print("GPU utilisation: not sampled (no NVIDIA GPU in use)")
    figures["accuracy"] = {}
    for treatment in TREATMENTS:
        scores = [results[v.key]["test_score"] for v in variants if v.treatment == treatment]
        figures["accuracy"][treatment] = sum(scores) / len(scores)
        print(f"  {treatment:<5} mean test accuracy {sum(scores) / len(scores):.3f} "
              f"over {len(scores)} variants")
    print("json: " + json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
