"""Stage binary_aux: seed 001's paired comparison of source networks trained with and
without binary auxiliary heads (does nothing unless pretrain.binary_aux.compare)."""

import time

STARTED = time.time()

from transferlab.zygote import handoff  # noqa: E402

STARTED = handoff(STARTED)  # the rest may run in a fork of a resident launcher

from pathlib import Path  # noqa: E402

from transferlab.stage import run_stage  # noqa: E402

OUT = Path("results/binary_aux.json")


def main(params) -> None:
    if not params.pretrain.binary_aux.compare:  # off: answer without importing torch
        from transferlab.io import write_json_atomic

        write_json_atomic(OUT, {"enabled": False})
        print("binary_aux: pretrain.binary_aux.compare is false; no comparison to run")
        return
    from transferlab.pretrain import compare_binary_aux

    compare_binary_aux(params, prepared=Path("data/prepared"), out=OUT)


if __name__ == "__main__":
    run_stage("binary_aux", main, [OUT], STARTED)
