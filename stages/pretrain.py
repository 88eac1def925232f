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


def main(params, source: str) -> None:
    pretrain(params, source, prepared=PREPARED, model_out=Path(f"models/{source}.pt"),
             metrics_out=Path(f"results/pretrain/{source}.json"),
             live_dir=Path(f"dvclive/pretrain-{source}"),
             checkpoints=checkpoint_dir(open_store()),
             declared=declared(f"pretrain@{source}", params))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", choices=["A", "B"], required=True)
    source = parser.parse_args().source
    relaunch_under_torchrun(sys.argv)  # TRANSFERLAB_TORCHRUN set: this script under torchrun
    outputs = [f"models/{source}.pt", f"results/pretrain/{source}.json",
               f"dvclive/pretrain-{source}"]
    run_stage(f"pretrain@{source}", lambda params: main(params, source), outputs)
