import pytest

from transferapp.engine import TrainConfig


def test_defaults_are_the_documented_ones():
    c = TrainConfig()
    assert (c.base, c.preset, c.epochs, c.lr, c.batch_size) == ("efficientnet_lite0", "best", 10, 3e-4, 16)
    assert (c.unfrozen_blocks, c.augmentation, c.val_fraction, c.seed, c.image_size) == (3, "medium", 0.2, 0, 224)
    assert (c.depth, c.layer_lr_decay) == ("auto", 0.85)


def test_from_dict_ignores_unknown_keys_and_coerces_form_strings():
    c = TrainConfig.from_dict({"epochs": "3", "lr": "0.001", "preset": "fast", "colour": "blue"})
    assert (c.epochs, c.lr, c.preset) == (3, 0.001, "fast")


@pytest.mark.parametrize("bad, word", [({"preset": "slow"}, "preset"), ({"epochs": 0}, "epochs"),
                                       ({"val_fraction": 1.5}, "val_fraction"), ({"epochs": "many"}, "epochs"),
                                       ({"augmentation": "wild"}, "augmentation")])
def test_it_rejects_bad_values_with_a_readable_message(bad, word):
    with pytest.raises(ValueError, match=word):
        TrainConfig.from_dict(bad)


def test_a_depth_that_is_not_offered_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="depth must be one of auto, top, all"):
        TrainConfig(depth="deepest")
    with pytest.raises(ValueError, match="layer_lr_decay must be above 0 and at most 1"):
        TrainConfig(layer_lr_decay=1.5)


def test_naming_the_top_blocks_means_training_those_in_the_form_the_cli_and_an_old_saved_run():
    assert TrainConfig.from_dict({"unfrozen_blocks": 2}).depth == "top"
    assert TrainConfig.from_dict({"unfrozen_blocks": 2, "depth": "all"}).depth == "all"
    assert TrainConfig.from_dict({}).depth == "auto"
