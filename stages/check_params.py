"""Stage check_params: refuse unknown, misplaced or bad params before any other stage runs."""

from pathlib import Path

from transferlab.io import write_text_atomic
from transferlab.stage import run_stage

OUT = Path("data/params-checked.txt")


def main(params) -> None:
    # run_stage has read and checked both files whole. What is written never changes, so
    # the stages after this one rerun only for the keys they declare themselves.
    write_text_atomic(OUT, "params.yaml and recipe.yaml passed every check\n")


if __name__ == "__main__":
    run_stage("check_params", main, [OUT])
