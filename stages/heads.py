"""Stage heads: linear SVM, logistic regression and random forest per feature layer."""

import time

STARTED = time.time()

from transferlab.zygote import handoff  # noqa: E402

STARTED = handoff(STARTED)  # the rest may run in a fork of a resident launcher

from pathlib import Path  # noqa: E402

from transferlab.stage import run_stage  # noqa: E402

OUT = Path("results/heads.json")
LOWSHOT = Path("results/heads_lowshot.json")
ITERATIONS = Path("results/heads_iterations.json")


def main(params) -> None:
    from transferlab.feature_store import iteration_name
    from transferlab.heads import fit_heads_per_layer

    # seed 000 Fig. 3: the forest on iteration 4's 256-d readout, beside the layers
    readouts = tuple(iteration_name(t) for t in params.heads.on_iterations)
    fit_heads_per_layer(params.heads, layers=params.features.layers + readouts,
                        subsample=params.subsample, seed=params.seed,
                        features_dir=Path("data/features"), out=OUT, lowshot_out=LOWSHOT,
                        iterations_out=ITERATIONS)


if __name__ == "__main__":
    run_stage("heads", main, [OUT, LOWSHOT, ITERATIONS], STARTED)
