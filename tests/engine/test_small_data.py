"""Small data first (#15 item 0): no validation split below a few dozen images a class,
out-of-fold figures, no fine-tuning, and a feature scale that few images cannot blow up."""
import json

import numpy as np
import torch

from transferapp.engine import TrainConfig, fit, folder_samples, load_predictor
from transferapp.engine.data import Sample, development_split, is_small_data
from transferapp.engine.head import FIXED_C, fit_linear_head

from .conftest import make_dataset


def _samples(per_class: int, n_classes: int = 3) -> list[Sample]:
    return [Sample(path=f"{c}_{i}.png", label=c, key=f"{c}_{i}") for c in range(n_classes) for i in range(per_class)]


def test_a_small_project_keeps_every_image_for_training():
    small = _samples(29)
    assert is_small_data(small, 30)
    assert development_split(small, TrainConfig()) == (small, [])
    train, val = development_split(_samples(30), TrainConfig())
    assert len(val) == 3 * 6 and len(train) == 3 * 24  # 20 % of each class, as before
    train, val = development_split(small, TrainConfig(small_data_below=0))  # the setting turns it off
    assert len(val) == 3 * 6


def test_one_short_class_makes_the_project_small():
    samples = _samples(100, 2) + [Sample(path="rare.png", label=2, key=f"r{i}") for i in range(12)]
    assert is_small_data(samples, 30)


def _quiet_noise(n: int, seed: int):
    """One informative feature (unit spread) and 300 that only vary by 1 %: noise a plain
    per-feature standardisation would scale up to the signal's size."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n)
    signal = (2 * y - 1)[:, None] + rng.normal(0, 1.0, (2 * n, 1))
    return np.hstack([signal, rng.normal(0, 0.01, (2 * n, 300))]).astype(np.float32), y


def test_features_that_barely_vary_in_a_few_images_do_not_drown_the_signal():
    accuracies = []
    for seed in range(5):
        x, y = _quiet_noise(8, seed)
        x_new, y_new = _quiet_noise(500, 100 + seed)
        head, _ = fit_linear_head(x, y, 2, C=FIXED_C)
        with torch.no_grad():
            accuracies.append(float((head(torch.as_tensor(x_new)).argmax(1).numpy() == y_new).mean()))
    # The best possible is about 0.84; per-feature standardisation scored 0.54 (near chance).
    assert np.mean(accuracies) > 0.75, accuracies


def test_a_small_project_is_estimated_out_of_fold_and_not_fine_tuned(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=8)
    classes, samples, _ = folder_samples(data)
    config = TrainConfig(preset="best", image_size=64, batch_size=8)
    train, val = development_split(samples, config)
    out = tmp_path / "artifact"
    m = fit(train, val, classes, config, out, cache_dir=tmp_path / "cache")
    assert m["evaluated_on"] == "out_of_fold"
    assert m["n_scored"] == len(samples) == m["n_train"] and m["n_val"] == 0
    assert m["chosen_stage"] == "head" and "fine-tuning would help: it was skipped" in m["chosen_reason"]
    assert not any(row["stage"] == "finetune" for row in m["history"])
    assert sum(m["confusion"][i][i] for i in range(len(classes))) == round(m["accuracy"] * len(samples))
    assert m["trust"]["calibrated_on"].startswith("out-of-fold")
    curve = m["learning_curve"]  # "will more images help?", from the same folds
    assert curve["out_of_fold"] and len(curve["accuracy"]) == len(curve["n_train"]) == 5
    assert curve["n_train"] == sorted(curve["n_train"]) and curve["n_train"][-1] < len(samples)
    assert all(0 <= a <= 1 for a in curve["accuracy"]) and curve["verdict"]
    assert json.loads((out / "meta.json").read_text())["config"]["small_data_below"] == 30
    answers = load_predictor(out).predict_paths([s.path for s in samples[:3]])
    assert [a["top"] for a in answers] == [classes[s.label] for s in samples[:3]]  # shapes are easy


def test_a_small_project_with_a_test_set_reports_its_out_of_fold_estimate_as_such(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=8)
    classes, samples, _ = folder_samples(data)
    test = [s for s in samples if s.key.endswith(("0.png", "1.png"))]
    rest = [s for s in samples if s not in test]
    config = TrainConfig(preset="fast", image_size=64, batch_size=8)
    train, val = development_split(rest, config)
    m = fit(train, val, classes, config, tmp_path / "artifact", test=test, cache_dir=tmp_path / "cache")
    assert m["evaluated_on"] == "test" and m["n_scored"] == len(test) > 0
    assert m["validation"]["out_of_fold"] and m["validation"]["n_scored"] == len(rest)
