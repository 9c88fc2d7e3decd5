"""'Images must not be mirrored' (X-rays with side markers, text, asymmetric anatomy): the switch
reaches both the flip augmentation and the flip test-time averaging, and survives in meta.json."""
import json

from torchvision import transforms as T

from transferapp.engine import TrainConfig, fit, folder_samples, load_predictor, stratified_split
from transferapp.engine.data import train_transform

from .test_train import _force_fine_tuned_choice

PREP = {"resize": 73, "crop": 64, "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear"}


def _has_flip(transform) -> bool:
    return any(isinstance(step, T.RandomHorizontalFlip) for step in transform.transforms)


def test_augmentation_flips_only_when_mirroring_is_allowed():
    assert _has_flip(train_transform(PREP, "medium"))
    assert not _has_flip(train_transform(PREP, "medium", mirror=False))


def test_no_mirroring_is_saved_and_turns_off_test_time_flips(shapes_dir, tmp_path, monkeypatch):
    _force_fine_tuned_choice(monkeypatch)
    config = TrainConfig(preset="best", image_size=64, batch_size=8, epochs=1, refit=False, no_mirroring=True)
    classes, samples, _ = folder_samples(shapes_dir)
    train, val = stratified_split(samples, config.val_fraction, config.seed)
    fit(train, val, classes, config, tmp_path / "art", cache_dir=tmp_path / "cache")
    meta = json.loads((tmp_path / "art" / "meta.json").read_text())
    assert meta["config"]["no_mirroring"] is True and meta["flip_tta"] is False
    assert load_predictor(tmp_path / "art").model.flip_tta is False


def test_a_fine_tuned_model_mirrors_by_default(shapes_dir, tmp_path, monkeypatch):
    _force_fine_tuned_choice(monkeypatch)
    config = TrainConfig(preset="best", image_size=64, batch_size=8, epochs=1, refit=False)
    classes, samples, _ = folder_samples(shapes_dir)
    train, val = stratified_split(samples, config.val_fraction, config.seed)
    fit(train, val, classes, config, tmp_path / "art", cache_dir=tmp_path / "cache")
    meta = json.loads((tmp_path / "art" / "meta.json").read_text())
    assert meta["flip_tta"] is True and meta["config"]["no_mirroring"] is False
