"""Stage binary_aux: networks with and without binary auxiliary heads (Borthakur & Einhorn)."""

from pathlib import Path

from transferlab.stage import run_stage
from transferlab.training.pretrain import compare_binary_aux

OUT = Path("results/binary_aux.json")


def main(params) -> None:
    compare_binary_aux(params, prepared=Path("data/prepared"), out=OUT)


if __name__ == "__main__":
    run_stage("binary_aux", main, [OUT])
