import numpy as np

from transferapp.engine.sampling import class_orders, stratified_folds, stratified_subset

LABELS = np.array([0] * 10 + [1] * 6 + [2] * 4)


def test_the_same_seed_gives_the_same_orders_and_another_seed_does_not():
    a, b, c = class_orders(LABELS, 3), class_orders(LABELS, 3), class_orders(LABELS, 4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)
    assert sorted(np.concatenate(list(a.values()))) == list(range(len(LABELS)))


def test_folds_deal_every_class_evenly_and_need_two_images_per_class():
    folds = stratified_folds(LABELS, seed=0)
    assert folds.max() + 1 == 4  # the smallest class has 4 images
    for c in range(3):
        counts = np.bincount(folds[LABELS == c], minlength=4)
        assert counts.max() - counts.min() <= 1
    assert stratified_folds(np.array([0, 0, 1]), seed=0) is None


def test_a_subset_keeps_the_same_share_of_every_class_with_a_floor():
    mask = stratified_subset(LABELS, 0.5, seed=1)
    assert [int(mask[LABELS == c].sum()) for c in range(3)] == [5, 3, 2]
    tiny = stratified_subset(LABELS, 0.1, seed=1)
    assert [int(tiny[LABELS == c].sum()) for c in range(3)] == [2, 2, 2]
