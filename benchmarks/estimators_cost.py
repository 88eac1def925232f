"""What the transferability estimators cost against what they save: the time of every
estimator on every feature layer, against the training time of one sweep variant.

    nice -n 10 python benchmarks/estimators_cost.py [--rounds 5]

On the digits with params.yaml's network, sweep sizes and seeds: each round trains one
variant (AnB at report.layer, report.subsample images per class, transfer.steps steps)
and, interleaved with it, runs the estimators of `transferlab.transferability.compute` on the
features of model A, once for one (size, seed) draw and once for the whole grid of the
sweep's sizes and seeds. Torch runs on one thread. Prints medians and their ratios.
The source network's weights do not change the cost, so model A is a random network.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from transferlab.config.params import load_params
    from transferlab.data.prepared import center_cropped, prepare_tasks
    from transferlab.features.extract import own_model_features, run_batches
    from transferlab.training.variant import Variant, new_model, run_variant
    from transferlab.transferability.compute import layer_scores

    params = load_params(ROOT / "params.yaml")
    _, target, _ = prepare_tasks("digits", params.data, params.seed, progress=False)
    target = center_cropped(target, params.data.crop)
    device = torch.device("cpu")
    model = new_model(params, target, 0, device)
    layers = list(params.features.layers)
    feats = run_batches(own_model_features(model, target.pixel_max, layers, iterations=False,
                                           device=device, mean=target.mean, std=target.std),
                        target.x_train, 256, params.features.pool)
    from transferlab.data.split import nested_subsample

    def estimators(draws) -> None:
        for k, seed in draws:
            idx = nested_subsample(target.y_train, k, seed)
            y = torch.as_tensor(target.y_train[idx])
            for layer in layers:
                layer_scores(torch.as_tensor(feats[layer][idx]), y, params, seed)

    one = [(params.report.subsample, params.sweep.seeds[0])]
    grid = [(k, s) for k in params.sweep.subsample for s in params.sweep.seeds]
    variant = Variant("AnB", params.report.layer, params.report.subsample, 0)
    sources = {"A": model}
    times: dict[str, list[float]] = {"variant": [], "one draw": [], "whole grid": []}
    for _ in range(args.rounds):  # interleaved: a busy spell slows all three alike
        for name, fn in (("variant", lambda: run_variant(params, target, sources, variant,
                                                          device=device)),
                         ("one draw", lambda: estimators(one)),
                         ("whole grid", lambda: estimators(grid))):
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    med = {name: statistics.median(v) for name, v in times.items()}
    probe = " (with the linear probe)" if params.transferability.linear_probe else ""
    print(f"one sweep variant ({variant.key}, {params.transfer.steps} steps): "
          f"{med['variant']:.3f} s")
    print(f"estimators{probe}, {len(layers)} layers, one draw: {med['one draw']:.3f} s, "
          f"ratio {med['one draw'] / med['variant']:.3f}")
    ranked = len(grid) * (1 + 2 * len(params.sweep.layers))  # base, AnB, AnB+ per draw
    whole = med["whole grid"]
    print(f"estimators{probe}, {len(layers)} layers x {len(grid)} draws: {whole:.3f} s, "
          f"ratio to one variant {whole / med['variant']:.3f}, to the {ranked} base/AnB/AnB+ "
          f"variants they rank {whole / (med['variant'] * ranked):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
