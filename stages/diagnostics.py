"""Stage diagnostics: per-layer probes of model A (Sharma's spread, inversion, t-SNE)."""

from pathlib import Path

from transferlab.diagnostics.probes import diagnose
from transferlab.stage import run_stage

OUT = Path("results/diagnostics.json")


def main(params) -> None:
    diagnose(params, prepared=Path("data/prepared"), model_path=Path("models/A.pt"), out=OUT)


if __name__ == "__main__":
    run_stage("diagnostics", main, [OUT])
