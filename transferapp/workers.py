"""The rq worker classes.

ReapingWorker is the class of `manage.py rqworker` (settings.RQ["WORKER_CLASS"]), so also of
`manage.py serve` and docker compose: a plain forking rq worker that also runs the reaper.

GpuWorker serves the `gpu` queue (`manage.py gpuworker`): CUDA cannot be used in a process forked
from one that touched it, so every job runs in a freshly spawned interpreter (rq's SpawnWorker).
This module imports no Django model at import time: the spawned work horse unpickles the worker
class (importing this module) before Django is set up.
"""
from django.conf import settings
from rq import Worker
from rq.worker import SpawnWorker

FIRST_SWEEP_WAIT_S = 60


class ReapingWorker(Worker):
    reaper = None

    def bootstrap(self, *args, **kwargs):
        from transferapp.reaper import Reaper  # models: only once Django is set up

        super().bootstrap(*args, **kwargs)  # registered first: its own sweep counts it among the live workers
        self.reaper = Reaper()
        self.reaper.start()
        # Settle what a previous worker left behind before taking jobs (a burst worker may stop at once).
        self.reaper.first_sweep_done.wait(FIRST_SWEEP_WAIT_S)

    def work(self, *args, **kwargs):
        try:
            return super().work(*args, **kwargs)
        finally:
            if self.reaper is not None:
                self.reaper.stop()


class GpuWorker(ReapingWorker, SpawnWorker):
    """Each job in a new interpreter (posix_spawn, not fork), which sets Django up before the job.

    Its registration lives at most GPU_WORKER_TTL_S past its last heartbeat (an idle worker beats every
    GPU_WORKER_TTL_S - 15 s), so the web app stops sending trainings to the `gpu` queue within about
    two minutes of the machine going away (selectors.gpu_workers_online)."""

    def __init__(self, *args, worker_ttl=None, **kwargs):
        ttl = settings.GPU_WORKER_TTL_S
        super().__init__(*args, worker_ttl=min(worker_ttl or ttl, ttl), **kwargs)

    def main_work_horse(self, job, queue):
        import django

        django.setup()  # a spawned horse is a bare interpreter: the job's imports need the apps loaded
        return super().main_work_horse(job, queue)
