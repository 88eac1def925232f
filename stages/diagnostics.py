"""Stage diagnostics: seed 002's probes of model A (t-SNE spread, gradient inversion,
decoders) per layer and class, and a transfer-frozen / retrain verdict per layer."""

import time

STARTED = time.time()

from transferlab.zygote import handoff  # noqa: E402

STARTED = handoff(STARTED)  # the rest may run in a fork of a resident launcher

from pathlib import Path  # noqa: E402

from transferlab.stage import run_stage  # noqa: E402

OUT = Path("results/diagnostics.json")


def main(params) -> None:
    from transferlab.diagnostics_probes import diagnose

    diagnose(params, prepared=Path("data/prepared"), model_path=Path("models/A.pt"), out=OUT)


if __name__ == "__main__":
    run_stage("diagnostics", main, [OUT], STARTED)
