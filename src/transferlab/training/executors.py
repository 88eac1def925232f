"""Where a sweep's untrained variants train: in this process, or on a Ray cluster.

Chosen by the machine's environment, never by a param, so results and DVC's
hashes do not depend on it:

  TRANSFERLAB_EXECUTOR   `local` (default) or `ray`
  RAY_ADDRESS            the cluster to join (default `auto`: the one `ray start`
                         runs on this machine); `ray://host:10001` for a remote one
  TRANSFERLAB_RAY_CPUS   CPUs one task declares (default 1; torch in the task gets
                         as many threads)
  TRANSFERLAB_RAY_GPUS   GPUs one task declares (default 0; a fraction such as 0.25
                         packs four small variants on one GPU)
  TRANSFERLAB_RAY_VARIANTS_PER_TASK   variants one task trains in turn (default 1)
  TRANSFERLAB_RAY_RETRIES             times Ray reruns a failed task (default 2)

With Ray, the prepared data, the params and the source networks are put once in
Ray's object store and every task reads them from there; the package's own code
travels to the workers with the job (a runtime_env), so they run what the
variant key was derived from. Each task stores every variant it finishes in the
shared store (transferlab.training.store) at once, so a variant that keeps failing
fails the stage, naming it and the worker's error, while what the other
variants finished is kept. Without `TRANSFERLAB_EXECUTOR=ray`, nothing here
imports ray.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from transferlab.config.spec import ConfigurationError

EXECUTOR_ENV = "TRANSFERLAB_EXECUTOR"
EXECUTORS = ("local", "ray")


class ExecutorError(ConfigurationError):
    """The configured executor cannot be used; stops the stage before any work."""


class VariantFailed(RuntimeError):
    """A variant kept failing on the cluster (after Ray's retries)."""


@dataclass(frozen=True)
class RaySettings:
    cpus: float
    gpus: float
    variants_per_task: int
    retries: int


def executor_name() -> str:
    name = os.environ.get(EXECUTOR_ENV) or "local"
    if name not in EXECUTORS:
        raise ExecutorError(f"{EXECUTOR_ENV}={name!r} is not an executor; expected one of "
                            f"{', '.join(EXECUTORS)}")
    return name


def ray_chosen() -> bool:
    return executor_name() == "ray"


def _number(name: str, default: str, kind, low: float, what: str):
    text = os.environ.get(name) or default
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or value < low:
        raise ExecutorError(f"{name}={text!r} is not allowed; expected {what}")
    return value


def ray_settings() -> RaySettings:
    return RaySettings(
        cpus=_number("TRANSFERLAB_RAY_CPUS", "1", float, 0.01, "a number of CPUs > 0"),
        gpus=_number("TRANSFERLAB_RAY_GPUS", "0", float, 0, "a number of GPUs >= 0, "
                     "fractions (0.25) pack several tasks on one GPU"),
        variants_per_task=_number("TRANSFERLAB_RAY_VARIANTS_PER_TASK", "1", int, 1,
                                  "an integer >= 1"),
        retries=_number("TRANSFERLAB_RAY_RETRIES", "2", int, 0, "an integer >= 0"))


def variant_device(local):
    """The device the variants train on: this process's, or the tasks' on the cluster
    (CUDA when tasks declare GPUs). It is part of each variant's key."""
    if not ray_chosen():
        return local
    import torch

    return torch.device("cuda" if ray_settings().gpus > 0 else "cpu")


def connect():
    """Check the configured executor before any work; with Ray, join the cluster and
    return the ray module. Returns None (and imports nothing) for the local executor."""
    if not ray_chosen():
        return None
    settings = ray_settings()
    try:
        import ray
    except ImportError:
        raise ExecutorError(f"{EXECUTOR_ENV}=ray but Ray is not installed in "
                            "this environment; install the extra: pip install -e '.[ray]'"
                            ) from None
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS") or "auto"
        package = Path(__file__).resolve().parent
        try:
            _check_reachable(address)  # ray.init itself waits minutes on a dead address
            ray.init(address=address, logging_level="warning", log_to_driver=False,
                     runtime_env={"py_modules": [str(package)],
                                  "excludes": ["__pycache__", "*.pyc"]})
        except Exception as err:  # ConnectionError, or Ray's own errors for a bad address
            raise ExecutorError(f"{EXECUTOR_ENV}=ray: cannot reach the Ray cluster at "
                                f"RAY_ADDRESS={address!r} ({type(err).__name__}: {err}); "
                                "start one (`ray start --head`) or set RAY_ADDRESS"
                                ) from None
    if settings.gpus > 0 and not ray.cluster_resources().get("GPU"):
        raise ExecutorError(f"TRANSFERLAB_RAY_GPUS={settings.gpus} but the Ray cluster at "
                            f"{os.environ.get('RAY_ADDRESS') or 'auto'} has no GPU")
    return ray


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Open a TCP connection to a `host:port` or `ray://host:port` address."""
    import socket

    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", "local": Ray resolves them itself
    with socket.create_connection((host, int(port)), timeout=timeout):
        pass


def _cpu_copies(sources: dict) -> dict:
    import copy

    return {name: copy.deepcopy(model).cpu() for name, model in sources.items()}


def _train_task(train_local, params, target, sources, batch, device_type: str,
                on_result) -> dict:
    """One Ray task: train `batch` here with `train_local`, storing each variant as it
    finishes."""
    import torch

    device = torch.device(device_type)
    sources = {name: model.to(device) for name, model in sources.items()}
    results = {}

    def keep(variant, result):
        if on_result is not None:
            on_result(variant, result)
        results[variant.key] = result  # stored, so not the one that failed

    try:
        train_local(params, target, sources, batch, device=device, progress=False,
                    on_result=keep)
    except Exception as err:
        failed = next(v for v in batch if v.key not in results)
        raise VariantFailed(f"variant {failed.key}: {type(err).__name__}: {err}") from err
    return results


def train_on_ray(train_local, params, target, sources: dict, variants: Sequence, *, device,
                 desc: str = "variants", progress: bool = True, on_result=None) -> dict:
    """Train `variants` as Ray tasks; their results by `Variant.key`, as a local run gives.

    Each task calls `train_local` (the sweep's train_variants_local) on its share.
    `on_result(variant, result)` runs in the task as each variant finishes (it must be
    picklable: the sweep's VariantCache.put, writing to the shared store) and again
    here when the task's results arrive, so a store on the driver's machine gets them
    even when the workers cannot reach it.
    """
    from transferlab.progress import progress_bar

    if not variants:
        return {}
    ray = connect()
    settings = ray_settings()
    # Put once: every task reads the same objects from Ray's object store.
    params_ref = ray.put(params)
    target_ref = ray.put(target)
    sources_ref = ray.put(_cpu_copies(sources))
    task = ray.remote(_train_task).options(
        num_cpus=settings.cpus, num_gpus=settings.gpus, max_retries=settings.retries,
        retry_exceptions=True)
    size = settings.variants_per_task
    batches = [list(variants[i:i + size]) for i in range(0, len(variants), size)]
    pending = {task.remote(train_local, params_ref, target_ref, sources_ref, batch, device.type,
                           on_result): batch for batch in batches}
    results, failures = {}, []
    bar = progress_bar(total=len(variants), desc=f"{desc} (ray)", unit="variant",
                       disable=not progress)
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        batch = pending.pop(ref)
        try:
            finished = ray.get(ref)
        except Exception as err:
            failures.append((batch, _worker_error(err)))
            continue
        for variant in batch:
            if on_result is not None:
                on_result(variant, finished[variant.key])
            results[variant.key] = finished[variant.key]
        bar.update(len(batch))
    bar.close()
    if failures:
        lines = [f"  {', '.join(v.key for v in batch)}: {error}" for batch, error in failures]
        raise VariantFailed(f"{sum(len(b) for b, _ in failures)} variant(s) failed on the Ray "
                            f"cluster after {settings.retries} retries (the {len(results)} "
                            "that finished are in the store):\n" + "\n".join(lines))
    return results


def _worker_error(err: Exception) -> str:
    """The worker's own exception, without Ray's wrapping traceback."""
    cause = getattr(err, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    return f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err) else ''}"
