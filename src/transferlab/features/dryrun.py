"""The features' sizes and the stages' peak memory for a preset, without data or training.

    python -m transferlab.features.dryrun borthakur-einhorn-wrn-cifar100 \\
        --image-shape 3,32,32 --train-images 25000 --test-images 5000 --classes 50

The layer shapes come from the (untrained) model run on one zero image; the stored dims
and the estimates are `transferlab.features.budget`'s, the ones the stages check.
"""

from __future__ import annotations

import argparse
import math
import sys

from transferlab.features.budget import GIB, stage_peaks, stored_shape


def dry_run(params, image_shape: tuple[int, int, int], *, train_images: int, test_images: int,
            classes: int) -> dict:
    """Shapes and stage peaks for `params` (source model A) without data or training: the
    layer shapes come from the model (untrained) run on one zero image of `image_shape`
    (before data.crop)."""
    import torch

    from transferlab.heads.fit import cv_workers
    from transferlab.models import build_model
    from transferlab.training.variant import input_shape

    f = params.features
    shape = input_shape(params, image_shape)
    model = build_model(params.arch, shape, classes, **params.model_kwargs).eval()
    with torch.no_grad():
        acts = model.activations(torch.zeros(1, *shape), list(f.layers))
    raw = {n: tuple(a.shape[1:]) for n, a in acts.items() if n in f.layers}
    stored = {n: stored_shape(s, f.max_dim, f.pool) for n, s in raw.items()}
    dims = {n: math.prod(s) for n, s in stored.items()}
    train_rows = train_images * (1 + f.augment.copies)
    sizes = [k * classes if k else train_images for k in params.sweep.subsample]
    draw_rows = min(train_images, max(sizes))
    # the heads stage fits `subsample` images per class (and their augmented copies)
    heads_rows = (min(train_images, params.subsample * classes) * (1 + f.augment.copies)
                  if params.subsample else None)
    peaks = stage_peaks(dims, {n: math.prod(s) for n, s in raw.items()},
                        train_rows=train_rows, test_rows=test_images, draw_rows=draw_rows,
                        heads=params.heads.heads, batch_size=f.batch_size,
                        heads_rows=heads_rows,
                        heads_workers=cv_workers(params.heads.cv_workers))
    return {"max_dim": f.max_dim, "pool": f.pool, "train_rows": train_rows,
            "test_rows": test_images, "draw_rows": draw_rows,
            "layers": {n: {"map": list(raw[n]), "stored": list(stored[n]), "dim": dims[n]}
                       for n in raw},
            "peaks": peaks}


def dry_run_table(result: dict) -> str:
    """A markdown table of `dry_run`'s result, in GiB."""
    lines = ["| layer | map | stored | dim | heads GiB | transferability GiB |",
             "|---|---|---|---|---|---|"]
    peaks = result["peaks"]
    for name, info in result["layers"].items():
        lines.append(f"| {name} | {'x'.join(map(str, info['map']))} | "
                     f"{'x'.join(map(str, info['stored']))} | {info['dim']:,} | "
                     f"{peaks['heads'][name] / GIB:.2f} | "
                     f"{peaks['transferability'][name] / GIB:.2f} |")
    lines.append(f"\nfeatures (all layers at once): "
                 f"{peaks['features']['all layers'] / GIB:.2f} GiB; "
                 f"{result['train_rows']:,} train rows, {result['test_rows']:,} test rows, "
                 f"{result['draw_rows']:,} rows per transferability draw, "
                 f"features.max_dim {result['max_dim']:,}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from transferlab.config.params import parse_params, read_params_file
    from transferlab.config.presets import apply_preset

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", nargs="?", help="a preset name (default: params.yaml)")
    parser.add_argument("--image-shape", required=True, help="C,H,W of the stored images")
    parser.add_argument("--train-images", type=int, required=True)
    parser.add_argument("--test-images", type=int, required=True)
    parser.add_argument("--classes", type=int, required=True, help="target classes")
    parser.add_argument("--max-dim", type=int, help="features.max_dim to try instead")
    args = parser.parse_args(argv)
    raw = apply_preset(args.preset) if args.preset else read_params_file()
    if args.max_dim:
        raw.setdefault("features", {})["max_dim"] = args.max_dim
    params = parse_params(raw)
    shape = tuple(int(v) for v in args.image_shape.split(","))
    result = dry_run(params, shape, train_images=args.train_images,
                     test_images=args.test_images, classes=args.classes)
    print(dry_run_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
