"""Answers a domain expert can trust: held-out test sets, figures with their evidence, prediction
sets, the novelty check and suspected mislabels."""
import json
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from transferapp.engine import (
    TrainConfig,
    choice,
    final,
    finetune,
    fit,
    fitting,
    folder_samples,
    load_predictor,
    state,
    stratified_split,
)
from transferapp.engine import calibrate as cal
from transferapp.engine import metrics as M
from transferapp.engine.curve import verdict

from .conftest import make_dataset
from .test_cli import _engine

# --- 1. a held-out test set stays held out ---------------------------------------------------

# fit()'s phases live in several modules (engine/fitting.py, choice.py, final.py, ...), each of which
# looks a name up in its own namespace: the spy replaces it in every one that has it.
PHASE_MODULES = (fitting, state, choice, final, finetune)


def _spy(monkeypatch, name, record):
    # Only a function of that name (final.py's `finetune` is the module, not the function).
    homes = [module for module in PHASE_MODULES if callable(getattr(module, name, None))
             and not isinstance(getattr(module, name), types.ModuleType)]
    assert homes, name
    original = getattr(homes[0], name)
    assert all(getattr(module, name) is original for module in homes), name

    def spy(*args, **kwargs):
        record.setdefault(name, []).append((args, kwargs))
        return original(*args, **kwargs)
    for module in homes:
        monkeypatch.setattr(module, name, spy)


def _keys(samples):
    return {s.key for s in samples}


def test_a_test_set_never_reaches_training_selection_calibration_or_retrain(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "data", per_class=8)
    classes, samples, _ = folder_samples(root)
    dev, test = stratified_split(samples, 0.25, seed=3)
    train, val = stratified_split(dev, 0.25, seed=0)
    config = TrainConfig(preset="best", image_size=64, batch_size=8, epochs=1)
    seen = {}
    for name in ("fit_linear_head", "finetune", "_refit", "calibrate", "_learning_curve"):
        _spy(monkeypatch, name, seen)
    metrics = fit(train, val, classes, config, tmp_path / "art", test=test, cache_dir=tmp_path / "cache")

    n_dev = len(train) + len(val)
    # Stage 1 (and the retrain's stage 1, when it runs one) fit on training (+ validation) feature rows only.
    rows = [args[0].shape[0] for args, _ in seen["fit_linear_head"]]
    assert rows[0] == len(train) and set(rows) <= {len(train), n_dev}
    (ft_args, _), = seen["finetune"]
    assert _keys(ft_args[2]) == _keys(train) and _keys(ft_args[3]) == _keys(val)
    (_, refit_kwargs), = seen["_refit"]
    assert _keys(refit_kwargs["train"]) | _keys(refit_kwargs["val"]) == _keys(dev)
    (_, cal_kwargs), = seen["calibrate"]
    assert set(cal_kwargs["dev_keys"]) == _keys(dev) and cal_kwargs["oof_features"].shape[0] == n_dev
    assert len(cal_kwargs["val_labels"]) == len(val)
    (curve_args, _), = seen["_learning_curve"]
    assert curve_args[0].shape[0] == len(train) and curve_args[2].shape[0] == len(val)
    # ...and the test images are scored apart, by the final model.
    assert metrics["evaluated_on"] == "test" and metrics["n_scored"] == len(test) == metrics["n_test"]
    assert metrics["validation"]["n_scored"] == len(val)
    suspects = {row["key"] for row in metrics["suspected_mislabels"]} | {row["key"] for row in metrics["odd_ones_out"]}
    assert not suspects & _keys(test)


def test_an_image_in_both_test_and_training_is_refused(tmp_path):
    root = make_dataset(tmp_path / "data", per_class=4)
    classes, samples, _ = folder_samples(root)
    with pytest.raises(ValueError, match="both in the test set"):
        fit(samples, [], classes, TrainConfig(preset="fast", image_size=64), tmp_path / "art", test=samples[:1])


def test_the_cli_holds_a_test_folder_out_and_reports_it_apart(tmp_path):
    make_dataset(tmp_path / "data" / "train", per_class=6)
    make_dataset(tmp_path / "data" / "test", per_class=2)
    (trained,) = _engine("train", str(tmp_path / "data"), "--out", str(tmp_path / "art"), "--preset", "fast",
                         "--image-size", "64")
    assert trained["n_test"] == 6 and trained["n_train"] + trained["n_val"] == 18
    assert trained["evaluated_on"] == "test" and trained["n_scored"] == 6
    low, high = trained["accuracy_ci"]
    assert low <= trained["accuracy"] <= high and trained["balanced_accuracy"] is not None
    # 6 images a class: no validation split, the other figure is out-of-fold over every training image.
    assert trained["n_val"] == 0 and trained["validation"]["out_of_fold"]
    assert trained["validation"]["n_scored"] == trained["n_train"] == 18
    assert all("/test/" not in path for path in trained["suspected_mislabels"])


# --- 2. every figure with its evidence ---------------------------------------------------------

@pytest.mark.parametrize("k, n, low, high", [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634),
                                            (10, 10, 0.7225, 1.0), (47, 50, 0.8378, 0.9794)])
def test_wilson_interval_matches_known_values(k, n, low, high):
    got = M.wilson_interval(k, n)
    assert got[0] == pytest.approx(low, abs=1e-4) and got[1] == pytest.approx(high, abs=1e-4)


def test_the_report_carries_n_interval_balanced_accuracy_and_baseline():
    labels = np.array([0] * 8 + [1] * 2)
    probs = np.eye(3)[np.array([0] * 8 + [0, 1])]
    r = M.report(probs, labels, [str(i) for i in range(10)], ["a", "b", "c"])
    assert r["n_scored"] == 10 and r["accuracy"] == 0.9
    assert r["accuracy_ci"][0] < 0.9 < r["accuracy_ci"][1]
    assert r["balanced_accuracy"] == pytest.approx(0.75)
    assert r["baseline"] == {"class": "a", "accuracy": 0.8}
    assert r["per_class"]["c"]["recall"] is None and r["per_class"]["c"]["support"] == 0  # "—", not 0.00
    assert r["confusion_keys"][1][0] == ["8"]


def test_two_classes_report_sensitivity_and_specificity_for_either_positive_class():
    labels, pred = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0]), np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 1])
    r = M.evidence(labels, pred, ["healthy", "sick"])
    assert r["binary"]["sick"]["sensitivity"]["value"] == 0.75 and r["binary"]["sick"]["sensitivity"]["n"] == 4
    assert r["binary"]["sick"]["specificity"]["value"] == pytest.approx(5 / 6, abs=1e-4)
    assert r["binary"]["healthy"]["sensitivity"]["value"] == pytest.approx(5 / 6, abs=1e-4)


def test_the_weakest_class_advice_describes_the_kept_model():
    curve = {"fractions": [0.5, 1.0], "accuracy": [0.9, 0.9], "per_class": {"ant": [0.7, 0.7], "bee": [1.0, 1.0]}}
    assert verdict(curve)["help_most"] == "ant"
    kept = verdict(curve, kept_recall={"ant": 0.95, "bee": 0.6})
    assert kept["help_most"] == "bee" and "“bee” is the weakest" in kept["verdict"]


# --- 3. out-of-fold probabilities and what they feed ------------------------------------------

def _blobs(rng, n, n_classes=3, dim=16, spread=1.6):
    centres = rng.normal(size=(n_classes, dim)) * spread
    y = rng.integers(0, n_classes, size=n)
    return centres[y] + rng.normal(size=(n, dim)), y, centres


def test_conformal_sets_cover_the_true_class_at_the_promised_rate():
    rng = np.random.default_rng(0)
    coverages = []
    for _ in range(200):
        # A known model on a noisy problem: softmax of negative squared distances to the centres.
        x, y, centres = _blobs(rng, 600, spread=0.6)
        logits = -((x[:, None, :] - centres[None]) ** 2).sum(-1) / 4
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        q = cal.conformal_threshold(cal.nonconformity(p[:100], y[:100]), 0.1)
        coverages.append(cal.set_quality(p[100:], y[100:], q)["coverage"])
    assert 0.89 <= np.mean(coverages) <= 0.93  # theory: between 0.9 and 0.9 + 1/(n+1)
    assert np.mean(coverages) < 1.0  # the sets are not trivially everything


def test_a_risk_level_below_one_over_n_plus_one_is_refused():
    with pytest.raises(ValueError, match="needs at least 19 calibration images"):
        cal.conformal_threshold(np.linspace(0, 1, 10), 0.05)
    assert cal.conformal_threshold(np.linspace(0, 1, 19), 0.05) == 1.0


def test_answers_read_likely_or_please_check_or_dont_know():
    assert cal.answer_text(["ant"]) == "Likely ant"
    assert cal.answer_text(["ant", "bee"]) == "ant or bee — please check"
    assert cal.answer_text(["ant"], unfamiliar=True).startswith("Don't know")
    assert cal.answer_text([]).startswith("Don't know")


def test_out_of_fold_ranking_finds_flipped_labels():
    rng = np.random.default_rng(1)
    x, y, _ = _blobs(rng, 300)
    flipped = rng.choice(300, size=30, replace=False)
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, 3, size=30)) % 3
    oof, folds = cal.oof_probabilities(x, noisy, 3, C=1.0)
    assert folds is not None and oof.shape == (300, 3)
    top = [int(r["key"]) for r in cal.suspected_mislabels(oof, noisy, [str(i) for i in range(300)])[:10]]
    assert len(set(top) & set(flipped.tolist())) >= 8


def test_the_novelty_check_flags_images_from_another_domain():
    rng = np.random.default_rng(2)
    x, y, _ = _blobs(rng, 200, dim=32)
    x += 6.0  # the training domain lives in one corner of feature space
    folds = np.arange(200) % 5
    threshold = np.quantile(cal.oof_novelty(x, folds), cal.NOVELTY_QUANTILE)
    bank = cal.normalise(x)
    familiar, _, _ = _blobs(np.random.default_rng(2), 200, dim=32)
    in_domain = cal.knn_distance(cal.normalise(familiar[:50] + 6.0), bank, cal.NOVELTY_K)
    other = cal.knn_distance(cal.normalise(rng.normal(size=(50, 32)) * 3 - 6.0), bank, cal.NOVELTY_K)
    assert (other > threshold).mean() == 1.0
    assert (in_domain > threshold).mean() <= 0.1


def test_reliability_of_perfect_confidence_has_zero_ece():
    p = np.eye(2)[[0, 1, 0, 1]]
    r = cal.reliability(p, np.array([0, 1, 0, 1]))
    assert r["ece"] == 0.0 and r["bins"][-1]["count"] == 4


def test_temperature_scaling_softens_an_overconfident_model():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=400)
    right = rng.random(400) < 0.7  # 70% right, but always 99% sure
    pred = np.where(right, y, 1 - y)
    p = np.where(np.eye(2)[pred] == 1, 0.99, 0.01)
    assert cal.fit_temperature(p, y) > 2


# --- the artifact answers honestly without the database ----------------------------------------

def _noise_image(seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, size=(64, 64, 3), dtype=np.uint8))


def _text_image():
    img = Image.new("RGB", (200, 260), "white")
    d = ImageDraw.Draw(img)
    for row in range(20):
        d.text((8, 8 + 12 * row), "Lorem ipsum dolor sit amet, consectetur", fill="black")
    return img


@pytest.fixture(scope="module")
def shapes_model(tmp_path_factory):
    root = make_dataset(tmp_path_factory.mktemp("shapes12"), per_class=12)
    classes, samples, _ = folder_samples(root)
    train, val = stratified_split(samples, 0.25, 0)
    out = tmp_path_factory.mktemp("trust_art")
    metrics = fit(train, val, classes, TrainConfig(preset="fast", image_size=64, batch_size=8), out,
                  cache_dir=tmp_path_factory.mktemp("cache"))
    return {"out": out, "metrics": metrics, "val": val, "classes": classes}


def test_the_artifact_answers_with_a_prediction_set_and_refuses_unfamiliar_images(shapes_model):
    predictor = load_predictor(shapes_model["out"])
    familiar = predictor.predict_paths([s.path for s in shapes_model["val"]])
    assert all(isinstance(r["prediction_set"], list) and isinstance(r["abstained"], bool) for r in familiar)
    assert sum(r["prediction_set"] == [r["top"]] and not r["unfamiliar"] for r in familiar) >= len(familiar) - 1
    assert familiar[0]["answer"].startswith("Likely ")
    strange = predictor.predict_images([_noise_image(), _text_image()])
    assert all(r["unfamiliar"] and r["abstained"] for r in strange)
    assert strange[0]["answer"] == "Don't know — this image is unlike the training images"
    meta = json.loads((shapes_model["out"] / "meta.json").read_text())
    assert meta["trust"]["novelty_threshold"] > 0 and meta["trust"]["n_calibration"] == 36
    with pytest.raises(ValueError, match="calibration images"):
        predictor.predict_images([_noise_image()], alpha=0.01)


def test_fit_reports_coverage_reliability_and_suspects(shapes_model):
    m = shapes_model["metrics"]
    assert m["trust"]["eval"]["n"] == len(shapes_model["val"]) and 0 <= m["trust"]["eval"]["coverage"] <= 1
    assert m["trust"]["reliability"]["ece"] is not None
    assert isinstance(m["suspected_mislabels"], list) and isinstance(m["odd_ones_out"], list)
    json.dumps(m)


def test_the_cli_prediction_carries_the_set_and_whether_it_abstained(shapes_model, tmp_path):
    _noise_image().save(tmp_path / "noise.png")
    (result,) = _engine("predict", str(shapes_model["out"]), str(tmp_path / "noise.png"))
    assert result["prediction_set"] == [] and result["abstained"] is True and result["unfamiliar"] is True


def test_a_model_with_too_few_calibration_images_still_predicts_and_says_so(shapes_model, tmp_path):
    import shutil
    out = tmp_path / "few"
    shutil.copytree(shapes_model["out"], out)
    arrays = dict(np.load(out / "trust.npz"))
    np.savez(out / "trust.npz", **{**arrays, "scores": arrays["scores"][:3]})
    predictor = load_predictor(out)
    (result,) = predictor.predict_paths([shapes_model["val"][0].path])
    assert result["calibrated"] is False and "too few images to say how sure" in result["answer"]
    with pytest.raises(ValueError, match="calibration images"):
        predictor.predict_paths([shapes_model["val"][0].path], alpha=0.1)


def test_the_export_carries_the_temperature_and_the_prediction_sets_of_the_app(shapes_model, tmp_path):
    import importlib.util
    import shutil

    from transferapp.engine.export import export_bundle

    artifact = tmp_path / "artifact"
    shutil.copytree(shapes_model["out"], artifact)
    meta = json.loads((artifact / "meta.json").read_text())
    meta["trust"]["temperature"] = 1.7  # as a fine-tuned model's calibration would set it
    (artifact / "meta.json").write_text(json.dumps(meta))
    samples = [(f"s{i}.png", s.path) for i, s in enumerate(shapes_model["val"][:6])]
    result = export_bundle(artifact, tmp_path / "export", name="shapes", samples=samples,
                           model_info={"project": "shapes", "version": 1, "base": "efficientnet_lite0"}, card="# shapes")
    assert result.passed, result.report  # the app's tempered probabilities, recomputed by the bundle
    config = json.loads((result.folder / "config.json").read_text())
    spec = importlib.util.spec_from_file_location("bundle_predict", result.folder / "predict.py")
    bundle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bundle)
    app = load_predictor(artifact)
    labels = json.loads((result.folder / "labels.json").read_text())
    for row in json.loads((result.folder / "samples.json").read_text()):  # the last: a grey square, "don't know"
        probabilities = np.array([row["probabilities"][label] for label in labels])
        (expected,) = app.predict_images([Image.open(result.folder / "samples" / row["file"]).convert("RGB")])
        answer = bundle.describe(row["file"], probabilities, labels, config, expected["unfamiliar"])
        assert answer["prediction_set"] == expected["prediction_set"] and answer["abstained"] == expected["abstained"]


# --- groups (one patient's images) stay whole in every split and fold ------------------------

def test_groups_stay_whole_in_the_split_the_choice_of_c_and_every_calibration_fold(tmp_path, monkeypatch):
    from transferapp.engine import head as head_module

    root = make_dataset(tmp_path / "data", per_class=12)
    classes, samples, _ = folder_samples(root)
    # "<colour>_<j>.png": j // 2 names a "patient" with two images of one class.
    def patient(path):
        kind, j = Path(path).stem.rsplit("_", 1)
        return f"{kind}-{int(j) // 2}"
    samples = [replace(s, group=patient(s.path)) for s in samples]
    train, val = stratified_split(samples, 0.25, seed=0)
    assert {s.group for s in train}.isdisjoint({s.group for s in val})
    calls = []
    original = head_module.stratified_folds

    def spy(labels, seed, max_folds=5, groups=None):
        folds = original(labels, seed, max_folds, groups)
        calls.append((groups, folds))
        return folds
    monkeypatch.setattr(head_module, "stratified_folds", spy)
    fit(train, val, classes, TrainConfig(preset="fast", image_size=64), tmp_path / "art", cache_dir=tmp_path / "cache")
    assert len(calls) >= 3  # C's internal CV, the cross-fitted retrain, the calibration's folds
    for groups, folds in calls:
        assert groups is not None and folds is not None
        fold_of = {}
        for g, f in zip(groups, folds):
            assert fold_of.setdefault(g, int(f)) == int(f), f"group {g} split across folds"


def test_the_quick_models_retrain_is_the_average_of_the_models_that_calibrate_it(tmp_path):
    root = make_dataset(tmp_path / "data", per_class=10)
    classes, samples, _ = folder_samples(root)
    train, val = stratified_split(samples, 0.25, seed=0)
    metrics = fit(train, val, classes, TrainConfig(preset="fast", image_size=64), tmp_path / "art",
                  cache_dir=tmp_path / "cache")
    assert metrics["refit"]["done"] and "average of 5 models" in metrics["refit"]["note"]
    import torch

    from transferapp.engine.features import embed
    from transferapp.engine.head import cross_fit
    from transferapp.engine.zoo import create_backbone

    dev = train + val
    x = embed(dev, create_backbone("efficientnet_lite0", image_size=64), cache_dir=tmp_path / "cache")
    y = np.array([s.label for s in dev])
    fitted = cross_fit(x, y, len(classes), metrics["stage1_c"], seed=0, groups=[""] * len(dev))
    served = torch.load(tmp_path / "art" / "model.pt", weights_only=True)
    assert torch.allclose(served["head.weight"], fitted.head.weight, atol=1e-5)


# --- a fine-tuned model is calibrated on images that chose nothing ----------------------------

def test_a_fine_tuned_model_is_calibrated_on_validation_images_set_aside_from_every_choice(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "data", per_class=30)
    classes, samples, _ = folder_samples(root)
    train, val = stratified_split(samples, 0.7, seed=0)  # 63 validation images: enough to set 21 aside
    monkeypatch.setattr(choice, "_choose", lambda stage1_row, best, *_: ("finetune", "Chosen by the test."))
    seen = {}
    for name in ("finetune", "fit_temperature", "calibrate", "_refit"):
        _spy(monkeypatch, name, seen)
    config = TrainConfig(preset="best", image_size=64, batch_size=16, epochs=1, refit_finetuned=True)
    metrics = fit(train, val, classes, config, tmp_path / "art", cache_dir=tmp_path / "cache")

    (ft_args, _), = seen["finetune"]
    choosing = _keys(ft_args[3])
    set_aside = _keys(val) - choosing
    assert len(set_aside) == metrics["n_calibration_set_aside"] == round(len(val) / 3)
    (_, refit_kwargs), = seen["_refit"]
    assert not (_keys(refit_kwargs["train"]) | _keys(refit_kwargs["val"])) & set_aside  # never trained on
    # The choice between the models rescales each on the images that chose (two fits); the kept model's
    # calibration temperature is fitted on the set-aside images alone.
    assert [len(args[1]) for args, _ in seen["fit_temperature"]] == [len(choosing), len(choosing), len(set_aside)]
    (_, cal_kwargs), = seen["calibrate"]
    assert cal_kwargs["set_aside"] and len(cal_kwargs["val_labels"]) == len(set_aside)
    assert "set aside" in metrics["trust"]["calibrated_on"]
    assert metrics["n_val"] == len(choosing)


def test_a_quick_model_gives_its_set_aside_images_back_to_validation(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "data", per_class=30)
    classes, samples, _ = folder_samples(root)
    train, val = stratified_split(samples, 0.7, seed=0)
    monkeypatch.setattr(choice, "_choose", lambda stage1_row, best, *_: ("head", "Chosen by the test."))
    config = TrainConfig(preset="best", image_size=64, batch_size=16, epochs=1)
    metrics = fit(train, val, classes, config, tmp_path / "art", cache_dir=tmp_path / "cache")
    assert metrics["n_val"] == len(val) and metrics["n_calibration_set_aside"] == 0
    assert "out-of-fold" in metrics["trust"]["calibrated_on"]
