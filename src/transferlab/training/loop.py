"""The one training loop every training stage calls."""

from __future__ import annotations

import hashlib
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from transferlab.config.params import TrainParams
from transferlab.io import clean_stale_temporaries, write_bytes_atomic
from transferlab.progress import progress_bar
from transferlab.training.distributed import is_main_process
from transferlab.training.store import EntryRejected, check_digest


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def to_tensor(images: np.ndarray, pixel_max: int, device: torch.device,
              mean: Sequence[float] = (0.5,), std: Sequence[float] = (0.5,)) -> torch.Tensor:
    """uint8 images -> float, scaled to [0, 1] then normalised per channel (default: mean
    0.5, std 0.5, i.e. [-1, 1])."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device=device, dtype=torch.float32)
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    sd = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return (x / pixel_max - m) / sd


def task_tensors(task, device: torch.device, crop: int = 0) -> dict[str, torch.Tensor | None]:
    """A TaskData's parts on the device; test images centre-cropped to `crop` if set."""
    from transferlab.training.augment import center_crop

    def images(x):
        return to_tensor(x, task.pixel_max, device, task.mean, task.std)

    def labels(y):
        y = torch.from_numpy(np.ascontiguousarray(y)).to(device)
        return y.float() if task.multilabel else y

    def mask(d):
        return None if d is None else torch.from_numpy(np.ascontiguousarray(d)).to(device)

    x_test = images(task.x_test)
    if crop:
        x_test = center_crop(x_test, crop)
    return {"x_train": images(task.x_train), "y_train": labels(task.y_train),
            "ignore_train": mask(task.difficult_train), "x_test": x_test,
            "y_test": labels(task.y_test), "ignore_test": mask(task.difficult_test)}


@dataclass
class Batches:
    """A whole small dataset on the device; shuffled per epoch from (seed, epoch)."""

    x: torch.Tensor
    y: torch.Tensor
    batch_size: int
    seed: int
    ignore: torch.Tensor | None = None  # multi-label: labels left out of the loss
    # Under torchrun, (rank, world size): this process takes its share of every batch.
    shard: tuple[int, int] | None = None

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.y) / min(self.batch_size, len(self.y)))

    def indices(self, index: int):
        """The image indices of each batch of epoch `index` (on the data's device)."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        order = torch.randperm(len(self.y), generator=gen).to(self.x.device)
        size = min(self.batch_size, len(self.y))
        for start in range(0, len(order), size):
            yield order[start:start + size]

    def epoch(self, index: int):
        for idx in self.indices(index):
            if self.shard is not None:
                # A last, smaller batch is padded by wrapping round (DistributedSampler
                # does the same), so every process takes the same number of steps.
                rank, size = self.shard
                n = len(idx)
                idx = idx[(torch.arange(n + (-n) % size, device=idx.device) % n)[rank::size]]
            yield self.x[idx], self.y[idx], None if self.ignore is None else self.ignore[idx]


def make_optimizer(param_groups: list[dict], cfg: TrainParams) -> torch.optim.Optimizer:
    groups = [g for g in param_groups if g["params"]]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay, foreach=True)


class PerGroupMultiStepLR(torch.optim.lr_scheduler.LRScheduler):
    """MultiStepLR with milestones per param group: group i's rate is multiplied by
    `gamma` at each step of `milestones[i]` (in the same chained form as MultiStepLR,
    so equal milestones give MultiStepLR's rates bit for bit)."""

    def __init__(self, optimizer, milestones: list[Sequence[int]], gamma: float):
        from collections import Counter

        self.group_milestones = [Counter(m) for m in milestones]
        self.gamma = gamma
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        return [group["lr"] * self.gamma ** marks[self.last_epoch] if self.last_epoch in marks
                else group["lr"]
                for group, marks in zip(self.optimizer.param_groups, self.group_milestones,
                                        strict=True)]


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainParams, steps_per_unit: int):
    """The step decay of `cfg`, or None. Milestones count epochs (pretraining:
    `steps_per_unit` steps each) or steps (transfer: 1). With
    `transfer.copied_milestones`, groups of copied layers (`"copied": True`) decay at
    those steps and the other groups at `milestones`; otherwise every group decays
    at `milestones`."""
    copied_marks = getattr(cfg, "copied_milestones", None)  # transfer only
    if copied_marks is None:
        if not cfg.milestones:
            return None
        return torch.optim.lr_scheduler.MultiStepLR(
            optimizer, [m * steps_per_unit for m in cfg.milestones], gamma=cfg.lr_decay)
    per_group = [[m * steps_per_unit for m in
                  (copied_marks if group.get("copied") else cfg.milestones)]
                 for group in optimizer.param_groups]
    if not any(per_group):
        return None
    return PerGroupMultiStepLR(optimizer, per_group, gamma=cfg.lr_decay)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             ignore: torch.Tensor | None = None, batch_size: int = 1024, *,
             ap: str | None = None) -> dict:
    """Single-label: accuracy and cross-entropy. Multi-label (y of shape N x L): mAP over
    labels (`ignore` marks VOC "difficult" ones), with AP by definition `ap`
    (heads.ap, required then), and BCE. Networks with several iterations also get
    the accuracy (or mAP) of every iteration's prediction."""
    from transferlab.metrics import mean_average_precision

    if y.ndim == 2 and ap is None:
        raise ValueError("multi-label scores need an AP definition (params heads.ap)")

    was_training = model.training
    model.eval()
    iterations = getattr(model, "num_iterations", 1)
    outs: list[list[torch.Tensor]] = [[] for _ in range(iterations)]
    for start in range(0, len(y), batch_size):
        xb = x[start:start + batch_size]
        with _autocast(x.device):
            logits = model.outputs(xb) if iterations > 1 else [model(xb)]
        for i, out in enumerate(logits):
            outs[i].append(out.float())
    model.train(was_training)
    per_iter = [torch.cat(o) for o in outs]
    last = per_iter[-1]
    if y.ndim == 2:
        keep = None if ignore is None else ~ignore
        loss = nn.functional.binary_cross_entropy_with_logits(last, y.float(), reduction="none")
        loss = loss[keep].mean() if keep is not None else loss.mean()
        ign = None if ignore is None else ignore.cpu().numpy()
        scores = [mean_average_precision(y.cpu().numpy(), o.cpu().numpy(), ign, definition=ap)
                  for o in per_iter]
        result = {"map": scores[-1][0], "loss": loss.item(), "ap": scores[-1][1],
                  "ap_definition": ap}
        if iterations > 1:
            result["iteration_map"] = [s[0] for s in scores]
        return result
    accs = [(o.argmax(1) == y).float().mean().item() for o in per_iter]
    result = {"accuracy": accs[-1],
              "loss": nn.functional.cross_entropy(last, y).item()}
    if iterations > 1:
        result["iteration_accuracy"] = accs
    return result


def score_of(result: dict) -> float:
    """The one number a run is compared by: accuracy, or mAP for multi-label tasks."""
    return result["map"] if "map" in result else result["accuracy"]


def _autocast(device: torch.device):
    # Mixed precision only on GPU; CPU runs stay in float32 and deterministic.
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def save_state(state: dict, path: Path) -> None:
    """torch.save through a buffer, then one atomic write: a reader never sees half a
    file, and equal states give equal bytes (the archive is not named after a temporary)."""
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def _log(live, record: dict) -> None:
    for name, value in record.items():
        if name not in ("epoch", "step"):
            live.log_metric(name, value)
    live.next_step()


def cuda_available() -> bool:
    """Whether GPU random states exist to save (a seam the CPU-only tests replace)."""
    return torch.cuda.is_available()


def rng_states() -> dict:
    """The global random states a resumed run needs: the CPU one and, where CUDA is
    available, every GPU's (dropout and other in-graph draws on the GPU use them)."""
    cuda = torch.cuda.get_rng_state_all() if cuda_available() else []
    return {"rng": torch.get_rng_state(), "cuda_rng": cuda}


def restore_rng_states(state: dict) -> None:
    """Undo `rng_states`. The states are byte tensors that torch wants on the CPU (a
    checkpoint read with map_location=cuda holds them on the GPU)."""
    torch.set_rng_state(state["rng"].cpu())
    cuda = state.get("cuda_rng") or []
    if cuda and cuda_available():
        if len(cuda) != torch.cuda.device_count():
            print(f"checkpoint has the random states of {len(cuda)} GPUs, this machine "
                  f"{torch.cuda.device_count()}; restoring those that exist", file=sys.stderr)
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda[:torch.cuda.device_count()]])


def state_digest(state: dict) -> str:
    """sha256 of a checkpoint's content: every entry but its digest ("sha256"), tensors
    by dtype, shape and bytes, mappings in key order; the same after torch.save and
    torch.load, on whichever device the tensors were."""
    h = hashlib.sha256()

    def feed(value) -> None:
        if isinstance(value, torch.Tensor):
            flat = value.detach().cpu().contiguous().reshape(-1)
            h.update(f"tensor {flat.dtype} {tuple(value.shape)}:".encode())
            h.update(flat.view(torch.uint8).numpy())
        elif isinstance(value, Mapping):
            h.update(b"{")
            for k in sorted(value, key=repr):
                h.update(repr(k).encode() + b":")
                feed(value[k])
            h.update(b"}")
        elif isinstance(value, list | tuple):
            h.update(b"[")
            for item in value:
                feed(item)
            h.update(b"]")
        else:
            h.update(f"{type(value).__name__} {value!r};".encode())

    feed({k: v for k, v in state.items() if k != "sha256"})
    return h.hexdigest()


def save_checkpoint(state: dict, path: Path) -> None:
    """A checkpoint with its content digest inside, in one atomic write (save_state)."""
    save_state({**state, "sha256": state_digest(state)}, path)


def _read_checkpoint(path: Path | None, key: str | None, device) -> dict | None:
    """The checkpoint at `path` if it was written under `key` and its content matches the
    digest it carries; otherwise None, and a checkpoint that cannot be read, carries no
    digest or fails it, or belongs to another run is deleted with a message.

    weights_only=True: the file is read as tensors and plain containers only, so a
    planted or corrupt file cannot run code. The digest catches an edited or corrupt
    one (the red-team's S8: weights zeroed and the epoch set with torch.save, the key
    kept); a writer who recomputes the digest is trusted, as every writer of the
    store is (transferlab.training.store)."""
    if path is None:
        return None
    clean_stale_temporaries([path])  # a killed run's half-written checkpoint
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(state, dict):
            raise EntryRejected("is not a checkpoint")
        check_digest(state.get("sha256"), state_digest(state))
        reason = None if state.get("key") == key else \
            "it was written by a run with other params, data or code"
    except EntryRejected as err:
        state, reason = None, f"it {err}"
    except Exception as err:  # any unreadable file: start over rather than fail every run
        state, reason = None, f"it cannot be read ({type(err).__name__}: {err})"
    if reason is None:
        return state
    print(f"discarding checkpoint {path}: {reason}; training from the start", file=sys.stderr)
    path.unlink(missing_ok=True)
    return None


def is_convolutional(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _release(head_first, frozen: Sequence[nn.Module], optimizer) -> None:
    """The end of LP-FT's first phase: the held layers train from now on, from a fresh
    optimiser state (modules frozen for good stay in eval mode)."""
    for p in head_first.params:
        p.requires_grad_(True)
    for module in head_first.frozen:
        module.train()
    for module in frozen:
        module.eval()
    optimizer.state.clear()


def fit(model: nn.Module, train: Batches, cfg: TrainParams, *,
        param_groups: list[dict] | None = None, frozen: Sequence[nn.Module] = (),
        epochs: int | None = None, steps: int | None = None,
        test: tuple | None = None, live=None,
        checkpoint: Path | None = None, checkpoint_key: str | None = None,
        progress: bool = True, desc: str = "train",
        log_every: int = 1, objective: nn.Module | None = None,
        transform=None, ap: str | None = None, test_every_log: bool = False,
        penalty=None, head_first=None) -> list[dict]:
    """Train `model` for `epochs` passes or `steps` updates.

    `objective` (transferlab.training.losses.Objective) gives the loss: cross-entropy by
    default; per-label BCE for multi-label targets, discounted per-iteration
    losses, binary auxiliary heads (whose parameters it owns and trains).
    `transform(x, generator)` augments each training batch (random crops and
    mirrors); its generator is seeded from the run's seed. `frozen` modules stay
    in eval mode (transfer.eval_mode_modules: whole frozen layers, or only their
    batch norms). `test` = (x, y) or (x, y, ignore) is only monitored and logged,
    never used for any decision; `ap` is its AP definition (multi-label only).
    With `checkpoint`, state is saved after every epoch under `checkpoint_key`
    (derived by the caller from everything that makes the run: transferlab.keys),
    and a checkpoint is resumed from only when its key is that key; any other
    one is discarded with a message. `live` (a dvclive.Live) gets the metrics of
    every `log_every`-th epoch and of the last, resumed epochs included, so a
    resumed run's curve is the whole curve; `test` is evaluated at those epochs
    (with `test_every_log`, also without `live`: a sweep variant's curve). Returns
    one dict per epoch, with `test_*` at the epochs tested.

    No step waits for the device: each step's loss and correct count stay on
    it and are read at each epoch that is logged, checkpointed or last (one
    read for all steps since the previous one). The finite-loss check
    reads the same sums, so a diverged run stops there, naming the first epoch
    whose loss was not finite and its step range, before any checkpoint of it
    is written. On CUDA, a convolutional model and its data are put in
    channels_last and the steps run under bfloat16 autocast; on CPU everything
    stays float32 and a run is byte-identical for the same inputs.
    `penalty()` (losses.L2SP, or None) is added to each step's loss before the
    backward pass; the loss logged and checked is the objective's alone, so
    train losses compare across treatments. `head_first` (surgery.HeadFirst,
    LP-FT) holds its parameters (no gradient, so no update, no optimiser state)
    and keeps its modules in eval mode for its first `steps` steps; at that step
    they are released and the optimiser's state is cleared, so the second phase
    starts as a fresh optimiser from the trained head, as Kumar et al.'s separate
    fine-tuning run does (rates and schedule run on over the whole budget).
    `cfg.compile` wraps the loss in `torch.compile`; the first step (which
    compiles) is timed on its own, logged, and added to the stage's timing record
    (`stage.compile_seconds`), apart from the training time.
    """
    from transferlab.timing import add_compile_seconds
    from transferlab.training.losses import Objective

    if (epochs is None) == (steps is None):
        raise ValueError("give exactly one of epochs or steps")
    device = train.x.device
    multilabel = train.y.ndim == 2
    if objective is None:
        objective = Objective(multilabel=multilabel)
    objective = objective.to(device)
    if device.type == "cuda" and is_convolutional(model) and train.x.dim() == 4:
        model.to(memory_format=torch.channels_last)
        train.x = train.x.contiguous(memory_format=torch.channels_last)
    loss_of = torch.compile(objective) if cfg.compile else objective
    per_epoch = train.steps_per_epoch
    total_steps = steps if steps is not None else epochs * per_epoch
    n_epochs = math.ceil(total_steps / per_epoch)
    groups = param_groups or [{"params": list(model.parameters())}]
    extra = [p for p in objective.parameters() if p.requires_grad]
    if extra:
        groups = [*groups, {"params": extra}]
    optimizer = make_optimizer(groups, cfg)
    scheduler = make_scheduler(optimizer, cfg, per_epoch if epochs is not None else 1)
    gen = torch.Generator(device=device).manual_seed(train.seed * 7919 + 17)

    history: list[dict] = []
    first_epoch = 0
    if checkpoint is not None and checkpoint_key is None:
        raise ValueError("a checkpoint needs its checkpoint_key")
    state = _read_checkpoint(checkpoint, checkpoint_key, device)
    if state is not None:
        model.load_state_dict(state["model"])
        objective.load_state_dict(state["objective"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        restore_rng_states(state)
        gen.set_state(state["gen"].cpu())
        history, first_epoch = state["history"], state["epoch"]
        print(f"{desc}: resuming from {checkpoint} after epoch {first_epoch}", file=sys.stderr)

    def logged(epoch_index: int) -> bool:
        return (live is not None or test_every_log) and (
            (epoch_index + 1) % log_every == 0 or epoch_index + 1 == n_epochs)

    for record in history:  # a resumed run logs its earlier epochs again, in order
        if live is not None and logged(record["epoch"] - 1):
            _log(live, record)

    bar = None
    if progress:
        bar = progress_bar(total=total_steps, initial=min(first_epoch * per_epoch, total_steps),
                           desc=desc, unit="step", leave=False)
    # Epochs trained since the last read: (epoch, first step, last step, batch sizes);
    # and each of their steps' loss and correct count, left on the device.
    unread: list[tuple[int, int, int, list[int]]] = []
    step_losses: list[torch.Tensor] = []
    step_correct: list[torch.Tensor] = []  # multi-label: agreement summed per step
    step_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []  # single-label: (logits, y)

    def correct_counts() -> list:
        if multilabel:
            return torch.stack(step_correct).tolist()
        # Single-label: no kernel per step; all hits at once, then counts per step from
        # the running total at each step's end (exact integer arithmetic).
        hits = (torch.cat([o for o, _ in step_outputs]).argmax(1)
                == torch.cat([y for _, y in step_outputs])).cumsum(0)
        ends = torch.tensor([len(y) for _, y in step_outputs], device=hits.device).cumsum(0)
        totals = hits[ends - 1]
        return torch.diff(totals, prepend=totals.new_zeros(1)).tolist()

    def read_sums() -> None:
        """One device read for every unread step; stops a run whose loss diverged. The
        sums are the host's float64 sums of the float32 values, in order: what reading
        each step's values at once would give."""
        losses = torch.stack(step_losses).tolist()
        corrects = correct_counts()
        at = 0
        for epoch_no, first, last, sizes in unread:
            loss_sum, correct = 0.0, 0
            for size in sizes:
                loss_sum += losses[at] * size
                correct += corrects[at]
                at += 1
            if not math.isfinite(loss_sum):
                raise TrainingDiverged(
                    f"{desc}: loss became {loss_sum} in epoch {epoch_no}, steps {first}-{last} "
                    f"(lr = {cfg.lr}, optimizer = {cfg.optimizer}); try a lower lr")
            seen = sum(sizes)
            history.append({"epoch": epoch_no, "step": last,
                            "train_loss": loss_sum / max(seen, 1),
                            "train_accuracy": correct / max(seen, 1)})
        unread.clear()
        step_losses.clear()
        step_correct.clear()
        step_outputs.clear()

    step = first_epoch * per_epoch
    holding = head_first is not None and step < head_first.steps
    if holding:
        for p in head_first.params:
            p.requires_grad_(False)
    for epoch in range(first_epoch, n_epochs):
        model.train()
        objective.train()
        for module in frozen:
            module.eval()
        if holding:
            for module in head_first.frozen:
                module.eval()
        sizes: list[int] = []
        first_step = step + 1
        for xb, yb, ignore in train.epoch(epoch):
            if step >= total_steps:
                break
            if holding and step == head_first.steps:
                _release(head_first, frozen, optimizer)
                holding = False
            if transform is not None:
                xb = transform(xb, gen)
            timed = cfg.compile and step == first_epoch * per_epoch
            if timed:
                _sync(device)
                start = time.perf_counter()
            with _autocast(device):
                loss, logits = loss_of(model, xb, yb, ignore)
            optimizer.zero_grad(set_to_none=True)
            (loss if penalty is None else loss + penalty()).backward()
            optimizer.step()
            if timed:
                _sync(device)
                took = time.perf_counter() - start
                add_compile_seconds(took)
                print(f"{desc}: first step (torch.compile) took {took:.1f} s", file=sys.stderr)
            if scheduler is not None:
                scheduler.step()
            step_losses.append(loss.detach())
            if multilabel:  # per-label agreement at the 0.5 threshold
                agree = (logits.detach().float() > 0) == (yb > 0.5)
                step_correct.append(agree.float().mean(1).sum())
            else:
                step_outputs.append((logits.detach(), yb))
            sizes.append(len(yb))
            step += 1
            if bar is not None:
                bar.update(1)
        unread.append((epoch + 1, first_step, step, sizes))
        log_now = logged(epoch)
        # Long unlogged runs still read now and then, to bound what waits on the device.
        if not (log_now or checkpoint is not None or epoch + 1 == n_epochs
                or len(step_losses) >= 1000):
            continue
        read_sums()
        record = history[-1]
        if test is not None and log_now:
            result = evaluate(model, *test, ap=ap)
            record.update({f"test_{k}": v for k, v in result.items()
                           if isinstance(v, float)})
        if log_now and live is not None:
            _log(live, record)
        if checkpoint is not None and is_main_process():  # under torchrun: rank 0 only
            save_checkpoint({"key": checkpoint_key, "model": model.state_dict(),
                             "objective": objective.state_dict(),
                             "optimizer": optimizer.state_dict(),
                             "scheduler": None if scheduler is None else scheduler.state_dict(),
                             **rng_states(), "gen": gen.get_state(),
                             "history": history, "epoch": epoch + 1}, checkpoint)
    if bar is not None:
        bar.close()
    return history
