"""Stage pretrain@A / pretrain@B: a network on the source (A) or target (B) classes."""

import time

STARTED = time.time()

from transferlab.zygote import handoff  # noqa: E402

STARTED = handoff(STARTED)  # the rest may run in a fork of a resident launcher

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from transferlab.distributed import relaunch_under_torchrun  # noqa: E402
from transferlab.keys import stage_params  # noqa: E402
from transferlab.stage import run_stage  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--source", choices=["A", "B"], required=True)
ARGS = parser.parse_args()
relaunch_under_torchrun(sys.argv)  # TRANSFERLAB_TORCHRUN set: this script again, under torchrun
MODEL = Path(f"models/{ARGS.source}.pt")
METRICS = Path(f"results/pretrain/{ARGS.source}.json")
LIVE = Path(f"dvclive/pretrain-{ARGS.source}")


def main(params) -> None:
    from transferlab.pretrain import pretrain
    from transferlab.store import checkpoint_dir, open_store

    pretrain(params, ARGS.source, prepared=Path("data/prepared"), model_out=MODEL,
             metrics_out=METRICS, live_dir=LIVE, checkpoints=checkpoint_dir(open_store()),
             key_params=stage_params(f"pretrain@{ARGS.source}", params))


if __name__ == "__main__":
    run_stage(f"pretrain@{ARGS.source}", main, [MODEL, METRICS, LIVE], STARTED)
