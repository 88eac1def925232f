"""Stage prepare: split the dataset into source/target classes and train/test parts."""

import time

STARTED = time.time()

from pathlib import Path  # noqa: E402

from transferlab.data.prepared import prepare_dataset, write_prepared  # noqa: E402
from transferlab.params import (  # noqa: E402
    check_subsample,
    check_sweep_subsamples,
    load_params,
)
from transferlab.stage import run_stage  # noqa: E402

OUT = Path("data/prepared")


def main() -> None:
    p = load_params()
    source, target, meta = prepare_dataset(p.dataset, p.data.split, p.data.source_classes,
                                           p.data.target_classes, p.data.test_fraction, p.seed)
    smallest = target.smallest_train_class()
    check_subsample("subsample", p.subsample, smallest)
    check_sweep_subsamples(p, smallest)
    write_prepared(OUT, source, target, meta)
    print(f"source classes {meta['source_classes']}: {len(source.y_train)} train, "
          f"{len(source.y_test)} test; target classes {meta['target_classes']}: "
          f"{len(target.y_train)} train, {len(target.y_test)} test")


if __name__ == "__main__":
    run_stage("prepare", main, [OUT], STARTED)
