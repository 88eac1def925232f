"""Stage rank_sources: candidate source networks (ranking.candidates) scored on the target
by the estimators and ranked against each one's fine-tuned accuracy; none: a note."""

from pathlib import Path

from transferlab.stage import run_stage
from transferlab.transferability.ranking import rank_sources

OUT = Path("results/ranking.json")


def main(params) -> None:
    rank_sources(params, prepared=Path("data/prepared"), out=OUT)


if __name__ == "__main__":
    run_stage("rank_sources", main, [OUT])
