"""Stage transfer: the one experiment the top-level params describe."""

import time

STARTED = time.time()

from transferlab.zygote import handoff  # noqa: E402

STARTED = handoff(STARTED)  # the rest may run in a fork of a resident launcher

from pathlib import Path  # noqa: E402

from transferlab.stage import run_stage  # noqa: E402

OUT = Path("results/transfer.json")
LIVE = Path("dvclive/transfer")


def main(params) -> None:
    from transferlab.runs import run_transfer

    run_transfer(params, prepared=Path("data/prepared"),
                 model_paths={"A": Path("models/A.pt"), "B": Path("models/B.pt")},
                 out=OUT, live_dir=LIVE)


if __name__ == "__main__":
    run_stage("transfer", main, [OUT, LIVE], STARTED)
