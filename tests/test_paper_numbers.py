"""Every number in a preset's `paper:` section is the paper's own, as printed.

The papers' tables and sentences that hold a number are quoted here verbatim (the
seed texts are not part of the repository). Each preset number names its cell (a
table, a row, a column) or its sentence, and must be that cell's text digit for digit
(78.70, not 78.7), or a range [low, high] the sentence prints as "low-high". A number
the paper does not print is null, with "figure only" in its source. Where the seed
texts are at hand (../shared/seeds, or $TRANSFERLAB_SEEDS), every quote is checked
against them too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SEEDS = Path(os.environ.get("TRANSFERLAB_SEEDS", ROOT.parent / "shared" / "seeds"))

# quote -> (seed file prefix, verbatim text). Tables keep their tab-separated lines.
QUOTES = {
    "Spero Table 1": ("000", "\tCIFAR-10\tCIFAR-100\tPascal VOC\n"
                             "Iteration 1\t78.70%\t33.25%\t35.05%\n"
                             "Iteration 2\t80.63%\t37.22%\t36.29%\n"
                             "Iteration 3\t81.21%\t39.18%\t37.80%\n"
                             "Iteration 4\t81.36%\t38.85%\t37.90%"),
    "Spero sec. 7.1, CIFAR-10": ("000", "Transfer learning from CIFAR-10 to Pascal VOC gave a "
                                        "4-5% boost in performance across all iterations."),
    "Spero sec. 7.1, CIFAR-100": ("000", "Transfer learning from CIFAR-100 to Pascal VOC gave "
                                         "a 7-8% boost in performance across all iterations."),
    "Borthakur & Einhorn Table 1": ("001", "Baseline 1\tBinary 1\tBaseline 2\tBinary 2\n"
                                           "31.81\t38.86\t35.57\t37.12"),
    "Sharma Exp. 2": ("002", "Digit\tLayer 1 reconstruction error\tLayer 2 reconstruction "
                             "error\tLayer 2 error Without any training\n"
                             "0(known)\t8018.10351562\t10714.22363281\t11414.13769531\n"
                             "1(known)\t5083.41992188\t7549.57910156\t8240.32128906\n"
                             "2(known)\t7755.01660156\t10549.84765625\t10980.546875\n"
                             "3(known)\t7366.31933594\t10222.41210938\t10769.54296875\n"
                             "4(known)\t6782.44726562\t9637.2109375\t10000.38964844\n"
                             "5(unknown)\t6271.58544922\t8856.26660156\t9862.296875\n"
                             "6(unknown)\t7448.06396484\t10270.82226562\t10581.93261719\n"
                             "7(unknown)\t6603.953125\t9235.93261719\t9618.20898438\n"
                             "8(unknown)\t8119.54541016\t10832.08398438\t11293.93554688\n"
                             "9(unknown)\t6839.11328125\t9510.26074219\t10074.81542969"),
    "Sharma Exp. 3": ("002", "Digit\tLayer 1(reconstruction error)\tLayer 2(reconstruction "
                             "error)\n"
                             "0(known)\t76.24341583\t144.20317078\n"
                             "1(known)\t37.76148605\t71.99356079\n"
                             "2(known)\t89.99630737\t175.07717896\n"
                             "3(known)\t87.36468506\t167.58268738\n"
                             "4(known)\t84.15545654\t157.71461487\n"
                             "5(unknown)\t88.88010406\t184.75756836\n"
                             "6(unknown)\t76.63885498\t170.90098572\n"
                             "7(unknown)\t63.3898735\t118.9193573\n"
                             "8(unknown)\t98.47270966\t213.88096619\n"
                             "9(unknown)\t71.3926239\t143.69009399"),
    # Hong's lecture: DeCAF's Caltech-101 table (mean ± sd over splits), Razavian et al.'s
    # Table 1 on VOC 2007 and its caption's sentence on Oquab et al.
    "DeCAF Caltech-101": ("003", "\tDeCAF \u2085\tDeCAF \u2086\tDeCAF \u2087\n"
                                 "LogReg\t63.29 ± 6.6\t84.30 ± 1.6\t84.87 ± 0.6\n"
                                 "SVM\t77.12 ± 1.1\t84.77 ± 1.2\t83.24 ± 1.2"),
    "Razavian Table 1": ("003", "\taero\tbike\tbird\tboat\tbottle\tbus\tcar\tcat\tchair"
                                "\tcow\ttable\tdog\thorse\tmbike\tperson\tplant\tsheep"
                                "\tsofa\ttrain\ttv\tmAP\n"
                                "CNN-SVM\t88.5\t81.0\t83.5\t82.0\t42.0\t72.5\t85.3\t81.6"
                                "\t59.9\t58.5\t66.5\t77.8\t81.8\t78.8\t90.2\t54.8\t71.1"
                                "\t62.6\t87.2\t71.8\t73.9\n"
                                "CNNaug-SVM\t90.1\t84.4\t86.5\t84.1\t48.4\t73.4\t86.7"
                                "\t85.4\t61.3\t67.6\t69.6\t84.0\t85.4\t80.0\t92.0\t56.9"
                                "\t76.7\t67.3\t89.1\t74.9\t77.2"),
    "Razavian Table 1 caption, Oquab": (
        "003", "Oquab *et al.* [29] fixes all the layers trained on ImageNet then it adds and "
               "optimizes two fully connected layers on the VOC dataset and achieves better "
               "results (77.7) indicating the potential to boost the performance by further "
               "adaptation of the representation to the target task/dataset."),
}


def _spero(preset: str, columns: dict[str, str], gain: str | None) -> dict:
    """Spero's rows: model A / model B at an iteration -> Table 1's cell; gains -> 7.1."""
    out = {}
    for what, column in columns.items():
        for i in range(1, 5):
            out[(preset, f"{what}, iteration {i}")] = ("Spero Table 1", f"Iteration {i}",
                                                       column)
    if gain:
        source = "CIFAR-10" if gain == "C10" else "CIFAR-100"
        for i in range(1, 5):
            out[(preset, f"gain of {gain} -> VOC over VOC only (model B), iteration {i} "
                         "(ours in mAP points)")] = (f"Spero sec. 7.1, {source}", None, None)
    return out


def _sharma() -> dict:
    out = {}
    for digit in range(10):
        row = f"{digit}({'known' if digit < 5 else 'unknown'})"
        what = f"digit {row.replace('(', ' (')}"
        for layer in (1, 2):
            out[("sharma-twoconv-mnist", f"inversion error, {what}, layer {layer}")] = (
                "Sharma Exp. 2", row, f"Layer {layer} reconstruction error")
            out[("sharma-twoconv-mnist", f"decoder error, {what}, layer {layer}")] = (
                "Sharma Exp. 3", row, f"Layer {layer}(reconstruction error)")
        out[("sharma-twoconv-mnist", f"inversion error, {what}, layer 2 untrained")] = (
            "Sharma Exp. 2", row, "Layer 2 error Without any training")
    return out


# (preset, what) -> (quote, row label or None for a table's one row or a sentence, column)
WHERE = {
    **_spero("spero-feedback-cifar10-voc", {"model A (CIFAR-10)": "CIFAR-10",
                                            "model B (VOC; ours mAP)": "Pascal VOC"}, "C10"),
    **_spero("spero-feedback-cifar100-voc", {"model A (CIFAR-100)": "CIFAR-100",
                                             "model B (VOC; ours mAP)": "Pascal VOC"}, "C100"),
    **_spero("spero-feedback-cifar100-cifar10", {"model A (CIFAR-100)": "CIFAR-100",
                                                 "model B (CIFAR-10)": "CIFAR-10"}, None),
    **{("borthakur-einhorn-densenet-cifar100", what): ("Borthakur & Einhorn Table 1", None,
                                                       column)
       for what, column in (("Baseline 1 (A without the binary head)", "Baseline 1"),
                            ("Binary 1 (A with the binary head, weight 0.4)", "Binary 1"),
                            ("Baseline 2 (second A/B split)", "Baseline 2"),
                            ("Binary 2 (second A/B split)", "Binary 2"))},
    **_sharma(),
    **{("hong-decaf-alexnet-voc2007", f"Caltech-101, {head} on DeCAF{layer} (not run here)"): (
        "DeCAF Caltech-101", head, f"DeCAF {chr(0x2080 + layer)}")
       for head in ("LogReg", "SVM") for layer in (5, 6, 7)},
    ("hong-cnnaug-alexnet-voc2007", "CNN-SVM, VOC 2007 mAP (second run: copies 0, transform "
                                    "l2)"): ("Razavian Table 1", "CNN-SVM", "mAP"),
    ("hong-cnnaug-alexnet-voc2007", "CNNaug-SVM, VOC 2007 mAP (SVM on fc6)"): (
        "Razavian Table 1", "CNNaug-SVM", "mAP"),
    ("hong-oquab-alexnet-voc2007", "Oquab et al., VOC 2007 mAP (AnB-2fc at n = 7)"): (
        "Razavian Table 1 caption, Oquab", None, None),
}


def _printed_values(path: Path) -> dict[str, str]:
    """what -> the value exactly as the preset file writes it (YAML would drop 78.70's 0)."""
    out = {}
    for line in path.read_text().splitlines():
        match = re.search(r'what: "((?:[^"\\]|\\.)*)", value: (\[[^\]]*\]|[^,]+),', line)
        if match:
            out[match.group(1).replace('\\"', '"')] = match.group(2).strip()
    return out


def _cell(quote: str, row: str | None, column: str) -> str:
    header, *rows = [line.split("\t") for line in QUOTES[quote][1].split("\n")]
    if row is None:
        (cells,) = rows
        return cells[header.index(column)]
    (cells,) = [r for r in rows if r[0] == row]
    return cells[header.index(column)]


def _numbers():
    for path in sorted((ROOT / "presets").glob("*.yaml")):
        numbers = yaml.safe_load(path.read_text())["paper"]["numbers"]
        printed = _printed_values(path)
        for number in numbers:
            yield path.stem, number, printed[number["what"]]


NUMBERS = list(_numbers())


@pytest.mark.parametrize(("preset", "number", "printed"), NUMBERS,
                         ids=[f"{p}: {n['what']}" for p, n, _ in NUMBERS])
def test_each_paper_number_is_printed_in_the_paper(preset, number, printed):
    if number["value"] is None:
        assert "figure only" in number["source"], (preset, number)
        return
    assert (preset, number["what"]) in WHERE, (
        f"{preset}: paper number {number['what']!r} = {printed} names no quote of the paper "
        "in tests/test_paper_numbers.py (WHERE)")
    quote, row, column = WHERE[(preset, number["what"])]
    if isinstance(number["value"], list):  # a range the sentence prints as "low-high"
        low, high = yaml.safe_load(printed)
        assert f"{low}-{high}%" in QUOTES[quote][1], (preset, number["what"], quote)
        return
    if column is None:  # a number a sentence prints: that very token
        assert re.search(rf"(?<![\d.]){re.escape(printed)}(?![\d.])", QUOTES[quote][1]), (
            preset, number["what"], quote)
        return
    # a cell "mean ± sd" holds the mean
    assert _cell(quote, row, column).rstrip("%").split(" ± ")[0] == printed, (
        preset, number["what"])


def test_every_quote_holds_some_preset_number():
    claimed = {(p, n["what"]) for p, n, _ in NUMBERS if n["value"] is not None}
    assert {WHERE[key][0] for key in claimed} == set(QUOTES)
    # the presets hold all of Borthakur & Einhorn's Table 1, Sharma's two tables,
    # Spero's two ranges, DeCAF's Caltech-101 rows without dropout and Razavian's mAPs
    for quote, count in (("Borthakur & Einhorn Table 1", 4), ("Sharma Exp. 2", 30),
                         ("Sharma Exp. 3", 20), ("DeCAF Caltech-101", 6),
                         ("Razavian Table 1", 2)):
        assert sum(WHERE[key][0] == quote for key in claimed) == count, quote


def _words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.skipif(not SEEDS.is_dir(), reason=f"no seed texts at {SEEDS}")
@pytest.mark.parametrize("quote", sorted(QUOTES))
def test_each_quote_is_verbatim_in_the_seed_text(quote):
    prefix, text = QUOTES[quote]
    (path,) = SEEDS.glob(f"{prefix}_*.txt")
    seed = path.read_text()
    for line in text.split("\n"):  # a table line by line, keeping its tabs
        assert line in seed.splitlines() or _words(line) in _words(seed), (quote, line)
