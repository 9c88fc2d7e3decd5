"""How long a training run has left, from what the run row already records."""
from dataclasses import dataclass
from datetime import datetime

from transferapp.models import TrainingRun

MIN_FRACTION = 0.01  # below this, elapsed / fraction says nothing yet


@dataclass
class TimeLeft:
    text: str  # "about 4 min left"
    rough: bool  # no epoch finished yet: the estimate rests on setup work (reading images)


def time_left(run: TrainingRun, now: datetime) -> TimeLeft | None:
    """Remaining time: the engine's own estimate where it has priced the work left (from measured
    batch and epoch times, the numbers that decide whether a phase runs at all), else the pace so far
    (the engine's fraction is weighted by the expected cost of each phase, so it is roughly even)."""
    if run.status != TrainingRun.Status.RUNNING or run.started_at is None:
        return None
    if run.seconds_left is not None and run.heartbeat_at is not None:
        since_s = max((now - run.heartbeat_at).total_seconds(), 0.0)
        return TimeLeft(text=_say(max(run.seconds_left - since_s, 0.0)), rough=False)
    if run.progress < MIN_FRACTION:
        return None
    fraction = min(run.progress, 0.999)
    elapsed_s = max((now - run.started_at).total_seconds(), 0.0)
    remaining_s = elapsed_s * (1 - fraction) / fraction
    return TimeLeft(text=_say(remaining_s), rough=not run.history)


def _say(seconds: float) -> str:
    if seconds < 45:
        return "less than a minute left"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"about {max(minutes, 1)} min left"
    return f"about {seconds / 3600:.1f} hours left"
