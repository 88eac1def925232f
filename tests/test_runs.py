import dataclasses
import json

import torch

from transferlab.config.params import parse_params
from transferlab.keys import declared
from transferlab.training import sweep as runs
from transferlab.training.pretrain import pretrain
from transferlab.training.store import Store
from transferlab.training.variant import Variant, run_variant

from .conftest import ROOT, TINY, deep_update

DECLARED = declared("sweep@0", parse_params(TINY), ROOT / "dvc.yaml")


def _prepared(tmp_path, digits_tasks):
    from transferlab.data.prepared import write_prepared

    source, target, meta = digits_tasks
    write_prepared(tmp_path / "prepared", source, target, meta)
    return tmp_path / "prepared"


def _sources(tmp_path, params, prepared):
    paths = {}
    for s in ("A", "B"):
        paths[s] = tmp_path / f"{s}.pt"
        pretrain(params, s, prepared=prepared, model_out=paths[s],
                 metrics_out=tmp_path / f"{s}.json", progress=False)
    return paths


def test_same_params_and_seed_give_identical_metrics(tmp_path, tiny_params, digits_tasks):
    prepared = _prepared(tmp_path, digits_tasks)
    first = _sources(tmp_path / "one", tiny_params, prepared)
    second = _sources(tmp_path / "two", tiny_params, prepared)
    a1 = torch.load(first["A"], weights_only=True)["state_dict"]
    a2 = torch.load(second["A"], weights_only=True)["state_dict"]
    assert all(torch.equal(a1[k], a2[k]) for k in a1)
    # Byte-identical files, so DVC's hashes and run-cache agree between runs.
    assert first["A"].read_bytes() == second["A"].read_bytes()
    assert (json.loads((tmp_path / "one" / "A.json").read_text())
            == json.loads((tmp_path / "two" / "A.json").read_text()))

    out1, out2 = tmp_path / "t1.json", tmp_path / "t2.json"
    runs.run_transfer(tiny_params, prepared=prepared, model_paths=first, out=out1)
    runs.run_transfer(tiny_params, prepared=prepared, model_paths=second, out=out2)
    assert json.loads(out1.read_text()) == json.loads(out2.read_text())


def test_a_different_seed_gives_a_different_run(tiny_params, digits_tasks):
    _, target, _ = digits_tasks
    runs_by_seed = [run_variant(tiny_params, target, {}, Variant("base", 0, 3, s))
                    for s in (0, 1)]
    assert runs_by_seed[0]["test_loss"] != runs_by_seed[1]["test_loss"]


def test_grid_runs_base_once_per_size_and_the_rest_per_layer(tiny_params):
    variants = runs.grid(tiny_params, seed=4)
    keys = {v.key for v in variants}
    # 2 sizes x (base + 4 treatments x 2 layers + AnB-2fc at the deepest layer only)
    assert len(variants) == len(keys) == 2 * (1 + 4 * 2 + 1)
    assert "base/n0/k1/s4" in keys and "AnB+/n3/k3/s4" in keys and "BnB/n1/k1/s4" in keys
    assert "AnB-2fc/n3/k1/s4" in keys and "AnB-2fc/n1/k1/s4" not in keys


def test_the_two_fc_treatment_freezes_copied_layers_and_trains_a_deeper_head(
        tiny_params, digits_tasks):
    import torch

    from transferlab.training.variant import Variant, new_model, run_variant

    _, target, _ = digits_tasks
    source = new_model(tiny_params, target, 0, torch.device("cpu"))
    before = {k: v.clone() for k, v in source.state_dict().items()}
    result = run_variant(tiny_params, target, {"A": source, "B": source},
                         Variant("AnB-2fc", 5, 3, 0), device=torch.device("cpu"))
    assert result["copied_layers"] == ["conv1", "conv2", "conv3", "conv4", "fc5"]
    assert 0 <= result["test_accuracy"] <= 1
    assert all(torch.equal(before[k], v) for k, v in source.state_dict().items())


def test_a_grown_grid_trains_only_its_new_variants(tmp_path, tiny_params, digits_tasks,
                                                   monkeypatch):
    prepared = _prepared(tmp_path, digits_tasks)
    sources = _sources(tmp_path, tiny_params, prepared)
    trained, notes = [], []
    real = runs.train_variants_batched

    def counting(params, target, srcs, variants, **kw):
        trained.extend(v.key for v in variants)
        return real(params, target, srcs, variants, **{**kw, "log": notes.append})

    monkeypatch.setattr(runs, "train_variants_batched", counting)
    cache = Store(str(tmp_path / "store"))
    first = runs.run_sweep(tiny_params, 0, prepared=prepared, model_paths=sources,
                           out=tmp_path / "s.json", store=cache, progress=False,
                   declared=DECLARED)
    n_first = len(trained)
    grown = parse_params(deep_update(TINY, {"sweep": {"layers": [1, 2, 3]}}))
    second = runs.run_sweep(grown, 0, prepared=prepared, model_paths=sources,
                            out=tmp_path / "s2.json", store=cache, progress=False,
                   declared=DECLARED)
    new = trained[n_first:]
    assert sorted(new) == sorted(f"{t}/n2/k{k}/s0" for t in ("AnB", "AnB+", "BnB", "BnB+")
                                 for k in (1, 3))
    assert notes == []  # the new variants trained batched, none one at a time
    old = {r["treatment"] + str(r["n"]) + str(r["subsample"]): r for r in first["variants"]}
    for r in second["variants"]:
        key = r["treatment"] + str(r["n"]) + str(r["subsample"])
        if key in old:
            assert r == old[key]

    # Changed transfer params invalidate every cached variant.
    changed = parse_params(deep_update(TINY, {"transfer": {"steps": 6}}))
    trained.clear()
    runs.run_sweep(changed, 0, prepared=prepared, model_paths=sources,
                   out=tmp_path / "s3.json", store=cache, progress=False,
                   declared=DECLARED)
    assert len(trained) == len(runs.grid(changed, 0))

    # Curves on: no stored curve-less entry is served; every variant trains and holds one.
    curves = parse_params(deep_update(TINY, {"sweep": {"curves": True}}))
    trained.clear()
    with_curves = runs.run_sweep(curves, 0, prepared=prepared, model_paths=sources,
                                 out=tmp_path / "s4.json", store=cache, progress=False,
                                 declared=DECLARED)
    assert len(trained) == len(runs.grid(curves, 0))
    for r in with_curves["variants"]:
        assert r["curve"][-1]["test_score"] == r["test_score"]
        assert r == {**old[r["treatment"] + str(r["n"]) + str(r["subsample"])],
                     "curve": r["curve"]}  # the same training: only the curve is added


def test_the_variant_key_covers_every_declared_param_but_the_grid(tiny_params, tmp_path):
    """The red-team's C5: with data.crop set, data.pad was missing from the key."""
    from transferlab.config.spec import value_at

    prepared = tmp_path / "prepared"
    prepared.mkdir()
    (prepared / "target.npz").write_bytes(b"target")

    def key(raw_changes):
        p = parse_params(deep_update(TINY, raw_changes))
        return json.dumps(runs.variant_context(
            p, DECLARED, direction="AB", target_file=prepared / "target.npz",
            device=torch.device("cpu")), sort_keys=True)

    cropped = {"data": {"crop": 6}}
    assert key(cropped) != key(deep_update(cropped, {"data": {"pad": 2}}))
    assert key(cropped) != key(deep_update(cropped, {"model": {"convnet": {"hidden": 17}}}))
    assert key(cropped) != key(deep_update(cropped, {"transfer": {"momentum": 0.5}}))
    # The grid's keys choose variants, they do not change one; other arches do not matter.
    assert key(cropped) == key(deep_update(cropped, {"sweep": {"layers": [1, 2, 3]}}))
    assert key(cropped) == key(deep_update(cropped, {"model": {"wrn": {"widen": 2}}}))
    kept = {k for k in DECLARED.params if k not in runs.GRID_KEYS}
    assert kept == set(json.loads(key(cropped))["params"])
    # What a result holds is not the grid: curves on gives every variant a new key.
    assert "sweep.curves" in kept
    assert key(cropped) != key(deep_update(cropped, {"sweep": {"curves": True}}))
    # The grid's keys are named one by one: each must be a sweep key that exists.
    fields = {f"sweep.{f.name}" for f in dataclasses.fields(type(tiny_params.sweep))}
    assert runs.GRID_KEYS < fields
    assert value_at(tiny_params, "data.pad") == 0


def test_an_unreadable_store_entry_is_a_miss_that_names_the_file(tmp_path, capsys):
    from transferlab.training.variant import Variant

    store = runs.VariantCache(Store(str(tmp_path)), {"any": "context"})
    variant = Variant("AnB", 3, 5, 0)
    store.put(variant, {"treatment": "AnB", "test_score": 0.5})
    assert store.get(variant)["test_score"] == 0.5
    path = tmp_path / store.key(variant)
    assert path.is_file() and path.parent.name == "variants"
    path.write_text('{"treatment": "AnB", "test_sc')  # a torn write
    assert store.get(variant) is None
    assert str(path) in capsys.readouterr().err


def test_a_stored_entry_without_a_digest_is_a_named_miss(tmp_path, capsys):
    store = runs.VariantCache(Store(str(tmp_path)), {"any": "context"})
    variant = Variant("AnB", 3, 5, 0)
    path = tmp_path / store.key(variant)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"treatment": "AnB", "test_score": 0.5}))  # the old format
    assert store.get(variant) is None
    err = capsys.readouterr().err
    assert str(path) in err and "carries no digest" in err and "training it again" in err


def test_an_entry_copied_under_another_key_fails_its_digest(tmp_path, capsys):
    store = runs.VariantCache(Store(str(tmp_path)), {"any": "context"})
    one, other = Variant("AnB", 3, 5, 0), Variant("AnB", 3, 5, 1)
    store.put(one, {"treatment": "AnB", "test_score": 0.5})
    (tmp_path / store.key(other)).write_bytes((tmp_path / store.key(one)).read_bytes())
    assert store.get(other) is None and "fails its digest" in capsys.readouterr().err
    assert store.get(one)["test_score"] == 0.5


def test_a_planted_variant_score_is_retrained_not_served(tmp_path, digits_tasks, monkeypatch,
                                                         capsys):
    """The red-team's S7: test_score set to 0.999 by hand in a stored variant (AnB, n 3)
    reached the results and the plots, with no warning."""
    params = parse_params(deep_update(TINY, {"sweep": {"treatments": ["base", "AnB"],
                                                       "layers": [3], "subsample": [1]},
                                             "report": {"subsample": 1}}))
    prepared = _prepared(tmp_path, digits_tasks)
    sources = _sources(tmp_path, params, prepared)
    trained = []
    real = runs.train_variants_batched

    def counting(params, target, srcs, variants, **kw):
        trained.extend(v.key for v in variants)
        return real(params, target, srcs, variants, **kw)

    monkeypatch.setattr(runs, "train_variants_batched", counting)
    store = Store(str(tmp_path / "store"))

    def sweep(out):
        payload = runs.run_sweep(params, 0, prepared=prepared, model_paths=sources,
                                 out=tmp_path / out, store=store, progress=False,
                                 declared=DECLARED)
        return {r["treatment"]: r["test_score"] for r in payload["variants"]}

    honest = sweep("s1.json")
    assert sorted(trained) == ["AnB/n3/k1/s0", "base/n0/k1/s0"]

    def result_in(entry):  # an entry holds its result beside its digest (before: alone)
        data = json.loads(entry.read_text())
        return data, data.get("result", data)

    (entry,) = [p for p in (tmp_path / "store" / "variants").glob("*.json")
                if result_in(p)[1]["treatment"] == "AnB"]
    planted, result = result_in(entry)
    result["test_score"] = 0.999  # the edit, any digest kept as it was
    entry.write_text(json.dumps(planted, indent=2))
    trained.clear()
    capsys.readouterr()

    again = sweep("s2.json")
    assert trained == ["AnB/n3/k1/s0"], "the planted variant must be trained again"
    assert again["AnB"] == honest["AnB"] != 0.999
    assert again["base"] == honest["base"]  # the untouched entry is still served
    err = capsys.readouterr().err
    assert f"variant store: entry {entry} for AnB/n3/k1/s0 fails its digest" in err
    assert result_in(entry)[1]["test_score"] == honest["AnB"]


def test_a_sweep_on_a_read_only_store_reuses_its_entries_and_stores_nothing(
        tmp_path, digits_tasks, monkeypatch, capsys):
    from transferlab.training.store import open_store

    from .test_store import _read_only

    small = {"sweep": {"treatments": ["base", "AnB"], "layers": [3], "subsample": [1]},
             "report": {"subsample": 1}}
    params = parse_params(deep_update(TINY, small))
    prepared = _prepared(tmp_path, digits_tasks)
    sources = _sources(tmp_path, params, prepared)
    root = tmp_path / "team-store"
    runs.run_sweep(params, 0, prepared=prepared, model_paths=sources, out=tmp_path / "s1.json",
                   store=open_store(str(root)), progress=False, declared=DECLARED)
    entries = sorted(root.rglob("*"))

    _read_only(monkeypatch, root)
    grown = parse_params(deep_update(TINY, deep_update(small, {"sweep": {"layers": [2, 3]}})))
    capsys.readouterr()
    runs.run_sweep(grown, 0, prepared=prepared, model_paths=sources, out=tmp_path / "s2.json",
                   store=open_store(str(root)), progress=False, declared=DECLARED)
    out = capsys.readouterr()
    assert "sweep seed 0: 3 variants, 1 trained, 2 reused" in out.out
    assert out.err.count("read-only cache") == 1
    assert sorted(root.rglob("*")) == entries
    assert len(json.loads((tmp_path / "s2.json").read_text())["variants"]) == 3
