"""Stage features: activations of source model A on the target images, per layer."""

import time

STARTED = time.time()

from transferlab.zygote import handoff  # noqa: E402

STARTED = handoff(STARTED)  # the rest may run in a fork of a resident launcher

from pathlib import Path  # noqa: E402

from transferlab.stage import run_stage  # noqa: E402

OUT = Path("data/features")


def main(params) -> None:
    from transferlab.features import extract_target_features

    extract_target_features(params, prepared=Path("data/prepared"),
                            model_path=Path("models/A.pt"), out_dir=OUT)


if __name__ == "__main__":
    run_stage("features", main, [OUT], STARTED)
