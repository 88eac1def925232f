"""Stage transferability: estimators (k-NN, LogME, H-score, TransRate, GBC, SFDA, linear
probe, NCE / LEEP) per layer of model A, at every target size and seed of the sweep."""

import time

STARTED = time.time()

from transferlab.zygote import handoff  # noqa: E402

STARTED = handoff(STARTED)  # the rest may run in a fork of a resident launcher

from pathlib import Path  # noqa: E402

from transferlab.stage import run_stage  # noqa: E402

OUT = Path("results/transferability.json")


def main(params) -> None:
    from transferlab.transferability import compute_transferability

    compute_transferability(params, features_dir=Path("data/features"),
                            prepared=Path("data/prepared"), model_path=Path("models/A.pt"),
                            out=OUT)


if __name__ == "__main__":
    run_stage("transferability", main, [OUT], STARTED)
