"""Stage pretrain@A / pretrain@B: a network on the source (A) or target (B) classes."""

import argparse
import sys
from pathlib import Path

from transferlab.keys import declared
from transferlab.stage import run_stage
from transferlab.training.distributed import relaunch_under_torchrun
from transferlab.training.pretrain import pretrain
from transferlab.training.store import checkpoint_dir, open_store

PREPARED = Path("data/prepared")


def outputs(source: str) -> tuple[Path, Path, Path]:
    """The model, its metrics and its dvclive folder (as dvc.yaml's outs)."""
    return (Path(f"models/{source}.pt"), Path(f"results/pretrain/{source}.json"),
            Path(f"dvclive/pretrain-{source}"))


def main(params, source: str) -> None:
    model, metrics, live = outputs(source)
    pretrain(params, source, prepared=PREPARED, model_out=model, metrics_out=metrics,
             live_dir=live, checkpoints=checkpoint_dir(open_store()),
             declared=declared(f"pretrain@{source}", params),
             uses=Path(f"data/uses/{source}.json"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", choices=["A", "B"], required=True)
    source = parser.parse_args().source
    relaunch_under_torchrun(sys.argv)  # TRANSFERLAB_TORCHRUN set: this script under torchrun
    run_stage(f"pretrain@{source}", lambda params: main(params, source), outputs(source))
