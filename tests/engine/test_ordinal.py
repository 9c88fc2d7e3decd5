"""Ordered classes (grades): the ordinal figures on hand-made confusion matrices, the natural order
of names, and a run whose classes come back in grade order."""
import numpy as np
import pytest

from transferapp.engine import TrainConfig, fit, folder_samples, stratified_split
from transferapp.engine import metrics as M
from transferapp.engine.ordinal import in_grade_order, natural_order


def _from_confusion(confusion):
    """(true, predicted) label arrays that give exactly this confusion matrix (rows true, columns predicted)."""
    pairs = [(t, p) for t, row in enumerate(confusion) for p, count in enumerate(row) for _ in range(count)]
    true, pred = zip(*pairs)
    return np.array(true), np.array(pred)


def test_a_perfect_grader_is_zero_grades_off_and_always_within_one():
    true, pred = _from_confusion([[3, 0, 0], [0, 2, 0], [0, 0, 5]])
    scores = M.ordinal_scores(true, pred)
    assert scores["mean_abs_grade_error"] == {"value": 0.0, "n": 10}
    assert scores["within_one_grade"]["value"] == 1.0 and scores["within_one_grade"]["k"] == 10


def test_grade_error_counts_how_far_each_wrong_answer_is():
    # Four grades, 12 images: 6 right, 3 one grade off, 2 two grades off, 1 three grades off.
    confusion = [[3, 1, 0, 1],   # a KL0 called KL4: three grades off
                 [1, 1, 1, 0],
                 [2, 0, 1, 0],   # two KL3s called KL0: two grades off each
                 [0, 0, 0, 1]]
    true, pred = _from_confusion(confusion)
    scores = M.ordinal_scores(true, pred)
    assert scores["mean_abs_grade_error"] == {"value": round((3 * 1 + 2 * 2 + 1 * 3) / 12, 4), "n": 12}
    within = scores["within_one_grade"]
    assert (within["k"], within["n"], within["value"]) == (9, 12, 0.75)
    low, high = M.wilson_interval(9, 12)
    assert within["ci"] == [round(low, 4), round(high, 4)]


def test_plain_accuracy_can_hide_what_the_grade_figures_show():
    # Same accuracy (50%), but one grader is always one grade off and the other three grades off.
    near = M.ordinal_scores(*_from_confusion([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1], [0, 0, 1, 1]]))
    far = M.ordinal_scores(*_from_confusion([[1, 0, 0, 1], [0, 1, 0, 1], [1, 0, 1, 0], [1, 0, 0, 1]]))
    assert near["within_one_grade"]["value"] == 1.0 and far["within_one_grade"]["value"] == 0.5
    assert near["mean_abs_grade_error"]["value"] < far["mean_abs_grade_error"]["value"]


def test_the_report_adds_grade_figures_only_for_ordered_classes():
    true, pred = _from_confusion([[2, 1], [0, 3]])
    probs = np.eye(2)[pred]
    keys, classes = [str(i) for i in range(len(true))], ["low", "high"]
    assert "within_one_grade" not in M.report(probs, true, keys, classes)
    ordered = M.report(probs, true, keys, classes, ordered=True)
    assert ordered["mean_abs_grade_error"]["value"] == round(1 / 6, 4) and ordered["within_one_grade"]["n"] == 6
    assert M.report(probs[:0], true[:0], [], classes, ordered=True)["mean_abs_grade_error"] == {"value": None, "n": 0}


def test_natural_order_reads_numbers_as_numbers():
    assert natural_order(["KL10", "KL2", "KL0", "kl3"]) == ["KL0", "KL2", "kl3", "KL10"]
    assert natural_order(["stage 12", "stage 9"]) == ["stage 9", "stage 12"]


def test_classes_are_put_in_grade_order_with_labels_renumbered():
    from transferapp.engine import Sample
    samples = [Sample("a.png", 0, "a"), Sample("b.png", 1, "b"), Sample("c.png", 2, "c")]
    classes, (relabelled,) = in_grade_order(["mild", "none", "severe"], ["none", "mild", "severe", "absent"], samples)
    assert classes == ["none", "mild", "severe"]
    assert [classes[s.label] for s in relabelled] == ["mild", "none", "severe"]  # each image keeps its class
    with pytest.raises(ValueError, match="does not place severe"):
        in_grade_order(["mild", "severe"], ["mild"], samples)


def test_the_order_lives_in_the_config_and_accepts_typed_text():
    assert TrainConfig.from_dict({"class_order": "KL0, KL2 ,KL3"}).class_order == ["KL0", "KL2", "KL3"]
    assert TrainConfig().class_order == []
    with pytest.raises(ValueError, match="class_order names a class twice"):
        TrainConfig(class_order=["KL0", "KL0"])


def test_an_ordered_run_lists_classes_in_grade_order_and_reports_grade_figures(shapes_dir, tmp_path):
    order = ["red_circle", "blue_triangle", "green_square"]  # not the folders' alphabetical order
    config = TrainConfig(preset="fast", image_size=64, batch_size=8, class_order=order)
    classes, samples, _ = folder_samples(shapes_dir)
    train, val = stratified_split(samples, config.val_fraction, config.seed)
    m = fit(train, val, classes, config, tmp_path / "out", cache_dir=tmp_path / "cache")
    assert m["classes"] == order and list(m["per_class"]) == order
    # Row i of the confusion matrix is grade i: its support is that class's images the headline counts
    # (a quick model retrained on every image is scored out of fold on train + validation: issue 32).
    supports = [sum(row) for row in m["confusion"]]
    assert supports == [sum(1 for s in train + val if classes[s.label] == name) for name in order]
    n_headline = len(train) + len(val)  # the grade figures count the same images as the headline
    assert m["mean_abs_grade_error"]["n"] == n_headline and m["within_one_grade"]["n"] == n_headline
