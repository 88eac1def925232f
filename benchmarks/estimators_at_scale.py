"""The transferability estimators at the Fashion-MNIST study's largest draw: every estimator
on one layer's features of 1,000 target images per class, and the spectrum they share
(`estimators._spectrum`, from the smaller Gram matrix's eigendecomposition) against an SVD
of the same features, interleaved in this one run.

    python benchmarks/estimators_at_scale.py [--study /tmp/fashion-study] [--layer conv3]
        [--per-class 1000] [--rounds 2] [--threads 2]

`--study`: a repository where the study's features stage ran (`benchmarks/fashion_study.sh`
leaves one); without data/features there, random features of the same shape (5,000 x
9,216, conv3's pooled size) stand in. Prints each estimator's median time (and GBC with
SFDA sharing one span, as the stage runs them), the spectrum's time against the SVD's
(ratio SVD / Gram), and the largest relative difference between their singular values,
among the directions both keep.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


def features(study: Path, layer: str, per_class: int):
    import torch

    from transferlab.features.store import load_split, split_path
    from transferlab.transferability.compute import draw_rows

    path = split_path(study / "data/features", layer, "train")
    if not path.exists():
        gen = torch.Generator().manual_seed(0)
        y = torch.arange(5).repeat_interleave(per_class)
        x = torch.randn(len(y), 9216, generator=gen) + 0.5 * torch.randn(5, 9216,
                                                                          generator=gen)[y]
        return x.relu(), y, "random"
    train = load_split(path)
    rows = draw_rows(train, per_class, 0)
    return torch.as_tensor(train.x[rows]), torch.as_tensor(train.y[rows]), str(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--study", type=Path, default=Path("/tmp/fashion-study"))
    ap.add_argument("--layer", default="conv3")
    ap.add_argument("--per-class", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import torch

    from transferlab.transferability import estimators as est

    torch.set_num_threads(args.threads)
    x, y, where = features(args.study, args.layer, args.per_class)
    print(f"features {tuple(x.shape)} from {where}; {args.threads} torch threads")
    x64 = x.reshape(len(x), -1).double()

    def gbc_and_sfda_sharing_one_span():  # as the stage runs them (compute.layer_scores)
        span = est.span_coordinates(x)
        return est.gbc(x, y, 32, span), est.sfda(x, y, 5.0, span)

    runs = {
        "knn": lambda: est.knn_loo_accuracy(x, y, 3),
        "logme": lambda: est.logme(x, y),
        "hscore": lambda: est.hscore(x, y),
        "transrate": lambda: est.transrate(x, y, 1e-4),
        "gbc": lambda: est.gbc(x, y, 32),
        "sfda": lambda: est.sfda(x, y, 5.0),
        "gbc+sfda shared": gbc_and_sfda_sharing_one_span,
        "spectrum (Gram)": lambda: est._spectrum(x64),
        "spectrum (SVD)": lambda: torch.linalg.svd(x64, full_matrices=False),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    values = {}
    for r in range(args.rounds):
        # the two spectra alternate which goes first, so load from elsewhere falls on both
        order = list(runs)
        if r % 2:
            order[-2:] = order[-1:-3:-1]
        for name in order:
            started = time.perf_counter()
            values[name] = runs[name]()
            times[name].append(time.perf_counter() - started)
    for name in runs:
        value = values[name]
        shown = ("" if name.startswith("spectrum") else
                 f"  scores {value[0]:.6g}, {value[1]:.6g}" if isinstance(value, tuple) else
                 f"  score {value:.6g}")
        print(f"{name:16s} {statistics.median(times[name]):8.2f} s{shown}")
    gram_s = values["spectrum (Gram)"][1]
    svd_s = values["spectrum (SVD)"][1][:len(gram_s)]
    rel = float(((gram_s - svd_s).abs() / svd_s).max())
    total = sum(statistics.median(times[n]) for n in list(runs)[:6])
    staged = total - sum(statistics.median(times[n]) for n in ("gbc", "sfda")) + \
        statistics.median(times["gbc+sfda shared"])
    ratio = statistics.median(times["spectrum (SVD)"]) / statistics.median(
        times["spectrum (Gram)"])
    print(f"all six estimators: {total:.1f} s per draw, {staged:.1f} s as the stage runs "
          "them (GBC and SFDA sharing one span)")
    print(f"spectrum: SVD / Gram time ratio {ratio:.2f}; {len(gram_s)} directions kept of "
          f"{min(x.shape)}; largest relative difference of a kept singular value {rel:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
