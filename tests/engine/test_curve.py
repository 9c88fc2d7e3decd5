"""The "will more data help?" curve, on synthetic features (no images, no Django)."""
import numpy as np

from transferapp.engine.curve import learning_curve, verdict


def features(n, centers, noise, rng):
    y = rng.integers(0, len(centers), n)
    return (centers[y] + rng.normal(scale=noise, size=(n, centers.shape[1]))).astype(np.float32), y


def test_the_curve_has_one_point_per_share_and_every_class():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 32))
    xt, yt = features(240, centers, 2.0, rng)
    xv, yv = features(90, centers, 2.0, rng)
    curve = learning_curve(xt, yt, xv, yv, ["a", "b", "c"], C=0.1)
    assert curve["n_train"][-1] == 240 and curve["n_train"][0] < curve["n_train"][-1]
    assert len(curve["accuracy"]) == 5 and all(0 <= a <= 1 for a in curve["accuracy"])
    assert set(curve["per_class"]) == {"a", "b", "c"}
    assert curve["accuracy"][-1] >= curve["accuracy"][0]


def test_a_rising_curve_names_the_class_that_gains_most():
    curve = {"fractions": [0.1, 0.5, 1.0], "accuracy": [0.5, 0.7, 0.8],
             "per_class": {"roses": [0.3, 0.5, 0.75], "daisy": [0.7, 0.9, 0.85]}}
    reading = verdict(curve)
    assert reading["rising"] and reading["help_most"] == "roses"
    assert "more images of “roses”" in reading["verdict"]


def test_a_flat_curve_says_more_images_are_unlikely_to_help():
    curve = {"fractions": [0.1, 0.5, 1.0], "accuracy": [0.9, 0.95, 0.955],
             "per_class": {"roses": [0.9, 0.95, 0.96], "daisy": [0.9, 0.95, 0.95]}}
    reading = verdict(curve)
    assert not reading["rising"] and "unlikely to help" in reading["verdict"]
