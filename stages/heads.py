"""Stage heads: linear SVM, logistic regression and random forest per feature layer."""

from pathlib import Path

from transferlab.heads.per_layer import run_heads
from transferlab.stage import run_stage

OUT = Path("results/heads.json")
LOWSHOT = Path("results/heads_lowshot.json")
ITERATIONS = Path("results/heads_iterations.json")


def main(params) -> None:
    run_heads(params, features_dir=Path("data/features"), out=OUT,
              lowshot_out=LOWSHOT, iterations_out=ITERATIONS)


if __name__ == "__main__":
    run_stage("heads", main, [OUT, LOWSHOT, ITERATIONS])
