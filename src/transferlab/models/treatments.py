"""Treatments as data: Yosinski et al.'s vocabulary for what a transfer run does."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Treatment:
    name: str
    source: str | None  # which pretrained network the first n layers come from
    finetune: bool  # False: copied layers frozen; True: trained at lr * lr_mult
    new_fc: int = 0  # FC layers in the new head beyond the output layer (Oquab et al.)
    only_deepest: bool = False  # run at the deepest n of the sweep only
    copies_all: bool = False  # every layer copied; n says how many are frozen
    # n is always every layer of the network (the sweep runs it there only): the fine-tuning
    # baselines below, whose meaning does not depend on a depth
    all_layers: bool = False
    # LP-FT: the copied layers are held (frozen) for the first transfer.lp_ft.head_share of
    # the budget while the head trains, then fine-tuned at lr * transfer.lp_ft.lr_mult
    head_first: bool = False

    @property
    def copies_layers(self) -> bool:
        return self.source is not None


TREATMENTS: dict[str, Treatment] = {
    t.name: t
    for t in (
        Treatment("base", None, False),  # target only, from scratch
        Treatment("AnB", "A", False),
        Treatment("AnB+", "A", True),
        Treatment("BnB", "B", False),  # selffer control: layers from a target-class model
        Treatment("BnB+", "B", True),
        # Hong's "add one or two FC layers": every copied layer frozen, a new
        # FC-ReLU layer and the output layer trained on top.
        Treatment("AnB-2fc", "A", False, new_fc=1, only_deepest=True),
        # Borthakur & Einhorn's Fig. 2: every layer copied from A, the first n frozen, the copied
        # rest fine-tuned at lr * lr_mult; only the head is new (trained at lr).
        Treatment("AnB-ft", "A", True, copies_all=True),
        # The baselines of today's fine-tuning papers, every layer copied from A, the head new:
        # linear probe (every copied layer frozen: AnB at n = all layers), full fine-tuning
        # (every copied layer trained at lr * lr_mult: AnB+ at n = all layers), and Kumar et
        # al. (ICLR 2022)'s LP-FT (the linear probe first, then full fine-tuning from its head).
        Treatment("LP", "A", False, all_layers=True),
        Treatment("FT", "A", True, all_layers=True),
        Treatment("LP-FT", "A", True, all_layers=True, head_first=True),
    )
}


def treatment_name(source: str, freeze: int, finetune: bool) -> str:
    """The treatment the top-level params (`source`, `freeze`, `finetune`) describe."""
    if freeze == 0:
        return "base"
    return f"{source}nB" + ("+" if finetune else "")


def model_b_uses(*, treatments, source: str, freeze, swap: bool, arch: str) -> list[str]:
    """What in a run reads model B (the network trained on the target classes); empty when
    nothing does, and then stage pretrain@B trains nothing (presets whose grid has no
    selffer treatment would otherwise train it for hours)."""
    uses = [f"sweep.treatments has {name}" for name in treatments
            if TREATMENTS[name].source == "B"]
    if source == "B" and freeze != 0:
        uses.append("stage transfer copies from model B (source: B)")
    if swap:
        uses.append("sweep.swap: the swapped direction copies from model B")
    if arch == "feedback":
        uses.append("the report's per-iteration gain over model B (Spero's Fig. 2)")
    return uses
