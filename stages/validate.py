"""Stage validate: checks params.yaml and recipe.yaml whole on every `dvc repro`
(unknown, misspelt or misplaced keys, bad values) and writes each other stage's
data/inputs/<stage>.json: its code digests, its recipe values and the
fingerprints of its inputs outside the repository (transferlab.inputs).
Imports no torch, so it costs a fraction of a second."""

import time

STARTED = time.time()

from transferlab.zygote import handoff  # noqa: E402

# The first stage of every repro: starts the launcher for the next ones, runs here.
STARTED = handoff(STARTED, wait=False, patience=0.1)

from pathlib import Path  # noqa: E402

from transferlab.stage import run_stage  # noqa: E402

OUT = Path("data/inputs")


def main(params) -> None:
    from transferlab.inputs import stage_inputs
    from transferlab.io import write_json_atomic
    from transferlab.keys import dvc_stages

    for stage in dvc_stages():
        if stage != "validate":
            write_json_atomic(OUT / f"{stage}.json", stage_inputs(params, stage))


if __name__ == "__main__":
    run_stage("validate", main, [OUT], STARTED)
