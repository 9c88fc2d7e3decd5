"""Each phase of a fit is priced from measured times before it starts and logged against what it
really took; a phase that cannot finish in what is left of the time budget is skipped, not started
and thrown away (a user once waited seven minutes for a retrain that ran out of time)."""
from __future__ import annotations

import logging
import time
from typing import Callable

log = logging.getLogger(__name__)


class Phases:
    """The run's phase log: [{phase, label, estimate_s, actual_s, skipped, note}] in the order run."""

    def __init__(self, deadline: float, clock: Callable[[], float] = time.perf_counter):
        self.deadline, self.clock = deadline, clock
        self.rows: list[dict] = []
        self._started: dict[str, float] = {}
        self._replanned: dict[str, float] = {}  # the running phase's current estimate, once re-planned

    def left_s(self) -> float:
        return max(0.0, self.deadline - self.clock())

    def start(self, phase: str, label: str, estimate_s: float | None, required: bool = False) -> bool:
        """Record the phase; False (and a "skipped" row with the reason) when its estimate does not
        fit in the time left. A phase with no estimate (nothing measured yet), or one the model
        cannot be saved without (`required`), always starts."""
        left = self.left_s()
        if estimate_s is not None and estimate_s > left and not required:
            note = f"{label} skipped: it would need ~{estimate_s:.0f} s, {left:.0f} s left in the time budget."
            self.rows.append(_row(phase, label, estimate_s, None, skipped=True, note=note))
            log.info(note)
            return False
        self._started[phase] = self.clock()
        self.rows.append(_row(phase, label, estimate_s, None))
        return True

    def estimate(self, phase: str, estimate_s: float) -> None:
        """An estimate made once the phase has measured its own pace (its first batch or epoch)."""
        row = self._row(phase)
        if row is not None and row["estimate_s"] is None:
            row["estimate_s"] = round(estimate_s, 1)

    def replan(self, phase: str, estimate_s: float) -> None:
        """A new estimate for the time-left once the phase's plan changed (fewer epochs). The table keeps
        the estimate made before the work, so it still says how good that first guess was."""
        self._replanned[phase] = estimate_s

    def finish(self, phase: str, note: str = "", skipped: bool = False, stopped_early: bool = False) -> None:
        """The phase ended; skipped=True when it stopped early because it could not finish in time;
        stopped_early=True when a rule stopped it before half its plan had run (the budget's pricing
        after a batch or two, or the payoff rule): its seconds were the price of deciding, not work discarded."""
        row = self._row(phase)
        if row is None or phase not in self._started:
            return
        row["actual_s"] = round(self.clock() - self._started.pop(phase), 1)
        row["note"], row["skipped"], row["stopped_early"] = row["note"] or note, skipped, stopped_early
        estimate = "no estimate" if row["estimate_s"] is None else f"estimated {row['estimate_s']} s"
        log.info("%s: %s, took %s s%s", row["label"], estimate, row["actual_s"], f" ({note})" if note else "")

    def seconds_left(self, later_s: float = 0.0, after_budget_s: float = 0.0) -> float | None:
        """What the progress page's time-left shows: the running phase's unspent estimate plus the
        priced phases still to come (`later_s`), at most what the budget leaves, then the work done
        after it whatever the budget (`after_budget_s`). None while the running phase is unpriced."""
        running = next((r for r in reversed(self.rows) if r["phase"] in self._started), None)
        if running is None or running["estimate_s"] is None:
            return None
        spent = self.clock() - self._started[running["phase"]]
        estimate = self._replanned.get(running["phase"], running["estimate_s"])
        return min(max(estimate - spent, 0.0) + later_s, self.left_s()) + after_budget_s

    def spent(self, phase: str) -> float:
        """Seconds the running phase has run so far (0 when it is not running)."""
        return self.clock() - self._started[phase] if phase in self._started else 0.0

    def note(self, phase: str) -> str:
        row = self._row(phase)
        return row["note"] if row else ""

    def _row(self, phase: str) -> dict | None:
        return next((r for r in reversed(self.rows) if r["phase"] == phase), None)


def _row(phase, label, estimate_s, actual_s, skipped=False, note="") -> dict:
    return {"phase": phase, "label": label, "estimate_s": None if estimate_s is None else round(estimate_s, 1),
            "actual_s": actual_s, "skipped": skipped, "note": note}


def retrain_estimate_s(epoch_s: float, n_train: int, n_all: int, epochs: int) -> float:
    """Stage 2's measured epoch time, scaled to training + validation images, for the chosen epoch
    count; the margin covers setting up the second training."""
    return 1.1 * epoch_s * n_all / max(1, n_train) * epochs + 2


# Margin on a pace measured from a batch or two before the first plan: on a busy machine the next
# batches run slower, and a plan that must shrink twice in a minute (1/10 -> 1/9 -> 2/8) reads as
# a broken promise. A plan from whole epochs (validation scoring included) needs none.
PLAN_MARGIN = 1.25


def planned_epochs(*, planned: int, done: int, epoch_s: float, left_s: float, margin: float = 1.0) -> int:
    """As many epochs as fit in `left_s` at `epoch_s` each (times `margin`), counting `done` already run;
    never more than `planned` (a plan only shrinks) nor fewer than one, or than those done."""
    return max(1, done, min(planned, done + int(left_s / (margin * epoch_s))))


def replan_after_epoch(*, planned: int, done: int, epoch_s: float, left_s: float) -> tuple[int, str]:
    """(the plan, why it changed or ""), after a whole epoch at the pace it ran: unchanged while the
    epochs still to run fit in the time left, else shortened to what fits, with the reason in words."""
    if (planned - done) * epoch_s <= left_s:
        return planned, ""
    shorter = planned_epochs(planned=planned, done=done, epoch_s=epoch_s, left_s=left_s)
    return shorter, (f"plan shortened from {planned} to {shorter} epochs: epochs now take about {epoch_s:.0f} s "
                     f"(the machine is busier than when the plan was made), and {left_s:.0f} s are left")
