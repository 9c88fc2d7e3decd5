"""The agreement figures (#26): Cohen's kappa equals scikit-learn's, Fleiss' kappa equals Fleiss'
(1971) worked example and a brute-force formula, intervals cover the estimate, degenerate cases
say why, and a study's reads from the database give the same figures."""
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from tests.factories import member, project_with_images
from transferapp.models import StudyImage
from transferapp.studies import agreement, studies
from transferapp.studies import kappa as stats

MISSING = stats.MISSING


def _noisy_readers(rng, n, k, readers, agree=0.7, missing=0.1):
    truth = rng.integers(0, k, n)
    codes = np.column_stack([np.where(rng.random(n) < agree, truth, rng.integers(0, k, n)) for _ in range(readers)])
    codes[rng.random(codes.shape) < missing] = MISSING
    return truth, codes


@pytest.mark.parametrize("seed", range(6))
def test_cohen_kappa_equals_scikit_learn_on_the_images_both_read_and_its_interval_covers_it(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 6))
    _, codes = _noisy_readers(rng, int(rng.integers(30, 400)), k, 2, agree=rng.uniform(0.2, 0.95))
    a, b = codes[:, 0], codes[:, 1]
    found = stats.cohen(a, b, k)
    both = (a != MISSING) & (b != MISSING)
    assert found["n"] == both.sum()
    assert found["kappa"] == pytest.approx(cohen_kappa_score(a[both], b[both]), abs=1e-9)
    low, high = found["interval"]
    assert low <= found["kappa"] <= high and high - low < 0.5


def test_the_interval_is_the_same_on_every_call_and_narrows_with_more_images():
    rng = np.random.default_rng(7)
    _, small = _noisy_readers(rng, 60, 3, 2)
    _, large = _noisy_readers(rng, 3000, 3, 2)
    assert stats.cohen(small[:, 0], small[:, 1], 3) == stats.cohen(small[:, 0], small[:, 1], 3)
    width = [np.diff(stats.cohen(c[:, 0], c[:, 1], 3)["interval"])[0] for c in (small, large)]
    assert width[1] < width[0] / 3


# Fleiss (1971), as worked on Wikipedia's "Fleiss' kappa" page: 10 subjects, 14 raters, 5 categories.
FLEISS_1971 = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])


def _fleiss_brute_force(counts):
    """Fleiss' formula written out subject by subject, as in the paper (no shared code with kappa.py)."""
    n_subjects, raters = len(counts), sum(counts[0])
    p_i = [(sum(c * c for c in row) - raters) / (raters * (raters - 1)) for row in counts]
    p_j = [sum(row[j] for row in counts) / (n_subjects * raters) for j in range(len(counts[0]))]
    p_bar, p_e = sum(p_i) / n_subjects, sum(p * p for p in p_j)
    return (p_bar - p_e) / (1 - p_e)


def test_fleiss_kappa_of_the_worked_example_is_0_210():
    found = stats.fleiss(FLEISS_1971)
    assert round(found["kappa"], 3) == 0.210
    assert found["kappa"] == pytest.approx(_fleiss_brute_force(FLEISS_1971.tolist()), abs=1e-12)
    assert found["interval"][0] <= found["kappa"] <= found["interval"][1]


@pytest.mark.parametrize("seed", range(4))
def test_fleiss_kappa_equals_the_brute_force_formula_from_reads(seed):
    rng = np.random.default_rng(100 + seed)
    _, codes = _noisy_readers(rng, 200, 4, int(rng.integers(3, 6)), missing=0)
    counts = stats.category_counts(codes, 4)
    expected = _fleiss_brute_force(counts.tolist())
    assert stats.fleiss(counts)["kappa"] == pytest.approx(expected, abs=1e-12)
    with_model = np.column_stack([codes, rng.integers(0, 4, len(codes))])  # a study's table: the model's column last
    found = stats.Resampled(with_model, 4).fleiss(list(range(codes.shape[1])))
    assert found["kappa"] == pytest.approx(expected, abs=1e-12)
    assert found["interval"][0] <= found["kappa"] <= found["interval"][1]


def test_with_two_readers_fleiss_and_cohen_are_close_and_specific_agreement_is_positive_agreement():
    a = np.array([0, 0, 0, 1, 1, 0, 1, 0, 0, 1])
    b = np.array([0, 0, 1, 1, 1, 0, 0, 0, 0, 1])
    codes = np.column_stack([a, b])
    per_class = stats.specific_agreement(codes, 2)
    # 2 n_jj / (n_j. + n_.j): class 0: 2*5/(6+6); class 1: 2*3/(4+4)
    assert per_class[0]["agreement"] == pytest.approx(10 / 12) and per_class[1]["agreement"] == pytest.approx(6 / 8)
    assert stats.fleiss(stats.category_counts(codes, 2))["kappa"] == pytest.approx(cohen_kappa_score(a, b), abs=0.05)


def test_degenerate_cases_say_why_instead_of_nan():
    one_class = np.zeros(20, dtype=int)
    same = stats.cohen(one_class, one_class, 3)
    assert same["kappa"] is None and "undefined" in same["problem"] and same["observed"] == 1.0
    lonely = stats.cohen(np.array([0, MISSING, 1]), np.array([MISSING, 1, 1]), 2)
    assert lonely["kappa"] is None and "fewer than 2 images" in lonely["problem"]
    all_same = stats.fleiss(stats.category_counts(np.zeros((5, 3), dtype=int), 2))
    assert all_same["kappa"] is None and "undefined" in all_same["problem"]
    assert stats.fleiss(np.zeros((1, 2), dtype=int))["problem"].startswith("fewer than 2")


def test_the_majority_leaves_ties_out():
    codes = np.array([[0, 0, 1], [0, 1, MISSING], [2, 2, 2], [MISSING, MISSING, MISSING]])
    assert stats.majority(codes, 3).tolist() == [0, MISSING, 2, MISSING]


def _table(labels, model=None, adjudicated=None, classes=("a", "b", "c")):
    n = len(labels)
    return agreement.ReadsTable(image_ids=list(range(1, n + 1)), readers=["ann", "bob", "cy"][:len(labels[0])],
                                labels=labels, model=model or [""] * n, adjudicated=adjudicated or [""] * n,
                                classes=list(classes))


def test_model_versus_readers_in_one_table_with_a_sentence_from_the_difference_interval():
    rng = np.random.default_rng(3)
    truth, codes = _noisy_readers(rng, 600, 3, 3, agree=0.8, missing=0)
    model = np.where(rng.random(600) < 0.8, truth, rng.integers(0, 3, 600))
    names = ["a", "b", "c"]
    table = _table([[names[c] for c in row] for row in codes], model=[names[c] for c in model],
                   adjudicated=[names[t] if i % 2 else "" for i, t in enumerate(truth)])
    figures = agreement.compute(table)
    assert [p["readers"] for p in figures["pairs"]] == [["ann", "bob"], ["ann", "cy"], ["bob", "cy"]]
    assert [m["reader"] for m in figures["model"]] == ["ann", "bob", "cy"]
    assert figures["model"][0]["kappa"] == pytest.approx(cohen_kappa_score(model, codes[:, 0]), abs=1e-9)
    majority = stats.majority(codes, 3)
    known = majority != MISSING
    assert figures["model_accuracy"]["majority"]["accuracy"] == pytest.approx((model[known] == majority[known]).mean())
    assert figures["model_accuracy"]["adjudicated"]["n"] == 300
    others = stats.majority(codes[:, 1:], 3)
    ok = others != MISSING
    assert figures["readers_against_others"][0]["accuracy"] == pytest.approx((codes[ok, 0] == others[ok]).mean())
    comparison = figures["comparison"]
    low, high = comparison["interval"]
    assert low <= comparison["difference"] <= high
    assert comparison["difference"] == pytest.approx(np.mean([m["kappa"] for m in figures["model"]])
                                                     - np.mean([p["kappa"] for p in figures["pairs"]]), abs=1e-9)
    assert "95% interval" in comparison["sentence"]


@pytest.mark.parametrize("gap,start", [
    ({"difference": 0.01, "interval": [-0.04, 0.05], "n": 500}, "The model agrees with each reader about as well"),
    ({"difference": 0.01, "interval": [-0.2, 0.25], "n": 20}, "These images cannot yet tell"),
    ({"difference": -0.3, "interval": [-0.4, -0.2], "n": 500}, "The model agrees with the readers less"),
    ({"difference": 0.2, "interval": [0.1, 0.3], "n": 500}, "The model agrees with the readers more"),
    ({"difference": None, "interval": None, "n": 1, "problem": "fewer than 2 images"}, "No comparison"),
])
def test_the_sentence_says_about_as_well_only_when_the_whole_interval_is_inside_the_margin(gap, start):
    assert agreement.comparison_sentence(gap, readers=3).startswith(start)


def test_the_csv_rows_hold_each_reader_the_majority_the_adjudicated_label_and_the_model():
    table = _table([["a", "a"], ["a", "b"], ["", "c"]], model=["a", "b", ""], adjudicated=["", "b", ""])
    header, rows = agreement.csv_rows(table)
    assert header == ["image", "ann", "bob", "majority", "adjudicated", "model"]
    assert rows == [[1, "a", "a", "a", "", "a"], [2, "a", "b", "", "b", "b"], [3, "", "c", "c", "", ""]]
    assert agreement.confusion(table, "ann", "bob") == [[1, 1, 0], [0, 0, 0], [0, 0, 0]]
    assert agreement.confusion(table, "ann", "mallory") is None


@pytest.mark.django_db
def test_a_studys_reads_from_the_database_give_scikit_learns_kappa(user):
    project = project_with_images(user, per_class=6)
    ann, bob = member(project, "ann", "labeller"), member(project, "bob", "labeller")
    ids = list(project.images.order_by("pk").values_list("pk", flat=True))
    study = studies.study_create(project=project, name="Double", readers=[ann, bob], images=ids, created_by=user)
    said = {ann: ["red"] * 6 + ["blue"] * 6, bob: ["red"] * 4 + ["blue"] * 7 + ["red"]}
    for reader, labels in said.items():
        for item_id, label in zip(study.items.values_list("pk", flat=True), labels):
            studies.read(study=study, reader=reader, item_id=item_id, label=label)
    StudyImage.objects.filter(study=study, position__lt=6).update(model_label="red")
    StudyImage.objects.filter(study=study, position__gte=6).update(model_label="blue")
    figures = agreement.for_study(study)
    assert figures["interim"] and figures["n_images"] == 12 and figures["readers"] == ["ann", "bob"]
    assert figures["pairs"][0]["kappa"] == pytest.approx(cohen_kappa_score(said[ann], said[bob]), abs=1e-9)
    assert figures["model"][0]["kappa"] == pytest.approx(1.0) and figures["model"][0]["reader"] == "ann"
    assert figures["fleiss_kappa"] is not None


def test_a_study_nobody_has_read_yet_gives_reasons_not_numbers():
    figures = agreement.compute(_table([["", ""], ["", ""]], model=["a", "b"]))
    assert figures["pairs"][0]["kappa"] is None and "fewer than 2 images" in figures["pairs"][0]["problem"]
    assert figures["fleiss_kappa"] is None and figures["fleiss"]["problem"]
    assert figures["model"][0]["kappa"] is None and figures["model_accuracy"]["majority"]["accuracy"] is None
    assert figures["comparison"]["sentence"].startswith("No comparison of the model with the readers yet")
    assert [row["agreement"] for row in figures["per_class"]] == [None, None, None]


def test_the_forest_plot_draws_rows_with_a_kappa_inside_the_plot_and_nothing_without():
    from transferapp.studies import forest
    chart = forest.forest([{"label": "ann · bob", "kappa": 0.5, "interval": [-0.3, 0.9]},
                           {"label": "ann · cy", "kappa": None, "interval": None}])
    (row,) = chart["rows"]
    assert chart["plot"]["x0"] <= row["x_lo"] < row["cx"] < row["x_hi"] <= chart["plot"]["x1"]
    assert chart["ticks"][0]["text"] == "-0.4" and chart["ticks"][-1]["text"] == "1.0"
    assert forest.forest([{"label": "x", "kappa": None, "interval": None}]) is None


def test_landis_and_koch_bands():
    assert [agreement.band(v) for v in (-0.1, 0.0, 0.2, 0.21, 0.55, 0.8, 0.95, None)] == [
        "poor", "slight", "slight", "fair", "moderate", "substantial", "almost perfect", ""]
