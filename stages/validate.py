"""Stage validate: checks the whole params.yaml on every `dvc repro` (unknown or
misspelt keys, bad values) and fingerprints the inputs outside the repository
(image folder, class file, manifest, weights file) for the stages that read them.
Imports no torch, so it costs a fraction of a second."""

import time

STARTED = time.time()

from pathlib import Path  # noqa: E402

from transferlab.stage import run_stage  # noqa: E402

OUT = Path("data/inputs")


def main(params) -> None:
    from transferlab.inputs import EXTERNAL, external_inputs
    from transferlab.io import write_json_atomic

    for stage in EXTERNAL:
        write_json_atomic(OUT / f"{stage}.json", external_inputs(params, stage))


if __name__ == "__main__":
    run_stage("validate", main, [OUT], STARTED)
