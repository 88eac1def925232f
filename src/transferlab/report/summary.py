"""The run's numbers from the results files: the sweep aggregated over seeds, the details
(every number, metrics/details.json), the headline (metrics/summary.json) and the first
part of summary.md (pretrained models, transfer run, sweep, heads).

Every score is refused unless finite: a NaN in a results file means the run that wrote it
went wrong, and a report that averaged it in would hide that.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from transferlab.config.params import Params
from transferlab.io import json_text, read_json, write_text_atomic
from transferlab.metrics import AP_DEFINITIONS, mean_std
from transferlab.models.treatments import TREATMENTS
from transferlab.report.tables import fmt, markdown_table

TRANSFER_TREATMENTS = [name for name, t in TREATMENTS.items() if t.copies_layers]
METRIC_LABEL = {"accuracy": "accuracy", "map": "mAP"}
HEADS = ("svm", "logreg", "random_forest")
# Where a result holds its test score: a training run's `test_score`, a head's `score`,
# `test_accuracy` in results written before either existed.
SCORE_KEYS = ("test_score", "score", "test_accuracy")


def read_result(path: Path):
    """A results file; a missing one names the stage that writes it."""
    return read_json(path, hint="run `dvc repro` to produce it")


def score(result: dict) -> float | None:
    """The test score of a result (accuracy, or mAP for a multi-label target); None when
    it holds none."""
    return next((result[key] for key in SCORE_KEYS if key in result), None)


class NonFiniteScore(ValueError):
    """A results file holds NaN or an infinity where the report needs a score."""


def finite(value, path: Path, what: str):
    """`value` if it is a finite number (or None: not measured); else refuse, naming
    the results file and the entry in it."""
    if isinstance(value, float) and not math.isfinite(value):
        raise NonFiniteScore(f"{path}: {what} is {value!r}, not a finite number; "
                             "the run that wrote it went wrong, rerun it")
    return value


def metric_label(summary: dict) -> str:
    """"accuracy", or "mAP (voc12)": an mAP always names its AP definition (heads.ap)."""
    label = METRIC_LABEL[summary["metric"]]
    definition = summary.get("ap_definition")
    return f"{label} ({definition})" if summary["metric"] == "map" and definition else label


def size_title(k: int) -> str:
    return {0: "all target images", 1: "1 target image per class"}.get(
        k, f"{k} target images per class")


def _variant_label(v: dict) -> str:
    direction = f" direction {v['direction']}" if "direction" in v else ""
    return (f"variant {v.get('treatment')} n={v.get('n')} subsample={v.get('subsample')} "
            f"seed={v.get('seed')}{direction}")


def sweep_variants(params: Params, results: Path) -> list[dict]:
    """Every variant result of the seeds in params, each with a finite test score."""
    variants = []
    for seed in params.sweep.seeds:
        path = results / "sweep" / f"seed-{seed}.json"
        for v in read_result(path)["variants"]:
            if finite(score(v), path, f"the test score of {_variant_label(v)}") is None:
                raise ValueError(f"{path}: {_variant_label(v)} holds no test score "
                                 f"(none of {', '.join(SCORE_KEYS)})")
            variants.append(v)
    return variants


def aggregate_sweep(variants: list[dict]) -> dict:
    """{subsample: {treatment: {n: {mean, std, seeds}}}}; base sits at n = 0.

    With both directions of a swapped study (Soekhoe's), each seed's two directions are
    averaged first; the spread is over seeds.
    """
    per_seed: dict[tuple, list[float]] = defaultdict(list)
    for v in variants:
        per_seed[(v["subsample"], v["treatment"], v["n"], v["seed"])].append(score(v))
    groups: dict[tuple, list[float]] = defaultdict(list)
    for (k, treatment, n, _seed), values in sorted(per_seed.items()):
        groups[(k, treatment, n)].append(sum(values) / len(values))
    table: dict = defaultdict(lambda: defaultdict(dict))
    for (k, treatment, n), accs in sorted(groups.items()):
        table[k][treatment][n] = mean_std(accs)
    return table


def transfer_layers(sweep: dict) -> list[int]:
    """Every n that some transfer treatment was run at, over all sizes."""
    return sorted({n for per_t in sweep.values() for t, by_n in per_t.items() if t != "base"
                   for n in by_n})


def sweep_mean(sweep: dict, k: int, treatment: str, n: int) -> float | None:
    """The mean over seeds of `treatment` at size k and n (base: at n = 0); None if not run."""
    stats = sweep.get(k, {}).get(treatment, {}).get(0 if treatment == "base" else n)
    return None if stats is None else stats["mean"]


def iteration_scores(result: dict) -> list[float] | None:
    """Each iteration's test score (accuracy, or mAP for a multi-label target) of a
    feedback network's result (Spero's); None for a network with one prediction."""
    return result.get("test_iteration_accuracy") or result.get("test_iteration_map")


def _pretrain_entry(r: dict) -> dict:
    metric = r.get("metric", "accuracy")
    entry = {f"test_{metric}": score(r)}
    if "pretrained" in r:  # arch pretrained's model A: loaded, not trained, no score
        entry["pretrained"] = r["pretrained"]
    elif r.get("trained") is False:  # a model no stage reads (pretrain.write_unused_model)
        entry["not_trained"] = r.get("note", "not trained")
    if iteration_scores(r):
        entry[f"iteration_{'map' if 'test_iteration_map' in r else 'accuracy'}"] = \
            iteration_scores(r)
    return entry


def sweep_iterations(variants: list[dict], model_b: list[float] | None = None) -> dict:
    """Spero's Fig. 2: per iteration, each treatment's mean target score over seeds, its
    gain over the sweep's base and its gain over model B at the same iteration.

    Model B (`model_b`: its test score per iteration, stage pretrain) is the network
    trained on the target alone for pretrain's epochs: Spero's "VOC only" network of
    Table 1, which Fig. 2's gains are measured against. The sweep's base is trained from
    scratch on the transfer's budget (5 epochs in the Spero presets), a weaker baseline.

    {f"k{size}": {treatment: {f"n{n}": {"score": [...], "gain_over_base": [...],
    "gain_over_model_B": [...]}}}}; base sits at "n0" with no gain over itself. A gain
    over model B is there only when model B predicts after as many iterations. Empty when
    the variants have a single prediction."""
    per: dict[tuple, list[list[float]]] = defaultdict(list)
    for v in variants:
        scores = iteration_scores(v)
        if scores:
            per[(v["subsample"], v["treatment"], v["n"])].append(scores)
    means = {key: [sum(col) / len(col) for col in zip(*runs, strict=True)]
             for key, runs in per.items()}
    out: dict = defaultdict(lambda: defaultdict(dict))
    for (k, treatment, n), scores in sorted(means.items()):
        base = means.get((k, "base", 0))
        entry = {"score": [round(x, 6) for x in scores]}
        if treatment != "base" and base is not None:
            entry["gain_over_base"] = [round(x - b, 6) for x, b in zip(scores, base,
                                                                        strict=True)]
        if model_b is not None and len(model_b) == len(scores):
            entry["gain_over_model_B"] = [round(x - b, 6) for x, b in zip(scores, model_b,
                                                                           strict=True)]
        out[f"k{k}"][treatment][f"n{n}"] = entry
    return {k: dict(v) for k, v in out.items()}


def _lowshot(path: Path) -> dict | None:
    low = read_result(path)
    for layer, per in (low.get("layers") or {}).items():
        for head, by_k in per.items():
            for k, v in by_k.items():
                for key in ("mean", "std"):
                    finite(v[key], path, f"the {key} of head {head} on layer {layer} at k={k}")
    if not low.get("layers"):
        return None
    return {"shots": low["shots"], "draws": low["draws"],
            "layers": {layer: {h: {k: {"mean": v["mean"], "std": v["std"]}
                                   for k, v in by_k.items()} for h, by_k in per.items()}
                       for layer, per in low["layers"].items()}}


def _iteration_heads(path: Path) -> dict | None:
    """Spero's Fig. 4: logistic regression trained on each iteration, tested on each."""
    iters = read_result(path)
    for row, accs in zip(iters.get("rows", []), iters.get("accuracy", []), strict=False):
        for column, acc in zip(iters.get("columns", []), accs, strict=False):
            finite(acc, path, f"the accuracy trained on {row}, tested on {column}")
    if "accuracy" not in iters:
        return None
    return {k: iters[k] for k in ("rows", "columns", "accuracy")}


def _binary_aux(path: Path) -> dict | None:
    """Borthakur & Einhorn's binary auxiliary heads, paired by seed against plain runs."""
    aux = read_result(path)
    if not aux.get("enabled"):
        return None
    for key in ("mean_difference", "sd_difference"):
        finite(aux[key], path, key)
    for r in aux["pairs"]:
        for arm in ("plain", "binary"):
            finite(r[arm]["target_score"], path, f"the {arm} target score of seed {r['seed']}")
    out = {k: aux[k] for k in ("treatment", "n", "subsample", "heads", "weight",
                               "mean_difference", "sd_difference", "binary_better", "seeds")}
    out["pairs"] = [{"seed": r["seed"], "plain": r["plain"]["target_score"],
                     "binary": r["binary"]["target_score"]} for r in aux["pairs"]]
    for arm in ("plain", "binary"):  # their Table 1 prints each arm's mean
        out[arm] = mean_std([r[arm]["target_score"] for r in aux["pairs"]])
    return out


def build_summary(params: Params, results: Path, variants: list[dict]) -> tuple[dict, dict]:
    """(details, sweep aggregated over seeds) from the results files and the sweep's
    `variants` (`sweep_variants`)."""
    sweep = aggregate_sweep(variants)
    transfer = read_result(results / "transfer.json")
    finite(score(transfer), results / "transfer.json", "the test score")
    heads = read_result(results / "heads.json")
    for layer, per in heads.items():
        for head, r in per.items():
            finite(score(r), results / "heads.json", f"the score of head {head} on layer {layer}")
    metric = transfer.get("metric", "accuracy")
    pretrain = {s: read_result(results / "pretrain" / f"{s}.json") for s in ("A", "B")}
    for s, r in pretrain.items():
        path = results / "pretrain" / f"{s}.json"
        finite(score(r), path, f"the test score of model {s}")
        for i, value in enumerate(iteration_scores(r) or []):
            finite(value, path, f"the test score of model {s} at iteration {i + 1}")
    summary = {
        "metric": metric,
        **({"ap_definition": transfer.get("test_ap_definition")} if metric == "map" else {}),
        "pretrain": {s: _pretrain_entry(r) for s, r in pretrain.items()},
        "transfer": {f"test_{metric}": score(transfer), "freeze": transfer["n"],
                     "subsample": transfer["subsample"], "seed": transfer["seed"]},
        "sweep": {
            f"k{k}": {t: (by_n[0] if t == "base" else {f"n{n}": s for n, s in by_n.items()})
                      for t, by_n in per_t.items()}
            for k, per_t in sweep.items()
        },
        "heads": {layer: {h: score(r) for h, r in per.items()} for layer, per in heads.items()},
        # the feature dims each layer's heads saw (after features.max_dim pooling); None for
        # results written before the heads recorded it
        "heads_dims": {layer: next((r.get("dim") for r in per.values()), None)
                       for layer, per in heads.items()},
    }
    iterations = sweep_iterations(variants, iteration_scores(pretrain["B"]))
    if iterations:
        summary["sweep_iterations"] = iterations
    for key, value in (("lowshot", _lowshot(results / "heads_lowshot.json")),
                       ("iteration_heads", _iteration_heads(results / "heads_iterations.json")),
                       ("binary_aux", _binary_aux(results / "binary_aux.json"))):
        if value is not None:
            summary[key] = value
    return summary, sweep


def headline(params: Params, summary: dict, sweep: dict) -> dict:
    """The few numbers `dvc exp show` and `dvc metrics diff` show by default.

    Everything else (every size, treatment and n, every head, low-shot, diagnostics)
    is in the details file (`metrics/details.json`).
    """
    metric = summary["metric"]
    k, n = params.report.subsample, params.report.layer
    at = {"subsample": k, "n": n}
    for t in ("base", "AnB", "AnB+", "BnB", "BnB+"):
        at[t] = sweep_mean(sweep, k, t, n)
    best = max(((h, layer, s) for layer, per in summary["heads"].items()
                for h, s in per.items() if s is not None), key=lambda x: x[2], default=None)
    head = {} if best is None else {"head": best[0], "layer": best[1], "score": best[2]}
    compared = [r["agree"] for r in summary.get("diagnostics_vs_sweep", {}).values()
                if r["agree"] is not None]
    out = {
        "metric": metric,
        **({"ap_definition": summary["ap_definition"]} if "ap_definition" in summary else {}),
        "pretrain": {s: {key: value for key, value in v.items() if key.startswith("test_")}
                     for s, v in summary["pretrain"].items()},
        "transfer": summary["transfer"],
        "sweep_at_report": at,
        "best_head": head,
        "diagnostics": {"agree": sum(compared), "compared": len(compared)},
    }
    if "binary_aux" in summary:
        out["binary_aux"] = {key: summary["binary_aux"][key]
                             for key in ("mean_difference", "binary_better", "seeds")}
    return out


def write_json(path: Path, data) -> None:
    """Sorted, indented JSON; NaN or an infinity is an error, never a bare `NaN`."""
    write_text_atomic(path, json_text(data, allow_nan=False))


# ------------------------------------------------------------------------ summary.md


def summary_markdown(summary: dict, sweep: dict, params: Params) -> str:
    """summary.md's first part: pretrained models, the transfer run, the sweep per target
    size, the binary auxiliary heads, the heads per layer, low-shot and per iteration."""
    metric = summary["metric"]
    label = metric_label(summary)
    lines = []
    if summary.get("ap_definition"):
        lines += [f"mAP here is the mean over labels of the {summary['ap_definition']} AP: "
                  f"{AP_DEFINITIONS[summary['ap_definition']]} (params heads.ap).", ""]
    lines.append(markdown_table(["pretrained model", f"test {label}"],
                                [[s, next(iter(v.values()))]
                                 for s, v in summary["pretrain"].items()]))
    for s, v in summary["pretrain"].items():
        if "pretrained" in v:
            p = v["pretrained"]
            digest = f"sha256 {p['sha256']}" if p.get("sha256") else p.get("origin")
            lines += ["", f"Model {s} is {p['name']} as loaded from "
                      f"{p['weights'] or 'the library cache'} ({digest}), not trained here: "
                      f"its head is new, so it has no score on the source classes. Its "
                      f"layers: {', '.join(p['layers'])}."]
        elif "not_trained" in v:
            lines += ["", f"Model {s}: {v['not_trained']}."]
    t = summary["transfer"]
    lines += ["", f"Transfer experiment ({params.treatment}, n = {t['freeze']}, "
              f"{t['subsample']} images per class, seed {t['seed']}): "
              f"test {label} {fmt(t[f'test_{metric}'])}", ""]
    columns = [0, *transfer_layers(sweep)]
    for k in sorted(sweep):
        lines += [f"Sweep, {size_title(k)} (test {label}, mean ± sd over seeds):", "",
                  markdown_table(["treatment", *(f"n={n}" for n in columns)],
                                 [[tr, *(sweep[k][tr].get(n) for n in columns)]
                                  for tr in sorted(sweep[k], key=list(TREATMENTS).index)],
                                 missing=""), ""]
    if "binary_aux" in summary:
        lines += binary_aux_markdown(summary["binary_aux"])
    lines += ["Heads on model A's features:", "",
              markdown_table(["layer", "dim", *HEADS],
                             [[lay, _dim(summary, lay), *(a.get(h) for h in HEADS)]
                              for lay, a in summary["heads"].items()], missing="")]
    lines += _lowshot_markdown(summary) + _iterations_markdown(summary)
    lines += _sweep_iterations_markdown(summary)
    return "\n".join(lines) + "\n"


def binary_aux_markdown(aux: dict) -> list[str]:
    return [f"Binary auxiliary heads (Borthakur & Einhorn): {aux['heads']} head(s), weight "
            f"{aux['weight']}, {aux['treatment']} at n = {aux['n']}, {aux['subsample']} "
            "target images per class, paired by seed:", "",
            markdown_table(["seed", "plain A", "binary A", "difference"],
                           [[r["seed"], r["plain"], r["binary"],
                             fmt(r["binary"] - r["plain"], "+.3f")] for r in aux["pairs"]]),
            "", f"Mean difference {fmt(aux['mean_difference'], '+.3f')} ± "
            f"{fmt(aux['sd_difference'])} (sd over seeds); binary better in "
            f"{aux['binary_better']} of {aux['seeds']}.", ""]


def _dim(summary: dict, layer: str) -> int | None:
    """The feature dims the heads saw on `layer` (features.max_dim), when recorded."""
    return (summary.get("heads_dims") or {}).get(layer)


def _lowshot_markdown(summary: dict) -> list[str]:
    low = summary.get("lowshot")
    if not low:
        return []
    shots = low["shots"]
    return ["", f"Low-shot heads (test {metric_label(summary)}, mean ± sd over "
            f"{low['draws']} draws of k images per class):", "",
            markdown_table(["layer", "dim", "head", *(f"k={k}" for k in shots)],
                           [[layer, _dim(summary, layer), head, *(by_k[str(k)] for k in shots)]
                            for layer, per_head in low["layers"].items()
                            for head, by_k in per_head.items()])]


def _iterations_markdown(summary: dict) -> list[str]:
    table = summary.get("iteration_heads")
    if not table:
        return []
    return ["", "Logistic regression per iteration (rows: trained on; columns: tested on; "
            "Spero Fig. 4):", "",
            markdown_table(["trained on", *table["columns"]],
                           [[row, *accs] for row, accs in zip(table["rows"], table["accuracy"],
                                                               strict=True)])]


def _sweep_iterations_markdown(summary: dict) -> list[str]:
    table = summary.get("sweep_iterations")
    if not table:
        return []
    label = metric_label(summary)
    count = max(len(e["score"]) for per_t in table.values() for by_n in per_t.values()
                for e in by_n.values())
    b = summary["pretrain"]["B"]
    model_b = b.get("iteration_map") or b.get("iteration_accuracy")
    rows = [["", "model B", "", "score", *model_b]] if model_b and len(model_b) == count else []
    for k, per_t in table.items():
        for t, by_n in per_t.items():
            for n, e in by_n.items():
                rows.append([k[1:], t, n[1:], "score", *e["score"]])
                for key, what in (("gain_over_base", "minus base"),
                                  ("gain_over_model_B", "minus model B")):
                    if key in e:
                        rows.append([k[1:], t, n[1:], what, *(fmt(g, "+.3f") for g in e[key])])
    return ["", f"Sweep per iteration (target test {label}, mean over seeds; Spero Fig. 2). "
            "Model B is the network trained on the target alone (stage pretrain, all its "
            "training images, pretrain's epochs): Spero's gains are over it. base is the "
            "sweep's from-scratch run on the transfer budget.", "",
            markdown_table(["size", "treatment", "n", "", *(f"iter{i}"
                                                             for i in range(1, count + 1))],
                           rows, missing="")]
