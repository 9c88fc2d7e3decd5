"""`manage.py gpuworker`: a worker for the `gpu` queue on a machine with an NVIDIA GPU.

The same as `manage.py rqworker gpu --worker-class transferapp.jobs.workers.GpuWorker`, after checking that
this machine has a CUDA device. The check runs in a child interpreter: the worker process itself never
touches CUDA (each job runs in a freshly spawned interpreter, see workers.GpuWorker).
"""
import subprocess
import sys

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

WORKER_CLASS = "transferapp.jobs.workers.GpuWorker"
FIND_GPU = "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"


def cuda_device_name() -> str:
    """The first CUDA device's name, or "" without one (asked in a child process)."""
    try:
        found = subprocess.run([sys.executable, "-c", FIND_GPU], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise CommandError("Looking for a CUDA device took over 5 minutes; check the NVIDIA driver.") from None
    return found.stdout.strip() if found.returncode == 0 else ""


class Command(BaseCommand):
    help = "Run a training worker for the `gpu` queue (each job in a fresh process, so CUDA works)."

    def add_arguments(self, parser):
        parser.add_argument("--burst", action="store_true", help="stop when the queue is empty")
        parser.add_argument("--name", default=None, help="the worker's name (default: host and pid)")
        parser.add_argument("--allow-cpu", action="store_true",
                            help="start even without a CUDA device (tests; it then trains on the CPU)")

    def handle(self, *args, burst, name, allow_cpu, **options):
        gpu = cuda_device_name()
        if not gpu and not allow_cpu:
            raise CommandError(
                "No CUDA device found (torch.cuda.is_available() is false), so this machine would take trainings "
                "from the CPU workers and run them no faster. Run `manage.py rqworker default` here instead, or "
                "check the NVIDIA driver and that the installed PyTorch is a CUDA build.")
        self.stdout.write(f"GPU worker on {gpu or 'the CPU (--allow-cpu)'}")
        # `gpu` first, then the CPU queue: a run queued while every GPU worker was busy still gets
        # the GPU if it frees up first, and a machine with only a GPU worker serves every run.
        call_command("rqworker", "gpu", "default", worker_class=WORKER_CLASS, burst=burst, name=name,
                     verbosity=options.get("verbosity", 1))
