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


def test_folds_keep_each_group_whole_and_still_stratify():
    labels = np.array([0] * 12 + [1] * 12)
    groups = [f"patient{i // 2}" for i in range(24)]  # pairs: both knees of one patient
    folds = stratified_folds(labels, seed=0, groups=groups)
    for g in set(groups):
        assert len({int(folds[i]) for i, name in enumerate(groups) if name == g}) == 1
    assert folds.max() + 1 == 5
    for c in range(2):
        counts = np.bincount(folds[labels == c], minlength=5)
        assert counts.min() >= 2 and counts.max() - counts.min() <= 2
    # Without groups the same pairs are split across folds (what made out-of-fold scores optimistic).
    plain = stratified_folds(labels, seed=0)
    assert any(plain[2 * i] != plain[2 * i + 1] for i in range(12))


def test_an_empty_group_name_is_an_image_on_its_own_and_too_few_groups_fall_back_to_images():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    folds = stratified_folds(labels, seed=0, groups=[""] * 8)
    assert np.array_equal(folds, stratified_folds(labels, seed=0))
    one_patient_per_class = ["a"] * 4 + ["b"] * 4
    assert stratified_folds(labels, seed=0, groups=one_patient_per_class) is not None


def test_a_split_keeps_each_group_on_one_side():
    from transferapp.engine.data import Sample, stratified_split

    plain = [Sample(f"{i}.png", i % 2, f"k{i:02d}") for i in range(40)]
    grouped = [Sample(s.path, s.label, s.key, group=f"p{i // 4}") for i, s in enumerate(plain)]
    train, val = stratified_split(grouped, 0.25, seed=0)
    assert {s.group for s in train}.isdisjoint({s.group for s in val})
    assert {s.label for s in val} == {0, 1} and len(train) + len(val) == 40
    plain_train, plain_val = stratified_split(plain, 0.25, seed=0)
    assert {int(s.key[1:]) // 4 for s in plain_train} & {int(s.key[1:]) // 4 for s in plain_val}


def test_a_class_with_a_single_group_is_split_alone_and_the_others_keep_their_groups():
    labels = np.array([0, 0] + [1] * 8)
    groups = ["A", "A", "B", "B", "C", "C", "D", "D", "E", "E"]
    folds = stratified_folds(labels, seed=0, groups=groups)
    assert folds[0] != folds[1]  # class 0 is one patient: dealt as single images
    for g in "BCDE":
        members = [i for i, name in enumerate(groups) if name == g]
        assert len({int(folds[i]) for i in members}) == 1, g
