"""The transfer experiment and the sweep grid, over the one `run_variant`."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from transferlab.config.params import Params, check_subsample, check_sweep_subsamples
from transferlab.config.spec import value_at
from transferlab.data.prepared import TaskData
from transferlab.io import file_digest, json_text, parse_json, write_json_atomic
from transferlab.keys import Declared, pretrained_weights
from transferlab.models.treatments import TREATMENTS
from transferlab.progress import progress_bar
from transferlab.timing import compute
from transferlab.training import executors
from transferlab.training.batched import mode_of, problems, train_variants_batched
from transferlab.training.loop import pick_device
from transferlab.training.store import EntryRejected, Store, check_digest, content_digest
from transferlab.training.variant import Variant, load_model, run_variant


def load_sources(params: Params, target: TaskData, model_paths: dict[str, Path], device,
                 used: set[str] | None = None) -> dict[str, torch.nn.Module]:
    """The source networks of `model_paths` (only those in `used`, when given: model B's
    file holds no network when nothing reads it)."""
    return {name: load_model(path, params, target.image_shape, target.num_classes, device)
            for name, path in model_paths.items() if used is None or name in used}


def sources_of(treatments) -> set[str]:
    """The models ("A", "B") the treatments copy layers from."""
    return {TREATMENTS[name].source for name in treatments} - {None}


def run_transfer(params: Params, *, prepared: Path, model_paths: dict[str, Path],
                 out: Path, live_dir: Path | None = None) -> dict:
    """The one experiment the top-level params describe."""
    target = TaskData.load(prepared / "target.npz")
    check_subsample("subsample", params.subsample, target.smallest_train_class())
    device = pick_device()
    variant = Variant(params.treatment, params.freeze, params.subsample, params.seed)
    sources = load_sources(params, target, model_paths, device,
                           sources_of([variant.treatment]))
    live = None
    if live_dir is not None:
        from dvclive import Live

        live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None)
    try:
        with compute():
            result = run_variant(params, target, sources, variant, device=device, live=live,
                                 progress=True)
    finally:
        if live is not None:
            live.end()
    write_json_atomic(out, result)
    print(f"transfer {variant.key}: target test {result['metric']} {result['test_score']:.4f}")
    return result


def grid(params: Params, seed: int) -> list[Variant]:
    """All variants of one seed: base once per size, every other treatment per layer."""
    variants = []
    for k in params.sweep.subsample:
        for name in params.sweep.treatments:
            treatment = TREATMENTS[name]
            if not treatment.copies_layers:
                layers = [0]
            elif treatment.all_layers:  # LP, FT, LP-FT: n = every layer of the network
                layers = [len(params.layer_names)]
            elif treatment.only_deepest:
                layers = [max(params.sweep.layers_of(name))]
            else:
                layers = params.sweep.layers_of(name)
            variants += [Variant(name, n, k, seed) for n in layers]
    return variants


# The grid's own keys choose which variants run (or whether stored ones are reused, or
# a second direction: part of the context already); they do not change a variant's
# result, so they stay out of its key (a grown grid reuses what it already trained).
# sweep.batched picks how variants train; the mode each one then trains in (batched or
# alone) is in its key already (`batched.mode_of`), so a variant that trains alone either
# way keeps its key. Named one by one: any other sweep key (sweep.curves: what a result
# holds) is in the key.
GRID_KEYS = frozenset({"sweep.treatments", "sweep.layers", "sweep.treatment_layers",
                       "sweep.subsample", "sweep.seeds", "sweep.reuse_variants",
                       "sweep.batched", "sweep.swap"})


def variant_context(params: Params, declared: Declared, *, direction: str,
                    target_file: Path, device) -> dict:
    """Everything but the variant itself that decides a variant's result: the params the
    sweep stage declares (less the grid's), the input files' digests, the code the
    training imports, the torch version, the device type and, for arch pretrained, the
    weights' digest (model A's file holds them too; named apart so no key can outlive them).
    The source models' digests enter each variant's key by the source it copies from
    (`source_digests`), so a retrained or unused model B leaves the A variants' keys alone."""
    return {"params": {k: value_at(params, k) for k in declared.params
                       if k not in GRID_KEYS},
            "direction": direction, "target": file_digest(target_file),
            "code": declared.code, "torch": torch.__version__, "device": device.type,
            **pretrained_weights(params)}


class VariantCache:
    """Results of single variants in the shared store, keyed by everything that
    determines them.

    DVC caches a sweep stage as a whole; this lets a stage whose grid grew, and
    any other run of the same variants (another workspace, a queued or `--temp`
    experiment, a Ray worker), reuse what was already trained. An entry is
    `{"result": ..., "sha256": ...}`, the digest taken over the entry's key and the
    result's canonical JSON (transferlab.training.store.content_digest). An entry that
    cannot be read, carries no digest or fails it is a miss with a message naming it,
    never an error or an answer.
    """

    def __init__(self, store: Store | None, context: dict, modes: dict[str, str] | None = None,
                 sources: dict[str, str] | None = None):
        self.store = store
        self.context = json.dumps(context, sort_keys=True)
        self.sources = sources or {}  # digest of each source model file, by name
        # How each variant trains (batched or one at a time, transferlab.training.batched): the
        # two agree within a tolerance, not to the bit, so the mode is part of the key.
        self.modes = modes or {}

    def key(self, variant: Variant) -> str:
        source = TREATMENTS[variant.treatment].source
        blob = json.dumps([self.context, variant.key, self.modes.get(variant.key, "single"),
                           self.sources.get(source) if source else None]).encode()
        return f"variants/{hashlib.sha256(blob).hexdigest()}.json"

    @staticmethod
    def digest(key: str, result: dict) -> str:
        canonical = json.dumps(result, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return content_digest(key, canonical.encode("utf-8"))

    def get(self, variant: Variant) -> dict | None:
        if self.store is None:
            return None
        key = self.key(variant)
        where = self.store.path(key)
        try:
            data = self.store.read(key)
            if data is None:
                return None
            entry = parse_json(data.decode("utf-8"), allow_nan=False)
            if not isinstance(entry, dict) or not isinstance(entry.get("result"), dict):
                raise EntryRejected("carries no digest (written before entries carried one)")
            result = entry["result"]
            check_digest(entry.get("sha256"), self.digest(key, result))
            if result.get("treatment") != variant.treatment:
                raise ValueError(f"not a result of {variant.key}")
        except EntryRejected as err:
            print(f"variant store: entry {where} for {variant.key} {err}; training it again",
                  file=sys.stderr)
            return None
        except (OSError, ValueError) as err:
            print(f"variant store: ignoring unreadable entry {where} for {variant.key} "
                  f"({err}); training it again", file=sys.stderr)
            return None
        return result

    def put(self, variant: Variant, result: dict) -> None:
        if self.store is not None:
            key = self.key(variant)
            entry = {"result": result, "sha256": self.digest(key, result)}
            self.store.write(key, json_text(entry, allow_nan=False).encode("utf-8"))


def train_variants(params: Params, target: TaskData, sources: dict[str, torch.nn.Module],
                   variants: Sequence[Variant], *, device: torch.device, desc: str = "variants",
                   progress: bool = True, on_result=None) -> dict[str, dict]:
    """Train `variants` (none of them stored yet); their results by `Variant.key`.

    The one place where the sweep's untrained variants are trained, so that how
    they are trained (one at a time, batched, elsewhere) changes here only.
    Variants that can train batched (`transferlab.training.batched`) do, in stacked
    groups; the others one at a time, with the reason logged once.
    `on_result(variant, result)` is called as each one (or each batched group)
    finishes, so a killed sweep keeps what it had trained.
    """
    if executors.ray_chosen():  # where it runs is configuration; results do not change
        return executors.train_on_ray(train_variants_local, params, target, sources, variants,
                                      device=device, desc=desc, progress=progress,
                                      on_result=on_result)
    return train_variants_local(params, target, sources, variants, device=device, desc=desc,
                                progress=progress, on_result=on_result)


def train_variants_local(params: Params, target: TaskData,
                         sources: dict[str, torch.nn.Module], variants: Sequence[Variant], *,
                         device: torch.device, desc: str = "variants", progress: bool = True,
                         on_result=None) -> dict[str, dict]:
    """train_variants in this process (what each Ray task runs on its share)."""
    bar = progress_bar(total=len(variants), desc=desc, unit="variant", disable=not progress)

    def finished(variant: Variant, result: dict) -> None:
        if on_result is not None:
            on_result(variant, result)
        bar.update(1)

    try:
        return train_variants_batched(params, target, sources, variants, device=device,
                                      on_result=finished,
                                      log=lambda message: print(f"{desc}: {message}",
                                                                file=sys.stderr))
    finally:
        bar.close()


def run_sweep(params: Params, seed: int, *, prepared: Path, model_paths: dict[str, Path],
              out: Path, declared: Declared, store: Store | None = None,
              progress: bool = True) -> dict:
    """Every (treatment, n, size) of the sweep grid for one seed.

    With `sweep.swap`, the grid runs a second time with the roles exchanged
    (Soekhoe): the target is task A, "A" layers come from model B and the
    selffer "B" layers from model A; the report averages the two directions.
    `declared` is what the sweep stage declares in dvc.yaml (params and code), from
    which each variant's key in the `store` (transferlab.training.store) is derived.
    """
    directions = [("AB", "target.npz", model_paths)]
    if params.sweep.swap:
        directions.append(("BA", "source.npz", {"A": model_paths["B"], "B": model_paths["A"]}))
    device = pick_device()
    results, reused, total = [], 0, 0
    for direction, target_file, paths in directions:
        target = TaskData.load(prepared / target_file)
        check_sweep_subsamples(params, target.smallest_train_class())
        used = sources_of(params.sweep.treatments)
        sources = load_sources(params, target, paths, device, used)
        train_device = executors.variant_device(device)  # the device the variants train on
        context = variant_context(params, declared, direction=direction,
                                  target_file=prepared / target_file, device=train_device)
        variants = grid(params, seed)
        why = problems(params, variants, target.multilabel)
        cache = VariantCache(store if params.sweep.reuse_variants else None, context,
                             {key: mode_of(problem) for key, problem in why.items()},
                             {name: file_digest(paths[name]) for name in sorted(used)})
        if store is not None:
            store.clean_stale("variants")
        total += len(variants)
        stored = {variant.key: cache.get(variant) for variant in variants}
        pending = [variant for variant in variants if stored[variant.key] is None]
        reused += len(variants) - len(pending)
        trained = train_variants(params, target, sources, pending, device=train_device,
                                 desc=f"sweep seed {seed} {direction}", progress=progress,
                                 on_result=cache.put)
        for variant in variants:
            result = stored[variant.key] or trained[variant.key]
            results.append({**result, "direction": direction})
    payload = {"seed": seed, "variants": results}
    write_json_atomic(out, payload)
    print(f"sweep seed {seed}: {total} variants, {total - reused} trained, "
          f"{reused} reused from {store.url if store is not None else 'no store'}")
    return payload
