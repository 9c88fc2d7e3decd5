"""The rq worker classes.

ReapingWorker is the class of `manage.py rqworker` (settings.RQ["WORKER_CLASS"]), so also of
`manage.py serve` and docker compose: a plain forking rq worker that also runs the reaper.

GpuWorker serves the `gpu` queue (`manage.py gpuworker`): CUDA cannot be used in a process forked
from one that touched it, so every job runs in a freshly spawned interpreter (rq's SpawnWorker).
This module imports no Django model at import time: the spawned work horse unpickles the worker
class (importing this module) before Django is set up.

A work horse never outlives its worker: a killed worker (the out-of-memory killer, a crash) leaves a
horse in its own process group, which `serve` cannot reach; it would train on unseen, and a retry
would start beside it. Each horse watches its parent and kills its own group when it changes.
"""
import contextlib
import os
import signal
import threading
import time

from django.conf import settings
from django.db import connections
from rq import Worker
from rq.worker import BaseWorker, SpawnWorker

FIRST_SWEEP_WAIT_S = 60
PARENT_CHECK_S = 1.0


def end_when_orphaned(parent_pid: int, interval_s: float = PARENT_CHECK_S) -> threading.Thread:
    """In a work horse: once its parent is no longer `parent_pid` (it died), kill the horse's own
    process group (the horse and whatever it started), or the horse alone if it shares a group."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    watcher = threading.Thread(target=watch, daemon=True, name="transferapp-orphan-watch")
    watcher.start()
    return watcher


class ActsAsWorker(BaseWorker):
    """Every job runs as "worker" in the audit trail (#26): this is the one place every task passes
    (perform_job runs in the work horse, forked or spawned, and in a SimpleWorker alike)."""

    def perform_job(self, *args, **kwargs):
        from transferapp.audit import trail  # models: only once Django is set up

        with trail.acting_as(trail.Actor("worker")):
            return super().perform_job(*args, **kwargs)


class ReapingWorker(ActsAsWorker, Worker):
    reaper = None

    def bootstrap(self, *args, **kwargs):
        from transferapp.jobs.reaper import Reaper  # models: only once Django is set up

        super().bootstrap(*args, **kwargs)  # registered first: its own sweep counts it among the live workers
        self.reaper = Reaper()
        self.reaper.start()
        # Settle what a previous worker left behind before taking jobs (a burst worker may stop at once).
        self.reaper.first_sweep_done.wait(FIRST_SWEEP_WAIT_S)

    def fork_work_horse(self, job, queue):
        # No database connection may cross fork() (see reaper.Reaper): wait for a sweep in progress
        # (it closes its connection) and close this thread's own.
        with self.reaper.sweeping if self.reaper is not None else contextlib.nullcontext():
            connections.close_all()
            super().fork_work_horse(job, queue)  # a forked horse never returns from here

    def main_work_horse(self, job, queue):
        end_when_orphaned(self.pid or os.getppid())  # self.pid: the worker's (a spawned horse reads it from Redis)
        return super().main_work_horse(job, queue)

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
    two minutes of the machine going away (training.selectors.gpu_workers_online)."""

    def __init__(self, *args, worker_ttl=None, **kwargs):
        ttl = settings.GPU_WORKER_TTL_S
        super().__init__(*args, worker_ttl=min(worker_ttl or ttl, ttl), **kwargs)

    def main_work_horse(self, job, queue):
        import django

        django.setup()  # a spawned horse is a bare interpreter: the job's imports need the apps loaded
        return super().main_work_horse(job, queue)
