"""Stage transferability: every estimator on every layer, scored against the sweep."""

from pathlib import Path

from transferlab.stage import run_stage
from transferlab.transferability.compute import compute_transferability

OUT = Path("results/transferability.json")


def main(params) -> None:
    compute_transferability(params, features_dir=Path("data/features"),
                            prepared=Path("data/prepared"), model_path=Path("models/A.pt"),
                            out=OUT)


if __name__ == "__main__":
    run_stage("transferability", main, [OUT])
