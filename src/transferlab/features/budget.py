"""How big the stored features get, and how much memory the stages that read them need.

- `pooled_hw`: a conv map C x H x W with more than `features.max_dim` dims is average-pooled
  at extraction (adaptive average pooling, as DeCAF and VISSL / Goyal et al. 2019 pool
  conv layers for linear heads) to C x s x s, the largest s with C s s <= max_dim (s never
  above H or W). A flat layer (fc) or a map whose C alone exceeds max_dim keeps what the
  pooling can give (C x 1 x 1 at the least); the memory check then decides.
- `stage_peaks`: each stage's peak memory from the shapes alone (rows x dims x bytes per
  element x the copies the stage makes); `check_budget` refuses a layer above
  `features.memory_gb` (or the machine's physical memory) before any work, naming the keys.
- `transferlab.features.dryrun` gives both for a preset without data (the shapes come
  from the model run on one zero image): `python -m transferlab.features.dryrun PRESET ...`.

The standard library only: the heads and transferability stages import it.
"""

from __future__ import annotations

import math
import os

from transferlab.config.spec import ParamsError

GIB = 2 ** 30
F32, F64 = 4, 8

# Bytes per element of the (rows x dims) matrices each stage holds at its peak, per layer:
# - features: every layer's float32 rows at once (one preallocated array per layer and
#   split; the network runs once for all layers), plus one batch of unpooled activations.
FEATURES_BYTES = F32
# - heads: every training row of the layer loaded as float32 (4); of the rows a head fits
#   (`subsample` images per class, or all), the drawn copy (4, when drawn), their L2 /
#   power transform (4), and for a linear head the float64 copy scikit-learn's liblinear
#   (LinearSVC) and lbfgs (LogisticRegression) make of what they fit (8) plus the float64
#   copy of a cross-validation fold (8); test rows: loaded, transformed and float64 for
#   decision_function. The forest fits the float32 rows as they are.
HEADS_FIT_LINEAR = F32 + F64 + F64
# Each further CV worker process (heads.cv_workers) holds its own float64 fold and
# scikit-learn's float64 copy of it.
HEADS_WORKER_FOLD = F64 + F64
HEADS_TEST_LINEAR = F32 + F32 + F64
# - transferability: the layer's whole training part loaded (4 per element of all rows);
#   on each (k, seed) draw of n rows, the float32 draw (4), the estimators' float64 copy (8),
#   its centred copy (8), an SVD factor (8) and the linear probe's float64 copy and
#   transform (8 + 8); plus three min(n, D)^2 float64 Gram matrices.
TRANSFER_DRAW = F32 + 5 * F64
GRAMS = 3

KEYS = ("features.max_dim", "features.layers", "features.memory_gb")


def pooled_hw(shape: tuple[int, ...], max_dim: int) -> tuple[int, int] | None:
    """(s_h, s_w) a C x H x W map is pooled to so C s_h s_w <= max_dim, or None when the map
    has at most max_dim dims (or is not a map: it stays as it is)."""
    if len(shape) != 3 or math.prod(shape) <= max_dim:
        return None
    c, h, w = shape
    s = max(1, math.isqrt(max_dim // c)) if c <= max_dim else 1
    return min(s, h), min(s, w)


def stored_shape(shape: tuple[int, ...], max_dim: int, pool: str) -> tuple[int, ...]:
    """The shape of one stored row before flattening (pool "avg": the channel means)."""
    if pool == "avg" and len(shape) > 1:
        return shape[:1]
    hw = pooled_hw(shape, max_dim)
    return tuple(shape) if hw is None else (shape[0], *hw)


def machine_memory() -> int | None:
    """Physical memory in bytes where the OS says (os.sysconf: Linux, macOS), else None."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError, TypeError):
        return None


def budget_bytes(memory_gb: float | None) -> tuple[int | None, str]:
    """(bytes, where from): features.memory_gb, else the machine's memory, else (None, ...)."""
    if memory_gb is not None:
        return int(memory_gb * GIB), "features.memory_gb"
    found = machine_memory()
    if found is None:
        return None, "the machine's memory is unknown here: no check (set features.memory_gb)"
    return found, "the machine's physical memory (features.memory_gb is null)"


def features_peak(dims: dict[str, int], raw_dims: dict[str, int], rows: int,
                  batch_size: int) -> int:
    """All layers' stored rows at once, plus one batch of unpooled activations (x 2: the
    pooled copy is made from it)."""
    return (rows * sum(dims.values()) * FEATURES_BYTES
            + 2 * min(batch_size, rows) * sum(raw_dims.values()) * F32)


def heads_peak(dim: int, train_rows: int, test_rows: int, heads,
               fit_rows: int | None = None, workers: int = 1) -> int:
    """`fit_rows`: the training rows the heads fit (None or >= train_rows: all of them);
    `workers`: the processes the CV fits run in (`heads.fit.cv_workers`)."""
    linear = any(h in ("svm", "logreg") for h in heads)
    drawn = fit_rows is not None and fit_rows < train_rows
    fit = min(fit_rows, train_rows) if drawn else train_rows
    per_fit = (F32 if drawn else 0) + (
        HEADS_FIT_LINEAR + (workers - 1) * HEADS_WORKER_FOLD if linear else 0)
    per_test = HEADS_TEST_LINEAR if linear else F32
    return dim * (train_rows * F32 + fit * per_fit + test_rows * per_test)


def transferability_peak(dim: int, train_rows: int, draw_rows: int) -> int:
    small = min(draw_rows, dim)
    return (dim * (train_rows * F32 + draw_rows * TRANSFER_DRAW)
            + GRAMS * small * small * F64)


def check_budget(stage: str, needs: dict[str, int], memory_gb: float | None) -> None:
    """Refuse (before any work) the layers of `needs` ({layer: bytes}) above the budget."""
    budget, source = budget_bytes(memory_gb)
    if budget is None:
        return
    over = {layer: b for layer, b in needs.items() if b > budget}
    if over:
        listed = ", ".join(f"{layer} {b / GIB:.1f} GiB" for layer, b in over.items())
        raise ParamsError(
            f"{stage}: estimated peak memory above the budget of {budget / GIB:.1f} GiB "
            f"({source}): {listed}. Lower features.max_dim (the conv maps are average-"
            "pooled to it at extraction), drop the layer from features.layers, or raise "
            "features.memory_gb; `python -m transferlab.features.dryrun` estimates without "
            "running")


def stage_peaks(dims: dict[str, int], raw_dims: dict[str, int], *, train_rows: int,
                test_rows: int, draw_rows: int, heads, batch_size: int,
                heads_rows: int | None = None, heads_workers: int = 1) -> dict:
    """{stage: {layer: bytes}} (features: {"all layers": bytes}); `heads_rows`: the rows
    the heads fit (`subsample` images per class; None = all); `heads_workers`: their CV
    worker processes."""
    return {
        "features": {"all layers": features_peak(dims, raw_dims, train_rows + test_rows,
                                                 batch_size)},
        "heads": {la: heads_peak(d, train_rows, test_rows, heads, heads_rows, heads_workers)
                  for la, d in dims.items()},
        "transferability": {la: transferability_peak(d, train_rows, draw_rows)
                            for la, d in dims.items()},
    }
