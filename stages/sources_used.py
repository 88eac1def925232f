"""Stage sources_used: which pretrained models the run reads, one file per model.

pretrain@A and pretrain@B each depend on their own file, so pretrain@B reruns only when
model B becomes used or unused, and trains nothing while no stage reads it.
"""

from pathlib import Path

from transferlab.io import write_json_atomic
from transferlab.models.treatments import model_b_uses
from transferlab.stage import run_stage

OUTPUTS = {"A": Path("data/uses/A.json"), "B": Path("data/uses/B.json")}


def main(params) -> None:
    b = model_b_uses(treatments=params.sweep.treatments, source=params.source,
                     freeze=params.freeze, swap=params.sweep.swap, arch=params.arch)
    print("model B: " + ("; ".join(b) if b else "no stage reads it: pretrain@B trains nothing"))
    # Only whether a model is used goes into its file: a change of who uses it (BnB to BnB+)
    # must not rerun its pretraining.
    write_json_atomic(OUTPUTS["A"], {"model": "A", "used": True})
    write_json_atomic(OUTPUTS["B"], {"model": "B", "used": bool(b)})


if __name__ == "__main__":
    run_stage("sources_used", main, list(OUTPUTS.values()))
