"""Which model is kept: the quick one, the fine-tuned one or their average, with no flip on noise."""
from __future__ import annotations

import json

import numpy as np
import pytest

from transferapp.engine import choice
from transferapp.engine.data import folder_samples, stratified_split
from transferapp.engine.fitting import fit
from transferapp.engine.paired import clopper_pearson, paired_difference
from transferapp.engine.predict import load_predictor


def _probs(labels: np.ndarray, right: np.ndarray, n_classes: int = 2, confidence: float = 0.8) -> np.ndarray:
    """Probabilities that put `confidence` on the true label where `right`, else on the next class."""
    answer = np.where(right, labels, (labels + 1) % n_classes)
    probs = np.full((len(labels), n_classes), (1 - confidence) / (n_classes - 1))
    probs[np.arange(len(labels)), answer] = confidence
    return probs


def _candidates(y, quick_right, fine_right):
    best = {"val_probs": _probs(y, fine_right), "row": {"val_accuracy": float(fine_right.mean()), "val_loss": 0.5}}
    return best, choice._candidates(_probs(y, quick_right), best, y)


def test_a_one_image_lead_of_the_quick_model_does_not_discard_fine_tuning():
    """153 validation images, as the ants/bees run that kept the quick model on 147 against 146: the
    two disagree on one image, which says nothing about new images."""
    y = np.arange(153) % 2
    quick_right = np.ones(153, dtype=bool)
    quick_right[:6] = False  # 147/153
    fine_right = quick_right.copy()
    fine_right[6] = False  # 146/153: one image the quick model got right and fine-tuning did not
    best, candidates = _candidates(y, quick_right, fine_right)
    kept, reason = choice._choose({"val_accuracy": 147 / 153, "val_loss": 0.4}, best, "", candidates, y)
    assert kept != "head"
    assert "interval" in reason and "153" in reason  # the page says by how much, and how sure


def test_the_quick_model_is_kept_when_it_is_clearly_better():
    y = np.arange(120) % 2
    quick_right = np.ones(120, dtype=bool)
    fine_right = quick_right.copy()
    fine_right[:15] = False  # 15 images only the quick model got right, none the other way
    best, candidates = _candidates(y, quick_right, fine_right)
    candidates["ensemble"] = candidates["finetune"]  # an average that follows fine-tuning's mistakes
    kept, reason = choice._choose({"val_accuracy": 1.0, "val_loss": 0.2}, best, "", candidates, y)
    assert kept == "head" and "clearly better" in reason


def test_fine_tuning_alone_is_kept_when_it_clearly_beats_the_average():
    y = np.arange(200) % 2
    quick_right = np.zeros(200, dtype=bool)  # a quick model that is always wrong, and sure of it
    best = {"val_probs": _probs(y, np.ones(200, dtype=bool), confidence=0.55), "row": {}}
    candidates = choice._candidates(_probs(y, quick_right, confidence=0.99), best, y)
    candidates["ensemble"] = _probs(y, np.arange(200) % 3 != 0)  # an average that is wrong on a third
    kept, _ = choice._choose({}, best, "", candidates, y)
    assert kept == "finetune"


@pytest.mark.parametrize("k, m, low, high", [(0, 10, 0.0, 0.3085), (3, 10, 0.0667, 0.6525), (6, 6, 0.5407, 1.0)])
def test_the_exact_interval_matches_published_values(k, m, low, high):
    assert clopper_pearson(k, m) == pytest.approx((low, high), abs=1e-4)


def test_six_to_nothing_is_clear_and_five_to_nothing_is_not():
    right = np.ones(100, dtype=bool)
    for wrong, clear in ((5, False), (6, True)):
        other = right.copy()
        other[:wrong] = False
        assert paired_difference(right, other)["clear"] is clear


def test_an_ensemble_artifact_predicts_what_fit_reported_and_exports_with_a_passing_self_test(shapes_dir, tmp_path,
                                                                                               monkeypatch):
    """The kept average is served by the predictor and by the export bundle, whose self-test
    checks it against the app's own answers."""
    from transferapp.engine import TrainConfig
    from transferapp.engine.export import export_bundle
    monkeypatch.setattr(choice, "_choose", lambda stage1_row, best, *_: ("ensemble", "Chosen by the test."))
    config = TrainConfig(preset="best", epochs=1, image_size=64, batch_size=8)
    classes, samples, _ = folder_samples(shapes_dir)
    train, val = stratified_split(samples, config.val_fraction, config.seed)
    m = fit(train, val, classes, config, tmp_path / "out")
    assert m["chosen_stage"] == "ensemble" and m["discarded_s"] == 0
    assert set(m["stage_choice"]["accuracy"]) == {"head", "finetune", "ensemble"}
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["ensemble"]["file"] == "quick_model.pt"
    predictor = load_predictor(tmp_path / "out")
    served = predictor.predict_paths([s.path for s in train[:3]])
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in served)
    samples = [(f"s{i}.png", s.path) for i, s in enumerate(val[:4])]
    result = export_bundle(tmp_path / "out", tmp_path / "export", name="shapes", samples=samples,
                           model_info={"project": "shapes", "version": 1, "base": config.base}, card="# shapes")
    assert result.passed, result.report


def test_training_spent_on_stages_not_in_the_kept_model_is_counted_as_discarded():
    from transferapp.engine.final import discarded_s
    rows = [{"phase": "features", "actual_s": 11.0}, {"phase": "head", "actual_s": 20.0},
            {"phase": "finetune", "actual_s": 583.0}, {"phase": "final", "actual_s": 84.0}]
    assert discarded_s("head", rows) == 583.0
    assert discarded_s("ensemble", rows) == 0 and discarded_s("finetune", rows) == 0


def test_a_stage_a_rule_stopped_before_half_its_plan_is_the_price_of_deciding_not_discarded_work():
    from transferapp.engine.final import discarded_s, stopped_early_s
    rows = [{"phase": "head", "actual_s": 3.0},
            {"phase": "finetune", "actual_s": 41.0, "stopped_early": True}]  # the payoff rule, 2 of 8 epochs
    assert discarded_s("head", rows) == 0 and stopped_early_s(rows) == 41.0
    rows[1]["stopped_early"] = False  # ran its plan, then lost: all of it was thrown away
    assert discarded_s("head", rows) == 41.0 and stopped_early_s(rows) == 0
