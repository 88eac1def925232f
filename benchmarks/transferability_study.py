"""Multi-split study of the transferability estimators: several random A/B
class splits of one dataset, each with its own pretrained model A, sweep (base, AnB, AnB+
at every layer, several target sizes and seeds), features and estimators; the estimator
table and the held-out rule aggregate over the splits.

    nice -n 10 python benchmarks/transferability_study.py --splits 0 1 2 3 4 5

Everything a split produces is kept under --work/split-<s>/ and reused by a later run
(pretrained model, sweep results, features, estimators), so an interrupted study goes
on where it stopped. The params are params.yaml's, with data.split: random, seed = the
split, and the sweep grid given here; Sharma's probes run as the diagnostics stage
runs them; the linear probe (15 s a layer here) is left out unless --linear-probe.
Prints the README table; writes --out as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def split_params(split: int, sizes: list[int], seeds: list[int], linear_probe: bool = False):
    from transferlab.config.params import parse_params, read_params_file
    from transferlab.config.presets import merge

    raw = merge(read_params_file(ROOT / "params.yaml"), {
        "seed": split, "data": {"split": "random"},
        "sweep": {"treatments": ["base", "AnB", "AnB+"], "subsample": sizes, "seeds": seeds},
        "transferability": {"linear_probe": linear_probe}})
    return parse_params(raw)


def run_split(split: int, sizes: list[int], seeds: list[int], work: Path,
              linear_probe: bool) -> list[dict]:
    import torch

    from transferlab.data.prepared import TaskData, center_cropped, prepare_tasks, write_prepared
    from transferlab.features.extract import own_model_features, write_features
    from transferlab.training.loop import pick_device
    from transferlab.training.pretrain import pretrain
    from transferlab.training.sweep import grid, train_variants
    from transferlab.training.variant import load_model
    from transferlab.transferability.compute import compute_transferability

    params = split_params(split, sizes, seeds, linear_probe)
    d = work / f"split-{split}"
    prepared = d / "prepared"
    if not (prepared / "target.npz").exists():
        source, target, meta = prepare_tasks(params.dataset, params.data, params.seed,
                                             progress=False)
        write_prepared(prepared, source, target, meta)
    model_path = d / "A.pt"
    if not model_path.exists():
        pretrain(params, "A", prepared=prepared, model_out=model_path,
                 metrics_out=d / "A.json", progress=False)
    device = pick_device()
    target = TaskData.load(prepared / "target.npz")
    sweep_path = d / "sweep.json"
    done = json.loads(sweep_path.read_text()) if sweep_path.exists() else {}
    variants = [v for s in seeds for v in grid(params, s)]
    pending = [v for v in variants if v.key not in done]
    if pending:
        sources = {"A": load_model(model_path, params, target.image_shape, target.num_classes,
                                   device)}

        def keep(variant, result):
            done[variant.key] = result
            sweep_path.write_text(json.dumps(done))

        train_variants(params, target, sources, pending, device=device, progress=False,
                       on_result=keep)
    features = d / "features"
    if not (features / "meta.json").exists():
        model = load_model(model_path, params, target.image_shape, target.num_classes, device)
        crop = center_cropped(target, params.data.crop)
        fn = own_model_features(model, crop.pixel_max, list(params.features.layers),
                                iterations=False, device=device, mean=crop.mean, std=crop.std)
        write_features(crop, fn, params.features, params.seed, features)
    transfer = compute_transferability(params, features_dir=features, prepared=prepared,
                                       model_path=model_path, out=d / "transferability.json")
    diagnostics_path = d / "diagnostics.json"
    if not diagnostics_path.exists():  # Sharma's probes of model A (decoder gap, spread)
        from transferlab.diagnostics.probes import diagnose

        diagnose(params, prepared=prepared, model_path=model_path, out=diagnostics_path,
                 progress=False)
    from transferlab.report.transferability import units_from_results

    torch.set_num_threads(1)
    return units_from_results([done[v.key] for v in variants], transfer,
                              json.loads(diagnostics_path.read_text()), split=split)


def network_taus(units: list[dict]) -> dict:
    """Per size: weighted tau over splits between a whole-network score (mean over seeds)
    and the best transfer accuracy of the split (mean over seeds)."""
    import numpy as np

    from transferlab.transferability.scoring import best_accuracy, weighted_tau

    out = {}
    names = sorted({n for u in units for n in u.get("network", {})})
    for k in sorted({u["id"][1] for u in units}):
        splits = sorted({u["id"][0] for u in units if u["id"][1] == k})
        gain = [np.mean([best_accuracy(u) - u["base"] for u in units if u["id"][:2] == (s, k)])
                for s in splits]
        for name in names:
            score = [np.mean([u["network"][name] for u in units if u["id"][:2] == (s, k)])
                     for s in splits]
            out[f"{name} k={k}"] = weighted_tau(score, gain)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=ROOT / ".transferlab" / "study")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--linear-probe", action="store_true",
                        help="also the logreg head's CV accuracy (slow)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from transferlab.report.transferability import (
        analyse,
        plain,
        rule_markdown,
        size_table_markdown,
        table_markdown,
        verdict_text,
    )

    params = split_params(args.splits[0], args.sizes, args.seeds)
    units = []
    for split in args.splits:
        started = time.perf_counter()
        units += run_split(split, args.sizes, args.seeds, args.work, args.linear_probe)
        print(f"split {split}: done in {time.perf_counter() - started:.0f} s", flush=True)
    cfg = params.transferability
    analysis = analyse(units, resamples=cfg.bootstrap, seed=cfg.bootstrap_seed,
                       tolerance=params.report.tolerance, group="split")
    network = network_taus(units)
    text = "\n".join([
        f"{len(args.splits)} random A/B splits of {params.dataset} ({params.arch}), target "
        f"sizes {args.sizes}, seeds {args.seeds}: {analysis['units']} measured curves; "
        "interval: bootstrap over splits.", "", table_markdown(analysis), "",
        "Per target size (AnB):", "", size_table_markdown(analysis), "",
        verdict_text(analysis), "", verdict_text(analysis, "best"), "",
        "Whole-network scores, weighted τ over splits against the split's best transfer gain "
        "(best option minus base): " + ", ".join(f"{k} {v:.3f}" for k, v in network.items()),
        "", rule_markdown(analysis["rule"], analysis["fixed_rule"])])
    print(text)
    out = args.out or args.work / "study.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(plain({"analysis": analysis, "network_taus": network,
                                     "markdown": text}), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
