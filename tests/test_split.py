import numpy as np
import pytest

from transferlab.data.split import nested_subsample, split_classes, stratified_test_split


def test_fixed_split_keeps_the_given_lists():
    a, b = split_classes(list(range(10)), "fixed", 0, (0, 1, 2, 3, 4), (5, 6, 7, 8, 9))
    assert a == [0, 1, 2, 3, 4] and b == [5, 6, 7, 8, 9]


def test_fixed_split_refuses_classes_the_dataset_lacks():
    with pytest.raises(ValueError, match=r"\[12\]"):
        split_classes(list(range(10)), "fixed", 0, (0, 12), (5,))


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_random_split_gives_disjoint_halves_that_depend_on_the_seed(seed):
    a, b = split_classes(list(range(10)), "random", seed)
    assert len(a) == len(b) == 5
    assert not set(a) & set(b) and set(a) | set(b) == set(range(10))
    assert (a, b) == split_classes(list(range(10)), "random", seed)


def test_random_split_differs_between_seeds():
    splits = {tuple(split_classes(list(range(10)), "random", s)[0]) for s in range(6)}
    assert len(splits) > 1


def test_test_split_is_stratified_and_disjoint():
    labels = np.repeat(np.arange(4), [100, 50, 20, 10])
    train, test = stratified_test_split(labels, 0.3, seed=3)
    assert not set(train) & set(test)
    assert len(train) + len(test) == len(labels)
    assert np.bincount(labels[test]).tolist() == [30, 15, 6, 3]


def test_test_split_is_deterministic_by_seed():
    labels = np.repeat(np.arange(3), 40)
    a = stratified_test_split(labels, 0.25, 5)
    b = stratified_test_split(labels, 0.25, 5)
    c = stratified_test_split(labels, 0.25, 6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[1], c[1])


def test_subsamples_are_per_class_and_nested():
    labels = np.repeat(np.arange(5), 30)
    two = nested_subsample(labels, 2, seed=1)
    five = nested_subsample(labels, 5, seed=1)
    assert np.bincount(labels[two]).tolist() == [2] * 5
    assert np.bincount(labels[five]).tolist() == [5] * 5
    assert set(two) <= set(five)


def test_subsample_zero_means_all_and_seed_changes_the_draw():
    labels = np.repeat(np.arange(3), 10)
    assert len(nested_subsample(labels, 0, 0)) == 30
    draws = {tuple(nested_subsample(labels, 3, s)) for s in range(5)}
    assert len(draws) > 1


def test_subsample_larger_than_a_class_is_refused():
    labels = np.repeat(np.arange(2), [10, 3])
    with pytest.raises(ValueError, match="class 1 has 3"):
        nested_subsample(labels, 4, 0)


def test_prepared_digits_split(digits_tasks):
    source, target, meta = digits_tasks
    assert source.classes == [0, 1, 2, 3, 4] and target.classes == [5, 6, 7, 8, 9]
    assert source.x_train.dtype == np.uint8 and source.image_shape == (1, 8, 8)
    # Labels are re-indexed 0..4 and every class has a test part of about 30 %.
    for task in (source, target):
        train = np.bincount(task.y_train)
        test = np.bincount(task.y_test)
        assert len(train) == len(test) == 5
        assert np.all(np.abs(test / (train + test) - 0.3) < 0.01)
    assert sum(meta["target_train_per_class"]) == len(target.y_train)


def test_multilabel_subsamples_cover_every_label_and_are_nested():
    from transferlab.data.split import nested_subsample_multilabel

    rng = np.random.default_rng(0)
    labels = (rng.random((200, 4)) < 0.3).astype(np.uint8)
    small = nested_subsample_multilabel(labels, 2, seed=1)
    large = nested_subsample_multilabel(labels, 5, seed=1)
    assert set(small) <= set(large)
    assert (labels[small].sum(0) >= 2).all() and (labels[large].sum(0) >= 5).all()
    assert np.array_equal(small, nested_subsample_multilabel(labels, 2, seed=1))
    with pytest.raises(ValueError, match="label 0"):
        nested_subsample_multilabel(labels[:3], 50, seed=1)


def test_centre_crop_keeps_the_middle_window():
    from transferlab.data.prepared import TaskData, center_cropped

    x = np.arange(2 * 1 * 8 * 8, dtype=np.uint8).reshape(2, 1, 8, 8)
    task = TaskData([0, 1], x, np.array([0, 1]), x, np.array([0, 1]), 255)
    cropped = center_cropped(task, 4)
    assert cropped.image_shape == (1, 4, 4)
    assert np.array_equal(cropped.x_test[0, 0], x[0, 0, 2:6, 2:6])
    assert center_cropped(task, 0) is task


def test_a_class_with_a_single_image_is_refused_by_name():
    labels = np.array([0, 0, 0, 1, 2, 2, 2])
    with pytest.raises(ValueError, match=r"class 1 has 1 image; a class needs at least 2"):
        stratified_test_split(labels, 0.3, seed=0)
    with pytest.raises(ValueError, match=r"class 'c6' of dataset imagefolder has 1 image"):
        stratified_test_split(labels, 0.3, seed=0, required=[0, 1],
                              name_of=lambda c: f"class 'c{c + 5}' of dataset imagefolder")
    with pytest.raises(ValueError, match="class 7 has 0 images"):
        stratified_test_split(labels, 0.3, seed=0, required=[0, 7])
    # a class nobody uses may have one image: it goes to train, the others are split as ever
    train, test = stratified_test_split(labels, 0.3, seed=0, required=[0, 2])
    assert 3 in train and 3 not in test
    assert np.bincount(labels[test], minlength=3).tolist() == [1, 0, 1]


def test_every_used_class_gets_a_test_image():
    labels = np.repeat(np.arange(6), [2, 3, 4, 5, 6, 40])
    train, test = stratified_test_split(labels, 0.2, seed=1)
    assert (np.bincount(labels[test]) >= 1).all() and (np.bincount(labels[train]) >= 1).all()
