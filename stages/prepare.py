"""Stage prepare: split the dataset into source/target classes and train/test parts."""

import time

STARTED = time.time()

from transferlab.zygote import handoff  # noqa: E402

# Light (no torch): runs here rather than wait while the launcher imports torch.
STARTED = handoff(STARTED, patience=0.1)

from pathlib import Path  # noqa: E402

from transferlab.data.prepared import prepare_tasks, write_prepared  # noqa: E402
from transferlab.stage import run_stage  # noqa: E402

OUT = Path("data/prepared")


def main(p) -> None:
    source, target, meta = prepare_tasks(p.dataset, p.data, p.seed)
    write_prepared(OUT, source, target, meta)
    print(f"source {meta['source_dataset']} ({source.num_classes} classes): "
          f"{len(source.y_train)} train, {len(source.y_test)} test; target "
          f"{meta['target_dataset']} ({target.num_classes} classes"
          f"{', multi-label' if target.multilabel else ''}): {len(target.y_train)} train, "
          f"{len(target.y_test)} test; images {meta['image_shape']}")


if __name__ == "__main__":
    run_stage("prepare", main, [OUT], STARTED)
