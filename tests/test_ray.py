"""Sweeps on a real Ray cluster (`ray start --head` on 127.0.0.1), against the local run.

One cluster for the module (2 CPUs, its own temporary directory), stopped at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from benchmarks.ray_scaling import Head, free_port, pids_using
from transferlab.config.params import parse_params
from transferlab.keys import declared
from transferlab.training import executors
from transferlab.training import sweep as runs
from transferlab.training.pretrain import pretrain
from transferlab.training.store import Store

from .conftest import ROOT, TINY, deep_update

SRC = str(ROOT / "src")
# A small grid whose variants take long enough to be killed in the middle of one.
SLOW = deep_update(TINY, {"transfer": {"steps": 300},
                          "sweep": {"layers": [3], "subsample": [3]}})


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray head node: 2 CPUs on 127.0.0.1; its processes are ended at the end."""
    head = Head(cpus=2)
    try:
        yield head.address
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        head.stop()


@pytest.fixture(scope="module")
def trained_sources(tmp_path_factory, digits_tasks):
    from transferlab.data.prepared import write_prepared

    tmp = tmp_path_factory.mktemp("ray-sources")
    source, target, meta = digits_tasks
    write_prepared(tmp / "prepared", source, target, meta)
    params = parse_params(TINY)
    paths = {}
    for side in ("A", "B"):
        paths[side] = tmp / f"{side}.pt"
        pretrain(params, side, prepared=tmp / "prepared", model_out=paths[side],
                 metrics_out=tmp / f"{side}.json", progress=False)
    return tmp / "prepared", paths


def _sweep(raw, prepared, paths, out: Path, store: Path) -> bytes:
    params = parse_params(raw)
    runs.run_sweep(params, 0, prepared=prepared, model_paths=paths, out=out,
                   declared=declared("sweep@0", params, ROOT / "dvc.yaml"),
                   store=Store(str(store)), progress=False)
    return out.read_bytes()


def _local(raw, prepared, paths, tmp: Path) -> bytes:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what a Ray task with num_cpus=1 gets
    try:
        return _sweep(raw, prepared, paths, tmp / "local.json", tmp / "local-store")
    finally:
        torch.set_num_threads(threads)


def use_ray(monkeypatch, address: str) -> None:
    """From here on the sweep trains on the cluster; training in this process fails."""
    monkeypatch.setenv("TRANSFERLAB_EXECUTOR", "ray")
    monkeypatch.setenv("RAY_ADDRESS", address)

    def nowhere_here(*args, **kwargs):
        raise AssertionError("a variant trained in the driver, not on the cluster")

    monkeypatch.setattr(runs, "run_variant", nowhere_here)


def test_the_sweep_on_ray_gives_the_local_bytes(trained_sources, ray_address, tmp_path,
                                                 monkeypatch):
    prepared, paths = trained_sources
    local = _local(TINY, prepared, paths, tmp_path)
    use_ray(monkeypatch, ray_address)
    remote = _sweep(TINY, prepared, paths, tmp_path / "ray.json", tmp_path / "ray-store")
    assert remote == local
    grid = runs.grid(parse_params(TINY), 0)
    assert len(list((tmp_path / "ray-store" / "variants").glob("*.json"))) == len(grid)


def test_a_worker_killed_mid_variant_is_retried_and_the_sweep_completes(
        trained_sources, ray_address, tmp_path, monkeypatch):
    prepared, paths = trained_sources
    local = _local(SLOW, prepared, paths, tmp_path)
    use_ray(monkeypatch, ray_address)
    killed, errors = [], []

    def sweep():
        try:
            _sweep(SLOW, prepared, paths, tmp_path / "ray.json", tmp_path / "ray-store")
        except BaseException as err:  # reported by the main thread
            errors.append(err)

    thread = threading.Thread(target=sweep)
    thread.start()
    deadline = time.time() + 300
    while not killed and thread.is_alive() and time.time() < deadline:
        # A worker's process title names the task it is running.
        busy = pids_using("ray::_train_task")
        if busy:
            time.sleep(0.3)  # inside the variant's training steps
            os.kill(busy[0], signal.SIGKILL)
            killed.append(busy[0])
        time.sleep(0.05)
    thread.join(600)
    assert not errors, errors
    assert killed, "no Ray worker was seen running a variant"
    assert (tmp_path / "ray.json").read_bytes() == local


class _Poisoned:
    """on_result that stores every variant but one, which fails wherever it runs."""

    def __init__(self, store: Store, poisoned: str):
        self.store, self.poisoned = store, poisoned

    def __call__(self, variant, result):
        if variant.key == self.poisoned:
            raise RuntimeError(f"poisoned variant {variant.key}")
        runs.VariantCache(self.store, {"test": 1}).put(variant, result)


def test_a_variant_that_keeps_failing_names_itself_and_the_others_are_kept(
        trained_sources, ray_address, tmp_path, monkeypatch):
    from transferlab.data.prepared import TaskData

    prepared, paths = trained_sources
    params = parse_params(deep_update(TINY, {"sweep": {"layers": [3], "subsample": [3]}}))
    target = TaskData.load(prepared / "target.npz")
    sources = runs.load_sources(params, target, paths, torch.device("cpu"))
    use_ray(monkeypatch, ray_address)
    monkeypatch.setenv("TRANSFERLAB_RAY_RETRIES", "1")
    variants = runs.grid(params, 0)
    poisoned = variants[1].key
    with pytest.raises(executors.VariantFailed) as err:
        executors.train_on_ray(runs.train_variants_local, params, target, sources, variants,
                               device=torch.device("cpu"), progress=False,
                               on_result=_Poisoned(Store(str(tmp_path / "store")), poisoned))
    message = str(err.value)
    assert f"variant {poisoned}: RuntimeError: poisoned variant {poisoned}" in message
    others = len(variants) - 1
    assert f"the {others} that finished are in the store" in message
    assert len(list((tmp_path / "store" / "variants").glob("*.json"))) == others


def test_ray_chosen_but_missing_or_unreachable_is_a_clear_error(monkeypatch):
    import ray

    if ray.is_initialized():
        ray.shutdown()
    monkeypatch.setenv("TRANSFERLAB_EXECUTOR", "ray")
    with monkeypatch.context() as patched:
        patched.setitem(sys.modules, "ray", None)  # as if the extra were not installed
        with pytest.raises(executors.ExecutorError, match=r"pip install -e '\.\[ray\]'"):
            executors.connect()
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("RAY_ADDRESS", address)
    with pytest.raises(executors.ExecutorError, match=f"RAY_ADDRESS='{address}'"):
        executors.connect()
    monkeypatch.setenv("TRANSFERLAB_EXECUTOR", "dask")
    with pytest.raises(executors.ExecutorError, match="local, ray"):
        executors.connect()


def test_a_local_sweep_imports_no_ray(trained_sources, tmp_path):
    prepared, paths = trained_sources
    code = f"""
import sys
from pathlib import Path
from transferlab.training import sweep as runs
from transferlab.keys import declared
from transferlab.config.params import parse_params
from transferlab.training.store import open_store
from tests.conftest import TINY, deep_update
params = parse_params(deep_update(TINY, {{"sweep": {{"layers": [3], "subsample": [3]}}}}))
runs.run_sweep(params, 0, prepared=Path({str(prepared)!r}),
               model_paths={{"A": Path({str(paths["A"])!r}), "B": Path({str(paths["B"])!r})}},
               out=Path({str(tmp_path / "s.json")!r}), store=open_store(), progress=False,
               declared=declared("sweep@0", params, {str(ROOT / "dvc.yaml")!r}))
assert "ray" not in sys.modules, "a local sweep imported ray"
"""
    env = {k: v for k, v in os.environ.items() if k not in ("TRANSFERLAB_EXECUTOR",
                                                            "RAY_ADDRESS")}
    env["PYTHONPATH"] = os.pathsep.join([SRC, str(ROOT)])
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "s.json").exists()
