import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from transferlab.metrics import average_precision, mean_average_precision, mean_std


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_precision_equals_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(60) < 0.3
    scores = np.round(rng.random(60), 1)  # many tied scores
    assert average_precision(y, scores, "sklearn") == \
        pytest.approx(average_precision_score(y, scores))


def test_map_leaves_out_ignored_labels_and_labels_without_positives():
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    scores = np.array([[0.9, 0.1, 0.3], [0.2, 0.8, 0.2], [0.1, 0.7, 0.1]])
    full, per_label = mean_average_precision(y, scores, definition="sklearn")
    assert np.isnan(per_label[2]) and full == pytest.approx(np.mean(per_label[:2]))
    ignore = np.zeros_like(y, dtype=bool)
    ignore[2, 0] = True  # a "difficult" positive scored low
    masked, per_label = mean_average_precision(y, scores, ignore, definition="sklearn")
    assert per_label[0] == 1.0 and masked > full


# A hand case, ranked by score: positive, negative, negative, positive, positive (3
# positives). After each image (precision, recall): (1, 1/3), (1/2, 1/3), (1/3, 1/3),
# (1/2, 2/3), (3/5, 1).
# - sklearn, non-interpolated: precision at each positive, 1/3 of recall each:
#   (1 + 1/2 + 3/5) / 3 = 0.7
# - VOC2010+ devkit (VOCap): the envelope raises the precision at recall 2/3 to 3/5:
#   (1 + 3/5 + 3/5) / 3 = 0.7333...
# - VOC2007 devkit: best precision at recall >= t for t = 0, 0.1, ..., 1: 1 for
#   t <= 0.3 (4 points), 3/5 for t >= 0.4 (7 points): (4 + 7 * 0.6) / 11 = 0.74545...
HAND_LABELS = np.array([1, 0, 0, 1, 1])
HAND_SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5])


@pytest.mark.parametrize(("definition", "expected"), [
    ("sklearn", 0.7), ("voc12", 2.2 / 3), ("voc07", 8.2 / 11)])
def test_ap_definitions_give_the_devkit_values_of_a_hand_case(definition, expected):
    assert average_precision(HAND_LABELS, HAND_SCORES, definition) == pytest.approx(expected)
    # Only the ranking counts, not where it comes from.
    assert average_precision(HAND_LABELS[::-1], HAND_SCORES[::-1], definition) == \
        pytest.approx(expected)


def _devkit_ap(labels, scores, definition):
    """The devkit's steps written out as loops: rank, cumulate, then VOCap or 11 points."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable, like MATLAB
    tp = fp = 0
    rec, prec = [], []
    for i in order:
        tp, fp = tp + (labels[i] > 0), fp + (labels[i] <= 0)
        rec.append(tp / sum(labels > 0))
        prec.append(tp / (tp + fp))
    if definition == "voc07":
        return sum(max([p for p, r in zip(prec, rec, strict=True) if r >= t / 10], default=0) / 11
                   for t in range(11))
    mrec, mpre = [0.0, *rec, 1.0], [0.0, *prec, 0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1)
               if mrec[i + 1] != mrec[i])


@pytest.mark.parametrize("definition", ["voc07", "voc12"])
@pytest.mark.parametrize("seed", [0, 1])
def test_voc_ap_matches_the_devkit_steps_with_ties(definition, seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(50) < 0.3).astype(int)
    y[0] = 1
    scores = np.round(rng.random(50), 1)
    ours = average_precision(y, scores, definition)
    assert ours == pytest.approx(_devkit_ap(y, scores, definition))
    assert ours != pytest.approx(average_precision(y, scores, "sklearn"))


def test_training_scores_multilabel_targets_by_the_ap_definition_asked_for():
    import torch

    from transferlab.training.loop import evaluate

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x = torch.randn(40, 1, 2, 2)
    y = (torch.rand(40, 3) < 0.4).float()
    with torch.no_grad():
        scores = model(x).numpy()
    for definition in ("voc07", "voc12", "sklearn"):
        result = evaluate(model, x, y, ap=definition)
        want = np.mean([average_precision(y[:, j].numpy(), scores[:, j], definition)
                        for j in range(3)])
        assert result["map"] == pytest.approx(want) and result["ap_definition"] == definition
    with pytest.raises(ValueError, match="heads.ap"):
        evaluate(model, x, y)


def test_mean_std_is_the_sample_sd_with_ddof_1():
    values = [0.91, 0.87, 0.95, 0.88]
    stats = mean_std(values)
    assert stats["seeds"] == 4
    assert stats["mean"] == pytest.approx(np.mean(values))
    assert stats["std"] == pytest.approx(np.std(values, ddof=1))
    assert stats["std"] != pytest.approx(np.std(values))  # not the population sd
    assert mean_std([0.5]) == {"mean": 0.5, "std": 0.0, "seeds": 1}  # no spread to estimate
    with pytest.raises(ValueError, match="no values"):
        mean_std([])
