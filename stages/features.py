"""Stage features: activations of model A's layers on the target images, per split."""

from pathlib import Path

from transferlab.features.extract import extract_target_features
from transferlab.stage import run_stage

OUT = Path("data/features")


def main(params) -> None:
    extract_target_features(params, prepared=Path("data/prepared"),
                            model_path=Path("models/A.pt"), out_dir=OUT)


if __name__ == "__main__":
    run_stage("features", main, [OUT])
