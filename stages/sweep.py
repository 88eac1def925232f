"""Stage sweep@<seed>: every (treatment, n, target size) of the sweep grid for one seed."""

import argparse
from pathlib import Path

from transferlab.keys import declared
from transferlab.stage import run_stage
from transferlab.training.executors import connect
from transferlab.training.store import open_store
from transferlab.training.sweep import run_sweep

MODELS = {"A": Path("models/A.pt"), "B": Path("models/B.pt")}


def output(seed: int) -> Path:
    return Path(f"results/sweep/seed-{seed}.json")


def main(params, seed: int) -> None:
    # Where it runs (store, executor) is checked before any work; it never changes results.
    store = open_store()
    connect()
    run_sweep(params, seed, prepared=Path("data/prepared"), model_paths=MODELS,
              out=output(seed),
              declared=declared(f"sweep@{seed}", params), store=store)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, required=True)
    seed = parser.parse_args().seed
    run_stage(f"sweep@{seed}", lambda params: main(params, seed), [output(seed)])
