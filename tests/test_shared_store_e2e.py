"""`dvc exp run --temp` and queued experiments share the store of trained results.

Both run in a copy of the workspace that holds only git-tracked files; the
store (TRANSFERLAB_STORE, a user cache by default) lives outside it, so a run
trains only the sweep variants no earlier run of any workspace trained.
"""

import os
import re
import signal
import subprocess
import time

import pytest

from benchmarks.pipeline_overhead import copy_checkout, tool_env
from transferlab.config.params import read_params_file

from .conftest import ROOT, TINY, deep_update, write_params

pytestmark = pytest.mark.e2e

PARAMS = deep_update(read_params_file(ROOT / "params.yaml"),
                     deep_update(TINY, {"sweep": {"seeds": [0], "subsample": [1],
                                                  "layers": [3]},
                                        "report": {"subsample": 1, "layer": 3}}))
SUMMARY = re.compile(r"sweep seed 0: (\d+) variants, (\d+) trained, (\d+) reused")


def run(repo, env, *args, check=True, timeout=300) -> str:
    # A hung DVC call fails the test instead of blocking the suite.
    proc = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


def counts(output: str) -> tuple[int, int, int]:
    (found,) = SUMMARY.findall(output)
    return tuple(map(int, found))


def test_temp_and_queued_experiments_train_nothing_already_trained(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    copy_checkout(repo, None)
    write_params(repo / "params.yaml", PARAMS)
    for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "tiny params"]):
        run(repo, tool_env(), *cmd)
    env = {**tool_env(), "TRANSFERLAB_STORE": str(tmp_path / "store")}

    # 1. A --temp run of the sweep: base, AnB, AnB+, BnB, BnB+, AnB-2fc at layer 3.
    first = counts(run(repo, env, "dvc", "exp", "run", "--temp", "sweep"))
    assert first == (6, 6, 0)

    # 2. Two queued experiments, run two at a time: each trains only its own new layer.
    for name, layers in (("grow-1", "[1,3]"), ("grow-2", "[2,3]")):
        run(repo, env, "dvc", "exp", "run", "--queue", "-n", name,
            "-S", f"sweep.layers={layers}", "sweep")
    # Not waited on: its celery workers inherit its pipes, and one that hangs on shutdown
    # (seen here: "shutting down due to empty queue", then alive) would block a pipe read.
    # The status poll below is what waits; the session group is killed at the end.
    starter = subprocess.Popen(["dvc", "queue", "start", "-j", "2"], cwd=repo, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.time() + 600
        while re.search(r"\b(Queued|Running)\b", run(repo, env, "dvc", "queue", "status")):
            assert time.time() < deadline, run(repo, env, "dvc", "queue", "status")
            time.sleep(2)
    finally:
        run(repo, env, "dvc", "queue", "stop", "--kill", check=False)
        try:
            os.killpg(starter.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        starter.wait(timeout=30)
    status = run(repo, env, "dvc", "queue", "status")
    assert len(re.findall(r"\bSuccess\b", status)) == 2, status
    for name in ("grow-1", "grow-2"):
        # 1 + 4 treatments x 2 layers + AnB-2fc at the deepest: the 4 at the new layer
        assert counts(run(repo, env, "dvc", "queue", "logs", name)) == (10, 4, 6), name

    # 3. Another --temp run over everything the others trained trains nothing.
    last = counts(run(repo, env, "dvc", "exp", "run", "--temp", "-S",
                      "sweep.layers=[1,2,3]", "sweep"))
    assert last == (14, 0, 14)
