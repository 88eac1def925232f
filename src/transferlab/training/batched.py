"""Many sweep variants of one architecture trained as one computation.

How: each variant is set up exactly as `experiment.run_variant` sets it up
(`experiment.setup_variant`: the same seeded initialisation, copied layers
and `TransferPlan`). The leading layers no param group trains are run once
over the variant's images (its frozen prefix); the weights of the layers
above are stacked along a new leading axis, one row per variant, and every
step runs the group's suffix once as ordinary tensor operations
(`_StackedNet`): a convolution is one grouped convolution over activations
laid out (batch, variants x channels, H, W), a linear layer one batched
matrix product over (variants, batch, features). Each variant sees its own
batch of its own data (its own subsample and batch order). The loss is the
sum of the variants' mean cross-entropies, so one backward pass gives each
variant exactly its own gradient. The optimiser is written out here over the
stacked tensors with `torch._foreach_*` operations, as torch's foreach Adam
and SGD (which `train.make_optimizer` builds) run on CPU, but with a learning
rate per variant and per parameter taken from that variant's `TransferPlan`:
the rate of its param group, or 0 for a parameter in no group, which leaves
it bit-for-bit unchanged. Step-wise rate decay (`milestones`) is applied as
`MultiStepLR` does.

Why not `torch.func.vmap`: stacking the variants with
`vmap(grad(functional_call))` was measured no faster on CPU than one variant at
a time (its convolution backward under vmap cost 2.7 times the separate ones,
and per-variant work grew with the group). With the
grouped kernels, every variant of the default grid (seed 0) ended with the
same test accuracy as its lone run.

What batches (`batch_problem` says why not, in words): a variant whose whole
recipe is in the explicit supported set below. The `transfer` section must
hold only the fields listed in `TRANSFER_FIELDS`, the optimiser must be one
of `BATCHED_OPTIMIZERS`, there is no training-time augmentation, the treatment is
one of `BATCHED_TREATMENTS` with no field beyond `TREATMENT_FIELDS`, the plan's
param groups carry nothing but `params`, `lr` and labels (`GROUP_KEYS`),
the model is a plain `TransferableNet` built only from the stateless module types in `MODULES`
(no batch norm, no dropout, no feedback iterations), with no buffers, and
the target is single-label. Anything else, a new option or treatment
included, trains one at a time through `run_variant`, and the sweep's log
says so once per reason.

What changes: the forward and backward passes of a stacked group may sum in a
different order than a lone run's, so batched results are not guaranteed to
be byte-identical to `run_variant`'s; the optimiser and the data are the
same. The sweep's default is batched (`sweep.batched: true`; false trains every variant
alone: at 28x28 with 1,000 images per class the stacked groups were no faster on a
2-core CPU and peaked at 7 GiB, `benchmarks/README.md`); `tests/test_batched.py` holds every
variant's test accuracy within `ACCURACY_TOLERANCE` (and its losses close)
of the one-at-a-time run, and the batched mode itself is deterministic on
CPU. A variant's result must not depend on which others share its group, so
a batchable variant always trains batched (alone, a group of one), and the
mode (`mode_of`) is part of its key in the variant store.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Sequence

import torch
from torch import nn

from transferlab.config.params import OPTIMIZERS, Params
from transferlab.models.base import TransferableNet
from transferlab.models.treatments import TREATMENTS
from transferlab.training.loop import evaluate
from transferlab.training.variant import (
    Variant,
    curve_every,
    setup_variant,
    train_transform,
    variant_result,
)

# The largest difference in test accuracy between a variant trained batched and
# the same variant trained alone that the tests accept (on the digits target,
# 270 test images: 1/270 = 0.0037 per image).
ACCURACY_TOLERANCE = 0.02

# The recipe the batched trainer reproduces; anything not listed falls back.
TRANSFER_FIELDS = frozenset({"batch_size", "optimizer", "lr", "momentum", "weight_decay",
                             "milestones", "lr_decay", "gamma", "steps", "lr_mult",
                             "layer_lr_mult", "frozen_dropout", "epochs",
                             "copied_milestones", "compile", "layer_decay", "l2sp", "lp_ft"})
# ... of which this batches only at its neutral value (None): a second schedule for copied
# layers is not reproduced by the batched trainer. An epoch budget (transfer.epochs) is:
# a group's members train on data of one size (the group key), so they share one budget.
TRANSFER_ONLY_UNSET = ("copied_milestones",)
# transfer.layer_decay, like layer_lr_mult, only sets each copied layer's rate (a group per
# layer) and batches. transfer.l2sp adds a term to the loss that the stacked step does not
# compute: a variant it applies to (a fine-tuning treatment, alpha or beta > 0) trains
# alone. transfer.lp_ft is read by treatment LP-FT only, which is not batched.
# Per-layer rates (transfer.layer_lr_mult) arrive as groups with their own lr; "copied"
# and "layer" only label groups for schedules, which batch when copied_milestones is unset.
GROUP_KEYS = frozenset({"params", "lr", "copied", "layer"})
BATCHED_OPTIMIZERS = frozenset(OPTIMIZERS)  # every optimizer the recipe allows
# LP and FT are AnB and AnB+ at n = every layer: the same plans. LP-FT's two phases
# (head_first) are not reproduced by the stacked step.
BATCHED_TREATMENTS = frozenset({"base", "AnB", "AnB+", "BnB", "BnB+", "AnB-2fc", "LP", "FT"})
TREATMENT_FIELDS = frozenset({"name", "source", "finetune", "new_fc", "only_deepest",
                              "copies_all", "all_layers", "head_first"})
# ... of which these batch only at their neutral value (False): AnB-ft and LP-FT
TREATMENT_ONLY_UNSET = ("copies_all", "head_first")
MODULES = frozenset({TransferableNet, nn.ModuleDict, nn.Sequential, nn.Conv2d, nn.Linear,
                     nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Identity})

BATCHED, SINGLE = "batched", "single"


def recipe_problem(params: Params, variant: Variant) -> str | None:
    """Why the params or the treatment keep `variant` from batching, or None."""
    cfg = params.transfer
    unknown = sorted({f.name for f in dataclasses.fields(cfg)} - TRANSFER_FIELDS)
    if unknown:
        return f"transfer option(s) {', '.join(unknown)} not supported batched"
    unsupported = [name for name in TRANSFER_ONLY_UNSET if getattr(cfg, name) is not None]
    if unsupported:
        return f"transfer option(s) {', '.join(unsupported)} set: not supported batched"
    if cfg.optimizer not in BATCHED_OPTIMIZERS:
        return f"optimizer {cfg.optimizer!r} not supported batched"
    if cfg.compile:  # the stacked kernel is not compiled: a compiled run trains alone
        return "transfer.compile: true: compiled runs train one at a time"
    if train_transform(params) is not None:
        return "training-time augmentation (data.crop/data.flip) not supported batched"
    if variant.treatment not in BATCHED_TREATMENTS:
        return f"treatment {variant.treatment!r} not supported batched"
    treatment = TREATMENTS[variant.treatment]
    extra = sorted({f.name for f in dataclasses.fields(treatment)} - TREATMENT_FIELDS)
    extra += [name for name in TREATMENT_ONLY_UNSET if getattr(treatment, name)]
    if extra:
        return f"treatment field(s) {', '.join(extra)} not supported batched"
    if treatment.finetune and (cfg.l2sp.alpha or cfg.l2sp.beta):
        return "transfer.l2sp (L2-SP's loss term) not supported batched"
    return None


def model_problem(model: nn.Module, plan, multilabel: bool) -> str | None:
    """Why a set-up model keeps its variant from batching, or None."""
    if multilabel:
        return "multi-label targets not supported batched"
    kinds = sorted({type(m).__name__ for m in model.modules() if type(m) not in MODULES})
    if kinds:
        return f"modules {', '.join(kinds)} not supported batched"
    if any(True for _ in model.buffers()):
        return "models with buffers not supported batched"
    if any(set(group) - GROUP_KEYS for group in plan.param_groups):
        return "param-group options beyond lr not supported batched"
    return None


def problems(params: Params, variants: Sequence[Variant], multilabel: bool
             ) -> dict[str, str | None]:
    """Per variant key: why it trains one at a time, or None when it trains batched."""
    if not params.sweep.batched:
        return dict.fromkeys((v.key for v in variants), "sweep.batched: false")
    shared = architecture_problem(params) if variants else None
    if multilabel:
        shared = shared or "multi-label targets not supported batched"
    return {v.key: recipe_problem(params, v) or shared for v in variants}


def mode_of(problem: str | None) -> str:
    """How a variant trains in a sweep (part of its key in the variant store)."""
    return SINGLE if problem else BATCHED


def architecture_problem(params: Params) -> str | None:
    """Why the architecture of `params` cannot batch, or None; from a model built on a
    small dummy input (no data needed)."""
    from transferlab.models import build_model

    for size in (8, 32, 64, 224):
        try:
            model = build_model(params.arch, (1, size, size), 2, **params.model_kwargs)
            break
        except (ValueError, RuntimeError):
            continue
    else:
        return f"arch {params.arch!r} could not be built to check it"
    if type(model) is not TransferableNet:
        return f"arch {params.arch!r} ({type(model).__name__}) not supported batched"
    return model_problem(model, _PlanOfAll(model), False) or _stacking_problem(
        params.arch, model, (1, size, size))


def _stacking_problem(arch: str, model: TransferableNet, in_shape) -> str | None:
    """Why `_StackedNet` cannot run `model` (a layer order it does not lay out, say),
    from one forward pass of a stack of two on zeros; or None."""
    suffix = _Suffix(model, 0)
    weights = {name: torch.stack([p.detach()] * 2) for name, p in suffix.named_parameters()}
    try:
        with torch.no_grad():
            _StackedNet(suffix)(weights, torch.zeros(2, 1, *in_shape))
    except RuntimeError as err:
        return f"arch {arch!r} cannot be stacked: {err}"
    return None


@dataclasses.dataclass
class _PlanOfAll:
    model: nn.Module

    @property
    def param_groups(self):
        return [{"params": list(self.model.parameters())}]


def _signature(model: nn.Module) -> tuple:
    return tuple((name, tuple(p.shape), p.dtype) for name, p in model.named_parameters())


class _Suffix(nn.Module):
    """The layers of `net` from position `start` on, then its head."""

    def __init__(self, net: TransferableNet, start: int):
        super().__init__()
        self.net = net
        self.names = net.layer_names[start:]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for name in self.names:
            h = self.net.layer(name)(h)
        return self.net.head(h)


class _Member:
    """One variant of a group, set up exactly as run_variant would."""

    def __init__(self, params, target, sources, variant, device):
        self.variant = variant
        s = setup_variant(params, target, sources, variant, device)
        self.setup = s
        self.history: list[dict] = []
        lr_of = {}
        for group in s.plan.param_groups:
            for p in group["params"]:
                lr_of[id(p)] = group.get("lr", params.transfer.lr)
        # A parameter in no group is never updated (frozen): rate 0.
        self.lrs = {name: lr_of.get(id(p), 0.0) for name, p in s.model.named_parameters()}
        # The leading layers nothing trains (the frozen copied ones) give the same output
        # for an image all run long: computed once, and only the layers above are trained.
        # Every module a batchable model may hold (MODULES) computes the same in train
        # and eval mode, so a layer is frozen here when no param group holds its weights
        # (plan.frozen lists only batch norms under transfer.frozen_dropout).
        self.start = 0
        for name in s.model.layer_names:
            if any(id(p) in lr_of for p in s.model.layer(name).parameters()):
                break
            self.start += 1
        self.suffix = _Suffix(s.model, self.start)
        with torch.no_grad():
            self.inputs = self._prefix(s.batches.x)
        self.group_key = (self.start, _signature(self.suffix), len(s.batches.y),
                          s.batches.batch_size, tuple(self.inputs.shape[1:]))

    def _prefix(self, x: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
        model = self.setup.model
        was_training = model.training
        model.eval()  # frozen layers run in eval mode, as fit keeps them
        parts = []
        for begin in range(0, len(x), chunk):
            h = x[begin:begin + chunk]
            for name in model.layer_names[:self.start]:
                h = model.layer(name)(h)
            parts.append(h)
        model.train(was_training)
        return torch.cat(parts)


def train_group(params: Params, target, sources: dict[str, TransferableNet],
                variants: Sequence[Variant], *, device: torch.device, on_result=None,
                curves: bool = False) -> dict[str, dict]:
    """Train `variants` (all batchable: `problems` gives None for each) as stacked groups;
    their results by key, each also given to `on_result(variant, result)` as its group
    finishes. Variants go to one group when they train the same layers of the same
    shapes on data of the same size. Callable in any process with the same inputs (a
    worker of a distributed sweep, say); a variant's result does not depend on which
    others it is sent with. With `curves`, each result holds its curve as run_variant's
    does (tested at the same epochs)."""
    members = [_Member(params, target, sources, v, device) for v in variants]
    for m in members:
        problem = model_problem(m.setup.model, m.setup.plan, m.setup.task.multilabel)
        if m.setup.penalty is not None or m.setup.plan.head_first is not None:
            problem = "an L2-SP term or an LP-FT phase (not computed by the stacked step)"
        if problem is not None:  # mode_of said it batches: a set-up that differs is a bug
            raise RuntimeError(f"{m.variant.key} cannot batch after all: {problem}")
    groups: dict[tuple, list[_Member]] = {}
    for m in members:
        groups.setdefault(m.group_key, []).append(m)
    results = {}
    for group in groups.values():
        _train_stacked(params, group, device, curves=curves)
        for m in group:
            s = m.setup
            result = variant_result(m.variant, s, evaluate(s.model, *s.test), m.history,
                                    curves=curves)
            if on_result is not None:
                on_result(m.variant, result)
            results[m.variant.key] = result
    return results


def _leaves(module: nn.Module):
    """The modules `module` runs, in order (Sequential containers opened)."""
    if type(module) is nn.Sequential:
        for child in module:
            yield from _leaves(child)
    else:
        yield module


class _StackedNet:
    """The suffix of `template` for a stack of G variants as one ordinary computation:
    each convolution one grouped convolution (groups = G x its own) on activations
    laid out (batch, G x channels, H, W), each linear layer one batched matrix
    product on (G, batch, features). Weights are stacked along a leading G axis; a
    variant's outputs depend only on its own weights and inputs. Kept in NCHW:
    channels_last trained the default grid about 12 % faster on this CPU (its
    max-pool is much faster) but rounds differently from the one-at-a-time loop;
    one k=1 variant then ended 5 test images (0.0186) away from its lone run,
    against 0 for every variant in NCHW."""

    def __init__(self, template: _Suffix):
        names = {id(m): name for name, m in template.named_modules()}
        modules = [m for name in template.names
                   for m in _leaves(template.net.layer(name))] + list(_leaves(template.net.head))
        self.ops = []
        for m in modules:
            prefix = names[id(m)] + "." if names[id(m)] else ""
            kind = type(m)
            if kind is nn.Conv2d and m.padding_mode != "zeros":
                raise RuntimeError(f"{m}: padding mode {m.padding_mode!r} cannot batch")
            if kind is nn.Flatten and (m.start_dim, m.end_dim) != (1, -1):
                raise RuntimeError(f"{m}: only Flatten() over all but the batch dimension "
                                   "batches")
            if kind not in (nn.Conv2d, nn.Linear, nn.ReLU, nn.MaxPool2d, nn.Flatten,
                            nn.Identity):
                raise RuntimeError(f"{type(m).__name__} cannot batch")
            self.ops.append((m, prefix))

    def __call__(self, w: dict[str, torch.Tensor], h: torch.Tensor) -> torch.Tensor:
        """Logits (G, batch, classes) of inputs `h` (G, batch, *one input's shape)."""
        F = nn.functional
        g, batch = h.shape[:2]
        layout = "stack"  # (G, batch, ...); "conv": (batch, G*C, H, W)
        for m, prefix in self.ops:
            kind = type(m)
            if kind is nn.Conv2d or kind is nn.MaxPool2d:
                if layout == "stack":
                    h = h.transpose(0, 1).reshape(batch, g * h.shape[2], *h.shape[3:])
                    layout = "conv"
                if kind is nn.Conv2d:
                    weight = w[prefix + "weight"]
                    bias = w.get(prefix + "bias")
                    h = F.conv2d(h, weight.reshape(-1, *weight.shape[2:]),
                                 None if bias is None else bias.reshape(-1),
                                 m.stride, m.padding, m.dilation, m.groups * g)
                else:
                    h = F.max_pool2d(h, m.kernel_size, m.stride, m.padding, m.dilation,
                                     ceil_mode=m.ceil_mode)
            elif kind is nn.ReLU:
                h = F.relu(h)
            elif kind is nn.Flatten:
                if layout == "conv":
                    h = h.reshape(batch, g, -1).transpose(0, 1)
                    layout = "stack"
                else:
                    h = h.reshape(g, batch, -1)
            elif kind is nn.Linear:
                if layout != "stack" or h.dim() != 3:
                    raise RuntimeError(f"{m} on {tuple(h.shape)}: linear layers batch on "
                                       "flat features only")
                weight = w[prefix + "weight"].transpose(1, 2)
                bias = w.get(prefix + "bias")
                h = (torch.bmm(h, weight) if bias is None
                     else torch.baddbmm(bias.unsqueeze(1), h, weight))
        if layout != "stack" or h.dim() != 3:
            raise RuntimeError(f"the head gives {tuple(h.shape)}, not (G, batch, classes)")
        return h


def _train_stacked(params: Params, group: list[_Member], device: torch.device, *,
                   curves: bool = False) -> None:
    """Train the members' trainable layers in place, as one stacked computation. With
    `curves`, each member's model is tested at the epochs `curve_every` picks (one
    device read per such epoch, none per step), as fit does for run_variant."""
    cfg = params.transfer
    if len(group) == 1:
        # A stack of one runs other kernels (an ungrouped convolution) than a stack of
        # several, and rounds differently: a lone variant is stacked with a copy of
        # itself, so that its result does not depend on being alone.
        _train_stacked(params, [group[0], group[0]], device, curves=curves)
        return
    template = group[0].suffix
    net = _StackedNet(template)
    names = [name for name, _ in template.named_parameters()]
    # Rates per (parameter, variant); plain floats, decayed as MultiStepLR does.
    lrs = {k: [m.lrs[k.removeprefix("net.")] for m in group] for k in names}
    # Stacked by hand: stack_module_state refuses frozen and trainable copies of a layer.
    # A parameter no variant of the group trains stays out of the gradient.
    weights = {name: torch.stack([dict(m.suffix.named_parameters())[name].detach()
                                  for m in group]).requires_grad_(any(lrs[name]))
               for name in names}
    trained = [name for name in names if weights[name].requires_grad]

    # One batch order for all when the variants share their data (the same subsample
    # and seed); each variant's own layer inputs either way.
    shared = len({(m.variant.subsample, m.variant.seed) for m in group}) == 1
    inputs = torch.stack([m.inputs for m in group])
    labels = torch.stack([m.setup.batches.y for m in group])
    rows = torch.arange(len(group), device=device)[:, None]
    shape = {k: (len(group),) + (1,) * (weights[k].dim() - 1) for k in trained}

    def rate_tensors():
        return [torch.tensor(lrs[k], dtype=torch.float64, device=device).view(shape[k])
                for k in trained]

    rates = rate_tensors()
    optimizer = _Stacked(cfg, [weights[k] for k in trained])
    batches = [m.setup.batches for m in group]
    per_epoch = batches[0].steps_per_epoch
    budget = group[0].setup.steps  # transfer.steps, or transfer.epochs of this data size
    if any(m.setup.steps != budget for m in group):
        raise RuntimeError("a batched group must share one step budget")
    n_epochs = math.ceil(budget / per_epoch)
    step = 0
    milestones = list(cfg.milestones)
    histories: list[list[dict]] = [[] for _ in group]
    unread = []
    test_every = curve_every(budget, per_epoch)
    tested: dict[int, list[dict]] = {}  # epoch -> each member's test result
    for epoch in range(n_epochs):
        loss_sum = torch.zeros(len(group), dtype=torch.float64, device=device)
        correct = torch.zeros(len(group), dtype=torch.float64, device=device)
        seen = 0
        orders = [batches[0].indices(epoch)] if shared else [b.indices(epoch) for b in batches]
        for idx in zip(*orders, strict=True):
            if step >= budget:
                break
            if shared:
                hs, ys = inputs[:, idx[0]], labels[:, idx[0]]
            else:
                idx = torch.stack(idx)
                hs, ys = inputs[rows, idx], labels[rows, idx]
            logits = net(weights, hs)
            # One ordinary loss: the sum of each variant's mean cross-entropy. No term
            # mixes two variants, so each variant's weights get its own gradient.
            losses = nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), ys.reshape(-1),
                reduction="none").view(ys.shape).mean(1)
            grads = torch.autograd.grad(losses.sum(), [weights[k] for k in trained])
            optimizer.step(grads, rates)
            step += 1
            if step in milestones:  # MultiStepLR: lr * gamma per milestone passed
                count = milestones.count(step)
                lrs = {k: [lr * cfg.lr_decay ** count for lr in v] for k, v in lrs.items()}
                rates = rate_tensors()
            batch = ys.shape[-1]
            loss_sum += losses.detach().double() * batch
            correct += (logits.detach().argmax(-1) == ys).sum(-1)
            seen += batch
        unread.append((epoch + 1, step, seen, torch.stack([loss_sum, correct], 1)))
        if curves and ((epoch + 1) % test_every == 0 or epoch + 1 == n_epochs):
            _write_back(group, weights)
            tested[epoch + 1] = [evaluate(m.setup.model, *m.setup.test) for m in group]
    values = torch.stack([sums for *_, sums in unread]).tolist()  # the one read of the run
    for (epoch_no, last, seen, _), per_variant in zip(unread, values, strict=True):
        for i, (loss, right) in enumerate(per_variant):
            if not math.isfinite(loss):
                raise _diverged(group[i], epoch_no, last, per_epoch, loss, cfg)
            histories[i].append({"epoch": epoch_no, "step": last,
                                 "train_loss": loss / max(seen, 1),
                                 "train_accuracy": right / max(seen, 1)})
            if epoch_no in tested:  # as fit records it: test_<float result>
                histories[i][-1].update({f"test_{k}": v for k, v in tested[epoch_no][i].items()
                                         if isinstance(v, float)})
    _write_back(group, weights)
    for i, m in enumerate(group):
        m.history = histories[i]


@torch.no_grad()
def _write_back(group: list[_Member], weights: dict[str, torch.Tensor]) -> None:
    """Each member's stacked weights into its own model (to test it, or at the end)."""
    for i, m in enumerate(group):
        for name, p in m.suffix.named_parameters():
            p.copy_(weights[name][i])


def _diverged(member, epoch, last, per_epoch, loss, cfg):
    from transferlab.training.loop import TrainingDiverged

    first = (epoch - 1) * per_epoch + 1
    return TrainingDiverged(
        f"{member.variant.key}: loss became {loss} in epoch {epoch}, steps {first}-{last} "
        f"(lr = {cfg.lr}, optimizer = {cfg.optimizer}); try a lower lr")


class _Stacked:
    """torch's Adam / SGD (the foreach forms `train.make_optimizer` builds) over stacked
    weights, with a rate tensor per parameter (one rate per variant) instead of one
    scalar: every update is a handful of `torch._foreach_*` calls over all the
    stacked tensors of the group."""

    def __init__(self, cfg, weights: list[torch.Tensor]):
        self.cfg = cfg
        self.weights = weights
        self.steps = 0
        self.state: dict[str, list[torch.Tensor]] = {}

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor], rates: Sequence[torch.Tensor]) -> None:
        cfg = self.cfg
        self.steps += 1
        grads = list(grads)
        if cfg.weight_decay != 0:
            grads = torch._foreach_add(grads, self.weights, alpha=cfg.weight_decay)
        if cfg.optimizer == "adam":
            self._adam(grads, rates)
        else:
            self._sgd(grads, rates)

    def _adam(self, grads, rates):
        beta1, beta2, eps = 0.9, 0.999, 1e-8  # torch.optim.Adam's defaults, as make_optimizer
        if not self.state:
            self.state["exp_avg"] = [torch.zeros_like(w) for w in self.weights]
            self.state["exp_avg_sq"] = [torch.zeros_like(w) for w in self.weights]
        exp_avg, exp_avg_sq = self.state["exp_avg"], self.state["exp_avg_sq"]
        torch._foreach_lerp_(exp_avg, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sq, beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, 1 - beta2)
        step = float(self.steps)
        bias_correction1 = 1 - beta1 ** step
        bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
        denom = torch._foreach_sqrt(exp_avg_sq)
        torch._foreach_div_(denom, bias_correction2_sqrt)
        torch._foreach_add_(denom, eps)
        # addcdiv_(exp_avg, denom, value=-lr / bc1) computes w + (value * exp_avg) / denom;
        # the same with one value per variant (a rate of 0 leaves w exactly as it was).
        step_sizes = [rate.div(bias_correction1).mul(-1).float() for rate in rates]
        updates = torch._foreach_mul(exp_avg, step_sizes)
        torch._foreach_div_(updates, denom)
        torch._foreach_add_(self.weights, updates)

    def _sgd(self, grads, rates):
        momentum = self.cfg.momentum
        if momentum != 0:
            if "buf" not in self.state:
                self.state["buf"] = [g.detach().clone() for g in grads]
            else:
                torch._foreach_mul_(self.state["buf"], momentum)
                torch._foreach_add_(self.state["buf"], grads)
            grads = self.state["buf"]
        # add_(g, alpha=-lr) computes w + (-lr) * g.
        torch._foreach_add_(self.weights,
                            torch._foreach_mul(grads, [rate.mul(-1).float() for rate in rates]))


def train_variants_batched(params: Params, target, sources, variants: Sequence[Variant], *,
                           device: torch.device, on_result=None, log=None) -> dict[str, dict]:
    """Train `variants`: the batchable ones as stacked groups (`train_group`), the rest one
    at a time through `run_variant`; each reason for the latter is logged once."""
    from transferlab.timing import compute
    from transferlab.training.variant import run_variant

    log = log or (lambda message: print(message, file=sys.stderr))
    why = problems(params, variants, target.multilabel)
    together = [v for v in variants if why[v.key] is None]
    alone = [v for v in variants if why[v.key] is not None]
    for problem in dict.fromkeys(why[v.key] for v in alone):
        count = sum(why[v.key] == problem for v in alone)
        log(f"training {count} of {len(variants)} variants one at a time: {problem}")
    results = {}
    curves = params.sweep.curves
    if together:
        with compute():
            results.update(train_group(params, target, sources, together, device=device,
                                       on_result=on_result, curves=curves))
    for v in alone:
        with compute():
            result = run_variant(params, target, sources, v, device=device, curves=curves)
        if on_result is not None:
            on_result(v, result)
        results[v.key] = result
    return results
