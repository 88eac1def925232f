"""Stage transfer: the one experiment the top-level params describe."""

from pathlib import Path

from transferlab.stage import run_stage
from transferlab.training.sweep import run_transfer

OUT = Path("results/transfer.json")
LIVE = Path("dvclive/transfer")
MODELS = {"A": Path("models/A.pt"), "B": Path("models/B.pt")}


def main(params) -> None:
    run_transfer(params, prepared=Path("data/prepared"), model_paths=MODELS, out=OUT,
                 live_dir=LIVE)


if __name__ == "__main__":
    run_stage("transfer", main, [OUT, LIVE])
