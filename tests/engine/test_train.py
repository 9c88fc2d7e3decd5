import json

import numpy as np
import pytest
import torch

from transferapp.engine import Sample, TrainingCancelled, fit, folder_samples, load_predictor, stratified_split
from transferapp.engine.features import embed
from transferapp.engine.head import class_weights
from transferapp.engine.zoo import create_backbone, precision

from .conftest import make_dataset

METRIC_KEYS = {"accuracy", "n_train", "n_val", "classes", "per_class", "confusion", "mistakes", "history",
               "chosen_stage", "chosen_reason", "seconds", "first_model_s", "first_model_accuracy", "base", "config"}


def _split(data_dir, config):
    classes, samples, _ = folder_samples(data_dir)
    train, val = stratified_split(samples, config.val_fraction, config.seed)
    return classes, train, val


@pytest.fixture(scope="module")
def fast_run(shapes_dir, tmp_path_factory):
    from transferapp.engine import TrainConfig
    config = TrainConfig(preset="fast", image_size=64, batch_size=8)
    classes, train, val = _split(shapes_dir, config)
    out = tmp_path_factory.mktemp("artifact")
    events = []
    metrics = fit(train, val, classes, config, out, cache_dir=tmp_path_factory.mktemp("cache"),
                  on_progress=events.append)
    return {"metrics": metrics, "out": out, "val": val, "classes": classes, "events": events, "config": config}


def test_a_model_trains_and_reports_everything(fast_run):
    m = fast_run["metrics"]
    assert METRIC_KEYS <= set(m)
    assert m["accuracy"] == 1.0  # coloured shapes are trivially separable
    assert m["n_val"] == 3 and m["n_train"] == 15
    assert m["chosen_stage"] == "head" and m["chosen_reason"]
    assert np.array(m["confusion"]).sum() == 18  # the headline: out-of-fold over every image (see below)
    assert set(m["per_class"]) == set(fast_run["classes"])
    json.dumps(m)  # must be JSON-serialisable as is


def test_a_quick_model_retrained_on_every_image_leads_with_the_out_of_fold_estimate_of_what_it_serves(fast_run):
    """Issue 32 item 1: the served model is the average of the cross-fitted fold models, trained on
    all 18 images; the headline is their out-of-fold estimate on those 18, the validation figure
    (3 images, before the retrain) stands beside it, and the artifact lists the 18 images' hashes."""
    from transferapp.engine.features import file_digest
    from transferapp.engine.final import TRAINED_ON
    m = fast_run["metrics"]
    assert m["refit"]["done"] and m["evaluated_on"] == "out_of_fold" and m["refit_out_of_fold"]
    assert m["headline_model"] == "served" and m["n_scored"] == 18 == m["refit"]["n_images"]
    assert m["n_correct"] == round(m["accuracy"] * 18)
    assert m["validation"]["n_scored"] == 3 and not m["validation"]["out_of_fold"]
    listed = set((fast_run["out"] / TRAINED_ON).read_text().split())
    assert len(listed) == 18 and {file_digest(s.path) for s in fast_run["val"]} <= listed
    assert load_predictor(fast_run["out"]).trained_on == listed


def test_without_the_retrain_the_headline_is_validation_and_validation_images_were_not_trained_on(shapes_dir, tmp_path):
    from transferapp.engine import TrainConfig
    from transferapp.engine.features import file_digest
    from transferapp.engine.final import TRAINED_ON
    config = TrainConfig(preset="fast", image_size=64, refit=False)
    classes, train, val = _split(shapes_dir, config)
    m = fit(train, val, classes, config, tmp_path / "out", cache_dir=tmp_path / "cache")
    assert m["evaluated_on"] == "validation" and m["headline_model"] == "served" and m["n_scored"] == 3
    listed = set((tmp_path / "out" / TRAINED_ON).read_text().split())
    assert listed == {file_digest(s.path) for s in train}


def test_the_artifact_is_enough_to_predict_the_same_probabilities(fast_run):
    out, val = fast_run["out"], fast_run["val"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["classes"] == fast_run["classes"] and meta["base"] == "efficientnet_lite0"
    assert {"torch", "torchvision", "timm"} <= set(meta["versions"])
    predictor = load_predictor(out)
    results = predictor.predict_paths([s.path for s in val])
    probs = np.array([[r["probabilities"][c] for c in predictor.classes] for r in results])
    # A "fast" model is a linear head on the frozen features: the artifact's head on the cached
    # features must give the same probabilities as predicting from the image files.
    x = embed(val, create_backbone("efficientnet_lite0", image_size=64))
    state = torch.load(out / "model.pt")
    head = torch.nn.Linear(x.shape[1], 3)
    head.load_state_dict({"weight": state["head.weight"], "bias": state["head.bias"]})
    expected = torch.softmax(head(torch.as_tensor(x)), -1).detach().numpy()
    # The artifact predicts in float32 (so an ONNX export matches the app exactly); where the
    # features were computed under bf16 autocast (CPUs with fast bf16), they differ by up to ~1e-2.
    atol = 1e-4 if precision(torch.device("cpu")) == "fp32" else 2e-2
    np.testing.assert_allclose(probs, expected, atol=atol)
    assert [r["top"] for r in results] == [fast_run["classes"][s.label] for s in val]


def test_progress_reports_features_and_the_first_model(fast_run):
    events = fast_run["events"]
    assert {"stage", "fraction", "epoch", "total_epochs", "message"} <= set(events[0])
    assert any(e["stage"] == "features" and "Computing image features" in e["message"] for e in events)
    assert any(e.get("history") for e in events)
    assert events[-1]["fraction"] == 1.0
    assert [e["fraction"] for e in events] == sorted(e["fraction"] for e in events)


def test_rerun_gives_the_same_split_and_model(fast_run, shapes_dir, tmp_path):
    config = fast_run["config"]
    classes, train, val = _split(shapes_dir, config)  # the split rebuilt from scratch
    assert val == fast_run["val"]
    fit(train, val, classes, config, tmp_path / "again", cache_dir=tmp_path / "cache")  # cold cache
    a = load_predictor(fast_run["out"]).predict_paths([s.path for s in val])
    b = load_predictor(tmp_path / "again").predict_paths([s.path for s in val])
    assert [r["probabilities"] for r in a] == [pytest.approx(r["probabilities"], abs=1e-6) for r in b]


def test_best_preset_fine_tunes_and_records_which_stage_it_kept(shapes_dir, tmp_path):
    from transferapp.engine import TrainConfig
    # Without the retrain on all images, the artifact is exactly the model validation scored.
    config = TrainConfig(preset="best", epochs=2, image_size=64, batch_size=8, refit=False)
    classes, train, val = _split(shapes_dir, config)
    m = fit(train, val, classes, config, tmp_path / "out", cache_dir=tmp_path / "cache")
    assert m["chosen_stage"] in ("head", "finetune", "ensemble") and m["chosen_reason"]
    stages = [h["stage"] for h in m["history"]]
    assert stages[0] == "head" and "finetune" in stages
    assert {"epoch", "train_loss", "val_loss", "train_accuracy", "val_accuracy"} <= set(m["history"][-1])
    results = load_predictor(tmp_path / "out").predict_paths([s.path for s in val])
    accuracy = np.mean([r["top"] == classes[s.label] for r, s in zip(results, val)])
    assert accuracy == pytest.approx(m["accuracy"])


def test_the_chosen_recipe_is_retrained_on_every_image(shapes_dir, tmp_path):
    from transferapp.engine import TrainConfig
    config = TrainConfig(preset="best", epochs=2, image_size=64, batch_size=8, refit_finetuned=True)
    classes, train, val = _split(shapes_dir, config)
    events = []
    m = fit(train, val, classes, config, tmp_path / "out", cache_dir=tmp_path / "cache", on_progress=events.append)
    refit = m["refit"]
    assert refit["done"] and refit["n_images"] == len(train) + len(val)
    assert "retrained on all" in m["chosen_reason"] and "retrained on all" in m["strategy"]
    final = torch.load(tmp_path / "out" / "model.pt")
    first = torch.load(tmp_path / "out" / "stage1_head.pt")
    assert not torch.equal(final["head.weight"], first["weight"])  # the head saw the validation images too
    assert [e["fraction"] for e in events] == sorted(e["fraction"] for e in events)


def _force_fine_tuned_choice(monkeypatch):
    """Shapes are so easy that the quick model usually wins; these tests are about what follows a
    fine-tuned choice, so that choice is made for them (the training itself is real)."""
    from transferapp.engine import choice
    monkeypatch.setattr(choice, "_choose", lambda stage1_row, best, *_: ("finetune", "Chosen by the test."))


def test_a_fine_tuned_choice_is_retrained_for_its_validated_epochs(shapes_dir, tmp_path, monkeypatch):
    from transferapp.engine import TrainConfig
    _force_fine_tuned_choice(monkeypatch)
    config = TrainConfig(preset="best", epochs=2, image_size=64, batch_size=8, refit_finetuned=True)
    classes, train, val = _split(shapes_dir, config)
    events = []
    m = fit(train, val, classes, config, tmp_path / "out", on_progress=events.append)
    assert m["chosen_stage"] == "finetune" and m["refit"]["done"]
    assert 1 <= m["refit"]["epochs"] <= 2
    refit_events = [e for e in events if e["stage"] == "refit"]
    assert refit_events[-1]["epoch"] == m["refit"]["epochs"]
    assert f"Retraining on all {len(train) + len(val)} images" in refit_events[-1]["message"]
    assert [e["fraction"] for e in events] == sorted(e["fraction"] for e in events)


def test_a_retrain_that_cannot_finish_in_the_budget_is_skipped_not_started(shapes_dir, tmp_path, monkeypatch):
    from transferapp.engine import TrainConfig, choice
    _force_fine_tuned_choice(monkeypatch)
    # The synthetic case: the measured epochs price the retrain far above the budget's time left.
    monkeypatch.setattr(choice, "retrain_estimate_s", lambda *args: 1e6)
    config = TrainConfig(preset="best", epochs=2, image_size=64, batch_size=8, refit_finetuned=True)
    classes, train, val = _split(shapes_dir, config)
    events = []
    m = fit(train, val, classes, config, tmp_path / "out", on_progress=events.append)
    assert not m["refit"]["done"]
    assert not any(e["stage"] == "refit" for e in events)  # not one retraining batch ran
    assert "Retraining on all images skipped: it would need ~1000000 s" in m["chosen_reason"]
    refit_row, = [p for p in m["phases"] if p["phase"] == "refit"]
    assert refit_row["skipped"] and refit_row["actual_s"] is None and refit_row["estimate_s"] == 1e6
    results = load_predictor(tmp_path / "out").predict_paths([s.path for s in val])  # the validated model
    assert np.mean([r["top"] == classes[s.label] for r, s in zip(results, val)]) == pytest.approx(m["accuracy"], abs=1e-4)


def test_every_phase_records_its_estimate_against_its_actual_time(shapes_dir, tmp_path, monkeypatch):
    from transferapp.engine import TrainConfig
    _force_fine_tuned_choice(monkeypatch)
    config = TrainConfig(preset="best", epochs=2, image_size=64, batch_size=8, refit_finetuned=True)  # the default 600 s: ample
    classes, train, val = _split(shapes_dir, config)
    events = []
    m = fit(train, val, classes, config, tmp_path / "out", on_progress=events.append)
    phases = {p["phase"]: p for p in m["phases"]}
    assert list(phases) == ["features", "head", "finetune", "refit", "final"]
    assert m["refit"]["done"] and not any(p["skipped"] for p in phases.values())
    assert all(p["actual_s"] is not None and p["actual_s"] >= 0 for p in phases.values())
    # Stage 2 is priced by its first batch, the retrain by stage 2's epochs, the final check by the
    # feature pace: each estimate was made from a measurement before the work it prices.
    for name in ("features", "finetune", "refit", "final"):  # (tiny images can price a phase at 0.0 s)
        assert phases[name]["estimate_s"] is not None, name
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["metrics"]["phases"] == m["phases"]
    # The progress page's time-left comes from the same estimates, once stage 2 has priced itself.
    priced = [e["seconds_left"] for e in events if e["stage"] in ("finetune", "refit") and "seconds_left" in e]
    assert priced and all(0 <= s <= config.time_budget_s + 60 for s in priced)


def test_cancelling_the_retrain_keeps_the_validated_model(shapes_dir, tmp_path, monkeypatch):
    from transferapp.engine import TrainConfig
    _force_fine_tuned_choice(monkeypatch)
    config = TrainConfig(preset="best", epochs=2, image_size=64, batch_size=4, refit_finetuned=True)
    classes, train, val = _split(shapes_dir, config)
    seen = []
    m = fit(train, val, classes, config, tmp_path / "out", on_progress=seen.append,
            should_stop=lambda: any(e["stage"] == "refit" for e in seen))
    assert m["chosen_stage"] == "finetune"
    assert not m["refit"]["done"] and "cancelled" in m["chosen_reason"]
    # The artifact is the validated model: it scores on validation what the run reported.
    results = load_predictor(tmp_path / "out").predict_paths([s.path for s in val])
    assert np.mean([r["top"] == classes[s.label] for r, s in zip(results, val)]) == pytest.approx(m["accuracy"])


def test_by_default_a_fine_tuned_model_is_not_retrained_but_a_quick_one_is(shapes_dir, tmp_path, monkeypatch):
    # bench/retrain_bench.py --refit-payoff: retraining a fine-tuned network cost about as long as
    # fine-tuning and did not pay on held-out images; the quick model's retrain costs seconds.
    from transferapp.engine import TrainConfig
    _force_fine_tuned_choice(monkeypatch)
    config = TrainConfig(preset="best", epochs=1, image_size=64, batch_size=8)
    assert config.refit and not config.refit_finetuned
    classes, train, val = _split(shapes_dir, config)
    events = []
    m = fit(train, val, classes, config, tmp_path / "out", on_progress=events.append)
    assert not m["refit"]["done"] and "was not retrained on all images" in m["chosen_reason"]
    assert not any(e["stage"] == "refit" for e in events)
    assert "refit" not in [p["phase"] for p in m["phases"]]
    results = load_predictor(tmp_path / "out").predict_paths([s.path for s in val])  # the validated model
    assert np.mean([r["top"] == classes[s.label] for r, s in zip(results, val)]) == pytest.approx(m["accuracy"], abs=1e-4)
    quick = fit(train, val, classes, TrainConfig(preset="fast", image_size=64), tmp_path / "quick")
    assert quick["refit"]["done"] and "retrained on all" in quick["strategy"]


def test_the_retrain_on_every_image_can_be_turned_off(shapes_dir, tmp_path):
    from transferapp.engine import TrainConfig
    config = TrainConfig(preset="fast", image_size=64, refit=False)
    classes, train, val = _split(shapes_dir, config)
    m = fit(train, val, classes, config, tmp_path / "out", cache_dir=tmp_path / "cache")
    assert m["refit"] is None and "retrained" not in m["chosen_reason"]
    state = torch.load(tmp_path / "out" / "model.pt")
    first = torch.load(tmp_path / "out" / "stage1_head.pt")
    assert torch.equal(state["head.weight"], first["weight"])


def test_balanced_weights_make_every_class_count_equally():
    w = class_weights(np.array([0] * 8 + [1] * 2), 3)
    assert w[0] * 8 == pytest.approx(w[1] * 2) and w[2] == 0


def test_a_rare_class_is_still_learned(tmp_path):
    from transferapp.engine import TrainConfig
    data = make_dataset(tmp_path / "imbalanced", {"red_circle": 20, "green_square": 4, "blue_triangle": 20})
    config = TrainConfig(preset="fast", image_size=64)
    classes, train, val = _split(data, config)
    m = fit(train, val, classes, config, tmp_path / "out")
    assert m["per_class"]["green_square"]["recall"] == 1.0


def test_it_works_with_one_image_in_a_class_and_no_validation(tmp_path):
    from transferapp.engine import TrainConfig
    data = make_dataset(tmp_path / "tiny", 1)
    classes, train, _ = folder_samples(data)
    m = fit(train, [], classes, TrainConfig(image_size=64), tmp_path / "out")
    assert m["accuracy"] is None and m["chosen_stage"] == "head" and m["n_val"] == 0


def test_cancelling_raises_promptly(shapes_dir, tmp_path):
    from transferapp.engine import TrainConfig
    config = TrainConfig(preset="best", image_size=64, batch_size=4)
    classes, train, val = _split(shapes_dir, config)
    polls = []

    def should_stop():
        polls.append(1)
        return len(polls) > 3

    with pytest.raises(TrainingCancelled):
        fit(train, val, classes, config, tmp_path / "out", should_stop=should_stop)
    assert not (tmp_path / "out" / "model.pt").exists()


def test_labels_outside_the_class_list_are_rejected(tmp_path):
    from transferapp.engine import TrainConfig
    with pytest.raises(ValueError):
        fit([Sample("x.png", 5, "x")], [], ["a", "b"], TrainConfig(), tmp_path)


def test_time_budget_keeps_the_quick_model_when_fine_tuning_cannot_finish(shapes_dir, tmp_path):
    from transferapp.engine import TrainConfig
    config = TrainConfig(preset="best", image_size=64, time_budget_s=0.001)
    classes, train, val = _split(shapes_dir, config)
    m = fit(train, val, classes, config, tmp_path / "out")
    assert m["chosen_stage"] == "head" and "time budget" in m["chosen_reason"]
    assert load_predictor(tmp_path / "out").predict_paths([val[0].path])[0]["top"] == classes[val[0].label]


def test_the_first_model_is_on_disk_and_predicts_while_training_goes_on(tmp_path):
    from transferapp.engine import TrainConfig

    data = make_dataset(tmp_path / "data", per_class=10)
    config = TrainConfig(preset="best", image_size=64, batch_size=8, epochs=1)
    classes, train, val = _split(data, config)
    out, seen = tmp_path / "out", []

    def on_progress(event):
        if event.get("first_model_ready"):
            meta = json.loads((out / "meta.json").read_text())
            seen.append((meta["metrics"]["interim"], load_predictor(out).predict_paths([val[0].path])[0]["top"]))

    metrics = fit(train, val, classes, config, out, on_progress=on_progress)
    assert seen == [(True, classes[val[0].label])]
    assert "interim" not in json.loads((out / "meta.json").read_text())["metrics"]  # replaced by the final model
    curve = metrics["learning_curve"]
    assert curve["n_train"][-1] == len(train) and len(curve["accuracy"]) == 5 and curve["verdict"]


def test_a_fine_tuned_models_reported_scores_are_the_ones_it_serves(shapes_dir, tmp_path, monkeypatch):
    """The decision-threshold table and the mistakes show the temperature-scaled probabilities that
    predictions use, so a threshold chosen on the page cuts where the page says."""
    from transferapp.engine import TrainConfig
    _force_fine_tuned_choice(monkeypatch)
    config = TrainConfig(preset="best", epochs=2, image_size=64, batch_size=8, refit=False)
    classes, train, val = _split(shapes_dir, config)
    keep = {0, 1}  # two classes: the threshold table exists
    train, val = [s for s in train if s.label in keep], [s for s in val if s.label in keep]
    m = fit(train, val, classes[:2], config, tmp_path / "out")
    assert m["chosen_stage"] == "finetune" and m["trust"]["temperature"] != 1.0
    served = load_predictor(tmp_path / "out").predict_paths([s.path for s in val])
    reported = [p for _, p in m["eval_scores"]]
    assert reported == pytest.approx([r["probabilities"][classes[1]] for r in served], abs=2e-3)


def test_the_kept_stages_figures_name_the_images_they_count():
    """Issue 32 item 5: "the quick model (92.6% validation accuracy)" on a page whose headline counts
    80 images, where k/80 cannot be 92.6%: it counted the 54 images that chose the stage."""
    from transferapp.engine import choice, state
    y = np.array([0] * 27 + [1] * 27)
    right = np.eye(2)[y] * 0.8 + 0.1
    quick_probs = right.copy()
    quick_probs[:4] = quick_probs[:4, ::-1]  # 4 wrong: 50/54
    tuned_probs = right.copy()
    tuned_probs[:6] = tuned_probs[:6, ::-1]  # 6 wrong: 48/54
    quick = state.history_row("head", 1, right, y, quick_probs, y)
    tuned = state.history_row("finetune", 2, right, y, tuned_probs, y)
    assert (quick["val_correct"], quick["n_val"]) == (50, 54)
    candidates = {"head": quick_probs, "finetune": tuned_probs, "ensemble": (quick_probs + tuned_probs) / 2,
                  "temperatures": [1.0, 1.0]}
    kept, reason = choice._choose(quick, {"row": tuned}, candidates=candidates, y_val=y)
    assert kept == "ensemble"  # a two-image lead of the quick model is noise: nothing is discarded
    assert reason.startswith("On the 54 validation images that chose the stage, the quick model got 50/54 right (93%), "
                             "the fine-tuned model 48/54 (89%)")
    assert "92.6" not in reason
