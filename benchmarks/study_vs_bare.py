"""The Fashion-MNIST study's training against bare PyTorch, on the study's own data.

    python benchmarks/study_vs_bare.py --study DIR [--sizes 100 1000] [--n 3] [--rounds 1]
        [--converge 3] [--source-epochs 16] [--threads 2] [--skip-ratio] [--skip-converged]

DIR is a repository where the study ran (`benchmarks/fashion_study.sh` leaves one at
/tmp/fashion-study): its params, prepared data, models A and B and results are read.

1. Pipeline against bare (ratio bare / pipeline, target >= 0.9). A sample of the study's
   variants, each treatment at n = `--n` (base once), at each of `--sizes`, is trained
   by the sweep stage's own code path (`train_variants_local` on the sample of one size,
   as the sweep calls it: the subsample draw, data to tensors, the transfer surgery, the
   batched groups, the test) and by a bare PyTorch script written here, one variant after
   the other (the same images, initial weights, copied layers, frozen layers, optimiser,
   batch size and steps; test on the same test images). The two alternate per size, the
   order alternating too, so load from elsewhere falls on both.
2. Nothing undertrained. A plain PyTorch loop trains (a) each source network on all of its
   half's training images for `--source-epochs` epochs (the study trains
   `pretrain.epochs`), and (b) `base` at every target size and seed of the study for
   `--converge` times the study's budget. The study's numbers (results/pretrain/*.json,
   results/sweep/seed-*.json) must be within 1 point of (a) and, averaged over seeds,
   within 2 points of (b).
Prints the device, each figure, and one `json: {...}` line with all of them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


def tensors(images, labels, mean, std, pixel_max, device):
    import torch

    x = torch.as_tensor(images, dtype=torch.float32, device=device) / pixel_max
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    return (x - m) / s, torch.as_tensor(labels, device=device)


def bare_train(model, x, y, steps, batch_size, param_groups, seed):
    """Shuffle, slice, forward, backward, step: what one writes without a framework."""
    import torch
    from torch.nn import functional as F

    optimizer = torch.optim.Adam(param_groups)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    step = 0
    while step < steps:
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), batch_size):
            if step >= steps:
                break
            idx = order[start:start + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1


def bare_test(model, x, y, batch_size=1000) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        right = sum(int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
                    for i in range(0, len(y), batch_size))
    return right / len(y)


def bare_variant(params, target, sources, treatment, n, size, seed, device) -> float:
    """One variant in plain PyTorch: the first n layers copied from the source's state
    dict, frozen (no gradient, eval mode) or trained at lr * lr_mult; the rest new."""
    import torch

    from transferlab.models import build_model

    task = target.subsampled(size, seed)  # the same images the sweep draws
    x, y = tensors(task.x_train, task.y_train, task.mean, task.std, task.pixel_max, device)
    xt, yt = tensors(task.x_test, task.y_test, task.mean, task.std, task.pixel_max, device)
    torch.manual_seed(seed)
    model = build_model(params.arch, task.image_shape, task.num_classes,
                        **params.model_kwargs).to(device)
    cfg = params.transfer
    names = model.layer_names
    copied = names[:n] if treatment != "base" else []
    finetune = treatment.endswith("+")
    if copied:
        source = sources[treatment[0]]
        for name in copied:
            model.layer(name).load_state_dict(source.layer(name).state_dict())
    frozen = [model.layer(nm) for nm in copied] if not finetune else []
    for layer in frozen:
        layer.requires_grad_(False)
    copied_params = [p for nm in copied for p in model.layer(nm).parameters()] \
        if finetune else []
    ids = {id(p) for p in copied_params} | {id(p) for m in frozen for p in m.parameters()}
    new_params = [p for p in model.parameters() if id(p) not in ids]
    groups = [{"params": new_params, "lr": cfg.lr}]
    if copied_params:
        groups.append({"params": copied_params, "lr": cfg.lr * cfg.lr_mult})
    bare_train(model, x, y, cfg.budget(len(y)), cfg.batch_size, groups, seed)
    return bare_test(model, xt, yt)


def pipeline_variants(params, target, sources, cases, size, seed, device) -> list[float]:
    """The sweep stage's training call on `cases` ((treatment, n) at one size)."""
    from transferlab.training.sweep import train_variants_local
    from transferlab.training.variant import Variant

    variants = [Variant(t, n, size, seed) for t, n in cases]
    result = train_variants_local(params, target, sources, variants, device=device,
                                  progress=False)
    return [result[v.key]["test_score"] for v in variants]


def converged_source(params, task, epochs, seed, device) -> float:
    import torch

    from transferlab.models import build_model

    x, y = tensors(task.x_train, task.y_train, task.mean, task.std, task.pixel_max, device)
    xt, yt = tensors(task.x_test, task.y_test, task.mean, task.std, task.pixel_max, device)
    torch.manual_seed(seed)
    model = build_model(params.arch, task.image_shape, task.num_classes,
                        **params.model_kwargs).to(device)
    cfg = params.pretrain
    steps = epochs * -(-len(y) // cfg.batch_size)
    bare_train(model, x, y, steps, cfg.batch_size, [{"params": list(model.parameters()),
                                                     "lr": cfg.lr}], seed)
    return bare_test(model, xt, yt)


def main() -> None:
    import torch

    from transferlab.config.params import parse_params, read_params_file
    from transferlab.config.presets import merge
    from transferlab.data.prepared import TaskData
    from transferlab.training.loop import pick_device
    from transferlab.training.sweep import load_sources

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", type=Path, default=Path("/tmp/fashion-study"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--converge", type=float, default=3.0)
    ap.add_argument("--source-epochs", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-ratio", action="store_true")
    ap.add_argument("--skip-converged", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    study = args.study
    # The study's values over this checkout's files: a study run by older code lacks the
    # keys added since, which keep their defaults (they change nothing it trained).
    params = parse_params(merge(read_params_file(ROOT / "params.yaml"),
                                 read_params_file(study / "params.yaml")))
    device = pick_device()
    print(f"device: {device} ({torch.get_num_threads()} threads); study {study}", flush=True)
    prepared = study / "data" / "prepared"
    target = TaskData.load(prepared / "target.npz")
    sources = load_sources(params, target, {s: study / "models" / f"{s}.pt" for s in "AB"},
                           device)
    out: dict = {"sizes": args.sizes, "n": args.n}

    if not args.skip_ratio:
        # Per target size, the sweep's code path trains the sample as the sweep stage does
        # (one call: variants that share their trained layers go in one batched group);
        # the bare script trains the same variants one after the other.
        times: dict[str, list[float]] = {"pipeline": [], "bare": []}
        gaps = []
        for r in range(args.rounds):
            for i, size in enumerate(args.sizes):
                cases = [(t, 0 if t == "base" else args.n) for t in params.sweep.treatments]
                order = ["pipeline", "bare"] if (i + r) % 2 == 0 else ["bare", "pipeline"]
                got = {}
                for who in order:
                    start = time.perf_counter()
                    if who == "pipeline":
                        got[who] = pipeline_variants(params, target, sources, cases, size, 0,
                                                     device)
                    else:
                        got[who] = [bare_variant(params, target, sources, t, n, size, 0,
                                                 device) for t, n in cases]
                    times[who].append(time.perf_counter() - start)
                gaps += [abs(p - b) for p, b in zip(got["pipeline"], got["bare"], strict=True)]
                print(f"  k={size:5d} ({', '.join(f'{t} n={n}' for t, n in cases)}): "
                      f"pipeline {times['pipeline'][-1]:6.1f} s, bare {times['bare'][-1]:6.1f} s; "
                      f"accuracies pipeline {[round(a, 4) for a in got['pipeline']]}, "
                      f"bare {[round(a, 4) for a in got['bare']]}", flush=True)
        total = {who: sum(t) for who, t in times.items()}
        ratio = total["bare"] / total["pipeline"]
        out["ratio"] = {"pipeline_s": total["pipeline"], "bare_s": total["bare"],
                        "bare_over_pipeline": ratio, "target": 0.9,
                        "largest_accuracy_gap": max(gaps)}
        print(f"pipeline {total['pipeline']:.1f} s, bare {total['bare']:.1f} s: ratio bare / "
              f"pipeline {ratio:.3f} (target >= 0.9); largest accuracy gap {max(gaps):.4f}",
              flush=True)

    if not args.skip_converged:
        checks = {}
        for side, file in (("A", "source.npz"), ("B", "target.npz")):
            task = TaskData.load(prepared / file)
            start = time.perf_counter()
            plain = converged_source(params, task, args.source_epochs, params.seed, device)
            ours = json.loads((study / "results" / "pretrain" / f"{side}.json").read_text())
            checks[f"source {side}"] = {"study": ours["test_score"], "plain": plain,
                                        "bound": 0.01, "study_epochs": params.pretrain.epochs,
                                        "plain_epochs": args.source_epochs,
                                        "plain_s": time.perf_counter() - start}
            print(f"source {side}: study {ours['test_score']:.4f} ({params.pretrain.epochs} "
                  f"epochs), plain {plain:.4f} ({args.source_epochs} epochs)", flush=True)
        sweep = [v for seed in params.sweep.seeds  # not a glob: other runs' seeds may lie there
                 for v in json.loads((study / "results" / "sweep" / f"seed-{seed}.json")
                                     .read_text())["variants"] if v["treatment"] == "base"]
        long_cfg = params.transfer
        for size in params.sweep.subsample:
            ours = [v["test_score"] for v in sweep if v["subsample"] == size]
            plain = []
            for seed in params.sweep.seeds:
                task = target.subsampled(size, seed)
                x, y = tensors(task.x_train, task.y_train, task.mean, task.std,
                               task.pixel_max, device)
                xt, yt = tensors(task.x_test, task.y_test, task.mean, task.std,
                                 task.pixel_max, device)
                torch.manual_seed(seed)
                from transferlab.models import build_model

                model = build_model(params.arch, task.image_shape, task.num_classes,
                                    **params.model_kwargs).to(device)
                steps = int(args.converge * long_cfg.budget(len(y)))
                bare_train(model, x, y, steps, long_cfg.batch_size,
                           [{"params": list(model.parameters()), "lr": long_cfg.lr}], seed)
                plain.append(bare_test(model, xt, yt))
            checks[f"base k={size}"] = {
                "study": statistics.mean(ours), "plain": statistics.mean(plain),
                "study_each": ours, "plain_each": plain, "bound": 0.02,
                "study_steps": long_cfg.budget(size * target.num_classes),
                "plain_steps": int(args.converge * long_cfg.budget(size * target.num_classes))}
            print(f"base k={size}: study {statistics.mean(ours):.4f} {ours}, plain "
                  f"{statistics.mean(plain):.4f} {plain} ({args.converge}x the steps)",
                  flush=True)
        for name, c in checks.items():
            c["within"] = c["study"] >= c["plain"] - c["bound"]
            print(f"{name}: study - plain = {c['study'] - c['plain']:+.4f} "
                  f"(bound -{c['bound']}): {'ok' if c['within'] else 'UNDERTRAINED'}")
        out["converged"] = checks
    print("json: " + json.dumps(out))


if __name__ == "__main__":
    main()
