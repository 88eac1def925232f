import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from transferlab.metrics import average_precision, mean_average_precision, mean_std


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_precision_equals_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(60) < 0.3
    scores = np.round(rng.random(60), 1)  # many tied scores
    assert average_precision(y, scores) == pytest.approx(average_precision_score(y, scores))


def test_map_leaves_out_ignored_labels_and_labels_without_positives():
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    scores = np.array([[0.9, 0.1, 0.3], [0.2, 0.8, 0.2], [0.1, 0.7, 0.1]])
    full, per_label = mean_average_precision(y, scores)
    assert np.isnan(per_label[2]) and full == pytest.approx(np.mean(per_label[:2]))
    ignore = np.zeros_like(y, dtype=bool)
    ignore[2, 0] = True  # a "difficult" positive scored low
    masked, per_label = mean_average_precision(y, scores, ignore)
    assert per_label[0] == 1.0 and masked > full


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
