"""How much of the network stage 2 trains: chosen from validation images, said in plain words."""
import numpy as np
import pytest
import torch
from PIL import Image

from transferapp.engine import TrainConfig, fit, folder_samples, load_predictor, stratified_split
from transferapp.engine.depth import choose_depth, separation_skill
from transferapp.engine.finetune import _optimizer, freeze_body
from transferapp.engine.zoo import Classifier, create_backbone


def _noise_dataset(root, per_class=12, size=64):
    """Two classes of random noise: no pretrained feature separates them (the far-from-ImageNet case
    at its extreme), so the quick model stays near chance on validation images."""
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), "L").save(root / name / f"{i}.png")
    return root


def _one_hot(labels, k, right):
    """Probabilities whose argmax is the true label for the first `right` share of each class."""
    probs = np.full((len(labels), k), 0.1)
    for c in range(k):
        rows = np.flatnonzero(labels == c)
        for j, r in enumerate(rows):
            probs[r, c if j < right * len(rows) else (c + 1) % k] = 0.9
    return probs


def test_separation_skill_runs_from_chance_to_perfect_whatever_the_number_of_classes():
    y = np.repeat(np.arange(4), 20)
    assert separation_skill(_one_hot(y, 4, 1.0), y) == pytest.approx(1.0)
    assert separation_skill(_one_hot(y, 4, 0.25), y) == pytest.approx(0.0)
    y2 = np.repeat(np.arange(2), 10)
    assert separation_skill(_one_hot(y2, 2, 0.5), y2) == pytest.approx(0.0)
    # Balanced: a rare class the model always misses costs as much as a common one.
    y_skewed = np.array([0] * 30 + [1] * 3)
    always_zero = np.tile([0.9, 0.1], (33, 1))
    assert separation_skill(always_zero, y_skewed) == pytest.approx(0.0)


def test_auto_depth_trains_every_layer_only_when_the_frozen_features_separate_poorly():
    backbone = create_backbone("efficientnet_lite0", image_size=64)
    y = np.repeat(np.arange(4), 20)
    top_three = backbone.top_start(3)
    poor, why_poor = choose_depth(TrainConfig(), backbone, _one_hot(y, 4, 0.5), y)  # skill 0.33
    good, why_good = choose_depth(TrainConfig(), backbone, _one_hot(y, 4, 0.95), y)  # skill 0.93
    assert (poor, good) == (0, top_three)
    assert "separate your classes poorly" in why_poor and "every layer" in why_poor and "33%" in why_poor
    assert "already separate your classes well" in why_good and "top 3 blocks" in why_good
    # A setting overrides the choice, and says so.
    assert choose_depth(TrainConfig(depth="top"), backbone, _one_hot(y, 4, 0.5), y)[0] == top_three
    forced, why = choose_depth(TrainConfig(depth="all"), backbone, _one_hot(y, 4, 0.95), y)
    assert forced == 0 and "as set in the advanced settings" in why


def test_deeper_stages_learn_more_gently_around_the_configured_mean_rate():
    backbone = create_backbone("efficientnet_lite0", image_size=64)
    model = Classifier(backbone, 3)
    groups = freeze_body(model, 0, layer_lr_decay=0.5)
    opt, _ = _optimizer(groups, TrainConfig(lr=1e-3), total_steps=10)
    head, *stages = [g["initial_lr"] for g in opt.param_groups]
    assert len(stages) == len(model.body)
    assert all(lower == pytest.approx(upper * 0.5) for lower, upper in zip(stages, stages[1:]))  # halving downwards
    assert np.mean(stages) == pytest.approx(1e-3) and head == pytest.approx(stages[-1])
    assert all(p.requires_grad for p in model.parameters())
    top_only = freeze_body(model, backbone.top_start(3), layer_lr_decay=0.5)
    assert not any(p.requires_grad for p in model.body[0].parameters())
    assert len(top_only) == 1 + 4  # the head, three blocks and the head conv
    assert np.mean([g["lr_scale"] for g in top_only[1:]]) == pytest.approx(1.0)


def test_the_schedule_warms_up_then_decays_to_zero_within_the_planned_steps():
    param = torch.nn.Parameter(torch.zeros(1))
    opt, sched = _optimizer([{"params": [param], "lr_scale": 1.0}], TrainConfig(lr=1.0), total_steps=100)
    sched.plan(40)  # the measured pace showed that only 40 steps fit in the budget
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1 / 25)
    assert max(lrs) == pytest.approx(1.0) and lrs.index(max(lrs)) == 6  # 15% of 40 steps
    assert lrs[-1] < 0.01 and lrs[6:] == sorted(lrs[6:], reverse=True)


def test_a_fit_on_images_far_from_imagenet_fine_tunes_every_layer_and_says_why(tmp_path, monkeypatch):
    from transferapp.engine import choice
    # Noise is learned by neither stage, so which one is kept is a coin toss; this test is about what
    # the fine-tuning trained, so the fine-tuned model is kept (the training itself is real).
    monkeypatch.setattr(choice, "_choose", lambda stage1_row, best, *_: ("finetune", "Chosen by the test."))
    data = _noise_dataset(tmp_path / "noise")
    config = TrainConfig(preset="best", epochs=1, image_size=64, batch_size=8, refit=False)
    classes, samples, _ = folder_samples(data)
    train, val = stratified_split(samples, 0.5, 0)
    events = []
    m = fit(train, val, classes, config, tmp_path / "out", on_progress=events.append)
    assert m["depth"]["first_trained_stage"] == 0 and "separate your classes poorly" in m["depth"]["why"]
    assert "fine-tuned every layer for 1 epoch (" in m["strategy"]
    # Every stage, the stem included, moved away from the pretrained weights.
    pretrained = create_backbone("efficientnet_lite0", image_size=64).model.state_dict()
    final = torch.load(tmp_path / "out" / "model.pt")
    for stage in range(m["depth"]["stages"]):
        name = next(k for k in pretrained if k.startswith(f"{stage}.") and k.endswith("weight"))
        assert not torch.equal(final[f"body.{name}"], pretrained[name]), name
    totals = {e["total_epochs"] for e in events if e["stage"] == "finetune"}
    assert totals - {0} == {1}  # 0: no epoch total is shown until a batch has priced the plan
    assert load_predictor(tmp_path / "out").predict_paths([val[0].path])[0]["top"] in classes


def _trainer(shapes_dir, **settings):
    import time

    from transferapp.engine.finetune import _Trainer
    from transferapp.engine.state import _Run
    config = TrainConfig(image_size=64, **{"batch_size": 4, **settings})
    classes, samples, _ = folder_samples(shapes_dir)
    backbone = create_backbone(config.base, image_size=64)
    run = _Run(config, None, None, time.perf_counter())
    run.n_val = 6
    trainer = _Trainer(Classifier(backbone, len(classes)), backbone, samples, run=run, device=torch.device("cpu"),
                       stage="finetune", top=backbone.top_start(3), progress_span=(0.25, 1.0))
    return trainer


def test_the_epochs_are_planned_to_fit_the_budget_so_the_learning_rate_decays_inside_it(shapes_dir):
    trainer = _trainer(shapes_dir, epochs=8)
    steps = trainer.steps_per_epoch
    trainer.plan_epochs(epoch_s=10, left_s=35, done=0)  # 3 epochs (and a tenth spare) fit
    assert trainer.shown_epochs == 3 and trainer.sched.total_steps == 3 * steps
    # A plan only shrinks: growing it once the cosine has begun would raise the learning rate again.
    trainer.plan_epochs(epoch_s=2, left_s=100, done=1)
    assert trainer.shown_epochs == 3 and trainer.sched.total_steps == 3 * steps
    trainer.plan_epochs(epoch_s=30, left_s=10, done=1)  # no time for a second epoch
    assert trainer.shown_epochs == 1 and trainer.sched.total_steps == steps


def test_the_second_batch_prices_the_epoch_and_a_finished_epoch_is_never_thrown_away(shapes_dir):
    trainer = _trainer(shapes_dir, epochs=8)  # 18 images, 4 a batch: 5 batches an epoch
    assert trainer.batch_done(1, 4, batch_s=1e6)  # the first batch pays one-off costs: it prices nothing
    assert trainer.run.phases.rows == [] and not trainer.skip_note
    trainer.run.phases.start("finetune", "Fine-tuning", None)
    assert not trainer.batch_done(1, 8, batch_s=1e6)  # the second: three batches of 1e6 s cannot fit
    assert "Fine-tuning skipped: one epoch would need ~5000000 s" in trainer.skip_note
    one_batch = _trainer(shapes_dir, epochs=8, batch_size=32)  # the whole epoch in one batch, already run
    one_batch.run.phases.start("finetune", "Fine-tuning", None)
    assert one_batch.batch_done(1, 18, batch_s=1e6) and not one_batch.skip_note
    assert one_batch.shown_epochs == 1  # but no second epoch is planned


def test_the_progress_bar_never_moves_back():
    import time

    from transferapp.engine.state import _Run
    events = []
    run = _Run(TrainConfig(), events.append, None, time.perf_counter())
    for fraction in (0.3, 0.5, 0.4, 0.6):  # a re-planned phase may compute a lower share
        run.report(fraction, "finetune", "…")
    assert [e["fraction"] for e in events] == [0.3, 0.5, 0.5, 0.6]


def test_a_fine_tuning_that_never_ran_claims_no_depth(shapes_dir, tmp_path):
    config = TrainConfig(preset="best", image_size=64, batch_size=4, time_budget_s=0.001)
    classes, samples, _ = folder_samples(shapes_dir)
    train, val = stratified_split(samples, 0.34, 0)
    m = fit(train, val, classes, config, tmp_path / "out")
    assert m["chosen_stage"] == "head" and m["depth"] is None and "time budget" in m["chosen_reason"]


def test_a_retrain_to_come_gets_its_share_of_the_budget(shapes_dir):
    trainer = _trainer(shapes_dir, epochs=8, refit_finetuned=True)  # 18 images train, 6 more join the retrain
    trainer.plan_epochs(epoch_s=10, left_s=100, done=0)
    # Each epoch costs 10 s now and 10 * 24/18 s in the retrain: 100 / (1.1 * 23.3) -> 3 epochs.
    assert trainer.shown_epochs == 3
    assert trainer.run.later_s > 0


def _images(root, grey: bool, n=6):
    from transferapp.engine.data import Sample
    rng = np.random.default_rng(1)
    root.mkdir(parents=True)
    samples = []
    for i in range(n):
        pixels = rng.integers(0, 256, (32, 32), dtype=np.uint8)
        image = Image.fromarray(pixels, "L").convert("RGB") if grey else Image.fromarray(
            rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "RGB")
        path = root / f"{i}.png"
        image.save(path)  # an RGB file of a grey image (an X-ray exported as colour) counts as grey too
        samples.append(Sample(str(path), i % 2, str(i)))
    return samples


def test_images_with_no_colour_fine_tune_every_layer_even_when_the_features_separate_them(tmp_path):
    backbone = create_backbone("efficientnet_lite0", image_size=64)
    y = np.repeat(np.arange(4), 20)
    separates_well = _one_hot(y, 4, 0.95)  # skill 0.93: alone, this would tune the top blocks only
    grey, why = choose_depth(TrainConfig(), backbone, separates_well, y, _images(tmp_path / "grey", grey=True))
    assert grey == 0 and "have no colour" in why and "every layer" in why
    colour, _ = choose_depth(TrainConfig(), backbone, separates_well, y, _images(tmp_path / "colour", grey=False))
    assert colour == backbone.top_start(3)
