"""The rq worker class for `manage.py rqworker` (settings.RQ["WORKER_CLASS"]), so also for
`manage.py serve` and docker compose: a plain rq worker that also runs the reaper."""
from rq import Worker

from transferapp.reaper import Reaper

FIRST_SWEEP_WAIT_S = 60


class ReapingWorker(Worker):
    def work(self, *args, **kwargs):
        reaper = Reaper()
        reaper.start()
        # Settle what a previous worker left behind before taking jobs (a burst worker may stop at once).
        reaper.first_sweep_done.wait(FIRST_SWEEP_WAIT_S)
        try:
            return super().work(*args, **kwargs)
        finally:
            reaper.stop()
