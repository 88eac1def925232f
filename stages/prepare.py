"""Stage prepare: split the dataset into source/target classes and train/test parts."""

from pathlib import Path

from transferlab.data.prepared import (
    describe,
    prepare_tasks,
    weights_preprocessing,
    write_prepared,
)
from transferlab.stage import run_stage

OUT = Path("data/prepared")


def main(params) -> None:
    source, target, meta = prepare_tasks(params.dataset, params.data, params.seed,
                                         preprocessing=weights_preprocessing(params))
    write_prepared(OUT, source, target, meta)
    print(describe(source, target, meta))


if __name__ == "__main__":
    run_stage("prepare", main, [OUT])
