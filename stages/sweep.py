"""Stage sweep@<seed>: every treatment x layer x target size of the grid, for one seed."""

import time

STARTED = time.time()

from transferlab.zygote import handoff  # noqa: E402

STARTED = handoff(STARTED)  # the rest may run in a fork of a resident launcher

import argparse  # noqa: E402
from pathlib import Path  # noqa: E402

from transferlab.keys import stage_params  # noqa: E402
from transferlab.stage import run_stage  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--seed", type=int, required=True)
ARGS = parser.parse_args()
OUT = Path(f"results/sweep/seed-{ARGS.seed}.json")


def main(params) -> None:
    from transferlab.executors import connect
    from transferlab.runs import run_sweep
    from transferlab.store import open_store

    # Where it runs (store, executor) is checked before any work; it never changes results.
    store = open_store()
    connect()
    run_sweep(params, ARGS.seed, prepared=Path("data/prepared"),
              model_paths={"A": Path("models/A.pt"), "B": Path("models/B.pt")},
              out=OUT, key_params=stage_params(f"sweep@{ARGS.seed}", params), store=store)


if __name__ == "__main__":
    run_stage(f"sweep@{ARGS.seed}", main, [OUT], STARTED)
