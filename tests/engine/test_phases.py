"""The phase log's rule on a clock the test controls: a phase whose estimate exceeds the time left
is skipped with the figures the user sees; one that fits runs and records its actual time."""
import pytest

from transferapp.engine.phases import Phases, retrain_estimate_s


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_phase_that_cannot_finish_is_skipped_with_its_figures():
    clock = Clock()
    phases = Phases(deadline=130.0, clock=clock)
    assert not phases.start("refit", "Retraining on all images", estimate_s=95.4)
    assert phases.note("refit") == "Retraining on all images skipped: it would need ~95 s, 30 s left in the time budget."
    assert phases.rows == [{"phase": "refit", "label": "Retraining on all images", "estimate_s": 95.4,
                            "actual_s": None, "skipped": True, "note": phases.note("refit")}]


def test_a_phase_that_fits_runs_and_records_estimate_against_actual():
    clock = Clock()
    phases = Phases(deadline=1000.0, clock=clock)
    assert phases.start("refit", "Retraining on all images", estimate_s=95.4)
    clock.now += 120.25
    phases.finish("refit")
    row, = phases.rows
    assert (row["estimate_s"], row["actual_s"], row["skipped"]) == (95.4, 120.2, False)


def test_a_phase_priced_once_it_has_measured_itself_keeps_that_estimate():
    clock = Clock()
    phases = Phases(deadline=1000.0, clock=clock)
    assert phases.start("finetune", "Fine-tuning", None)  # nothing measured yet: it starts
    phases.estimate("finetune", 40.0)
    phases.estimate("finetune", 99.0)  # later guesses do not overwrite the one made before the work
    clock.now += 38
    phases.finish("finetune", "2 epochs")
    assert phases.rows[0]["estimate_s"] == 40.0 and phases.rows[0]["actual_s"] == 38.0


def test_the_retrain_is_priced_from_stage_two_epochs_scaled_to_every_image():
    # 10 s epochs on 80 images, retrained on 100 images for 3 epochs: 37.5 s plus margins.
    assert retrain_estimate_s(10.0, 80, 100, 3) == pytest.approx(1.1 * 37.5 + 2)


def test_the_time_left_is_the_running_phase_unspent_estimate_plus_what_follows_within_the_budget():
    clock = Clock()
    phases = Phases(deadline=400.0, clock=clock)
    assert phases.seconds_left() is None  # nothing running
    phases.start("finetune", "Fine-tuning", None)
    assert phases.seconds_left(later_s=50) is None  # not priced yet: the page falls back to the pace
    phases.estimate("finetune", 100.0)
    clock.now += 30
    assert phases.seconds_left(later_s=50, after_budget_s=20) == pytest.approx(70 + 50 + 20)
    clock.now += 200  # 70 s left in the budget, which stops fine-tuning and the retrain
    assert phases.seconds_left(later_s=500, after_budget_s=20) == pytest.approx(70 + 20)


def test_a_phase_the_model_needs_runs_over_budget_and_is_not_reported_skipped():
    clock = Clock()
    phases = Phases(deadline=130.0, clock=clock)
    assert phases.start("final", "Checking the final model", estimate_s=60.0, required=True)
    clock.now += 50
    phases.finish("final")
    (row,) = phases.rows
    assert not row["skipped"] and row["actual_s"] == 50.0 and row["estimate_s"] == 60.0


# --- a stable plan: moves only when it must, and says why -------------------------------------

def test_a_plan_stands_while_the_epochs_left_still_fit():
    from transferapp.engine.phases import replan_after_epoch
    assert replan_after_epoch(planned=8, done=1, epoch_s=60.0, left_s=430.0) == (8, "")


def test_a_plan_that_can_no_longer_finish_shrinks_once_and_says_why():
    from transferapp.engine.phases import replan_after_epoch
    epochs, why = replan_after_epoch(planned=8, done=1, epoch_s=60.0, left_s=310.0)
    assert epochs == 6 and "from 8 to 6 epochs" in why and "60 s" in why


def test_the_first_plan_from_a_batch_or_two_keeps_a_margin():
    """A plan from two batches' pace would promise 10 epochs in 600 s at 59 s each; the margin plans
    8, which a machine 25 % busier still finishes (1/10 -> 1/9 -> 2/8 was the plan that had none)."""
    from transferapp.engine.phases import PLAN_MARGIN, planned_epochs
    assert planned_epochs(planned=10, done=0, epoch_s=59.0, left_s=600.0) == 10
    planned = planned_epochs(planned=10, done=0, epoch_s=59.0, left_s=600.0, margin=PLAN_MARGIN)
    assert planned == 8 and planned * 59.0 * 1.25 <= 600


def test_the_time_left_follows_a_shortened_plan():
    clock = Clock()
    phases = Phases(deadline=1000.0, clock=clock)
    phases.start("finetune", "Fine-tuning", None)
    phases.estimate("finetune", 500.0)
    clock.now += 100
    phases.replan("finetune", 300.0)
    assert phases.seconds_left() == pytest.approx(200.0)
    assert phases.rows[0]["estimate_s"] == 500.0  # the table keeps the estimate made before the work


def test_features_found_in_the_cache_neither_read_0_of_0_nor_jump_the_bar(monkeypatch):
    """A run whose every feature is cached: no "Computing image features 0/0", no bar at 90 % before
    the quick model has started, and an estimate (0 s) in the phase table."""
    import time

    import numpy as np

    from transferapp.engine import TrainConfig, state
    from transferapp.engine.data import Sample

    def cached_embed(samples, backbone, *, progress, **_):
        progress(0, 0)  # what features.embed reports when nothing is left to compute
        return np.zeros((len(samples), 4), dtype=np.float32)

    monkeypatch.setattr(state, "embed", cached_embed)
    events = []
    run = state._Run(TrainConfig(preset="fast"), events.append, None, time.perf_counter())
    images = [Sample(f"/nowhere/{i}.png", i % 2, str(i)) for i in range(6)]
    run.features(images[:4], images[4:], backbone=None, cache_dir=None, device=None)
    assert events and not any("0/0" in e["message"] for e in events)
    assert max(e["fraction"] for e in events) <= 0.05
    assert "all 6 images found in the cache" in events[-1]["message"]
    assert run.phases.rows[0]["estimate_s"] == 0.0
