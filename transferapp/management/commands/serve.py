"""One command runs everything: the embedded Redis (when REDIS_URL is unset), the
database migrations, N training workers, one intake worker (imports, feature warm-up)
and the web server, until Ctrl-C."""
import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from transferapp.jobs.embedded_redis import start_embedded_redis, stop_embedded_redis

# Seconds the children get, all together, to stop after Ctrl-C or SIGTERM before they are killed.
STOP_GRACE_S = 15


class Command(BaseCommand):
    help = "Run the web server, training worker(s) and, if REDIS_URL is unset, an embedded Redis."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--workers", type=int, default=1, help="training workers to start")

    def handle(self, *args, host, port, workers, **options):
        # Before any child exists: `kill <pid>` must stop the children too, like Ctrl-C does.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        # Ctrl-C must stop it even when it was started with SIGINT ignored (a background job of a
        # script inherits that, and Python then never raises KeyboardInterrupt).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        redis = self._start_redis()
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        env = {**os.environ, "REDIS_URL": settings.RQ_QUEUES["default"]["URL"]}
        children = [self._spawn_worker(env, "default") for _ in range(workers)]
        children.append(self._spawn_worker(env, "intake"))
        children.append(self._spawn_web(env, host, port))
        self.stdout.write(self.style.SUCCESS(f"\ntransferapp is running: open http://{host}:{port}/ (Ctrl-C stops it)\n"))
        try:
            self._wait(children)
        finally:
            # A second SIGTERM/Ctrl-C (dev.py passes its signals on) must not cut the clean-up short.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            stop_children(children)
            stop_embedded_redis(redis)

    def _start_redis(self):
        if os.environ.get("REDIS_URL"):
            return None
        server = start_embedded_redis(settings.EMBEDDED_REDIS_SOCKET)
        self.stdout.write(f"Embedded Redis on {settings.EMBEDDED_REDIS_SOCKET}")
        return server

    def _spawn_worker(self, env, queue):
        return subprocess.Popen([sys.executable, "manage.py", "rqworker", queue], env=env, cwd=settings.BASE_DIR,
                                start_new_session=True)

    def _spawn_web(self, env, host, port):
        command = [
            sys.executable, "-m", "gunicorn", "transferapp.wsgi",
            "--bind", f"{host}:{port}",
            # Threads keep pages responsive while an upload or a prediction is in progress.
            "--worker-class", "gthread", "--threads", "8", "--workers", "1",
            "--timeout", "120", "--graceful-timeout", str(STOP_GRACE_S - 5), "--access-logfile", "-",
        ]  # fmt: skip
        return subprocess.Popen(command, env=env, cwd=settings.BASE_DIR, start_new_session=True)

    def _wait(self, children):
        try:
            while all(child.poll() is None for child in children):
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        dead = [child for child in children if child.poll() is not None]
        if dead:
            self.stderr.write(f"A process exited (code {dead[0].returncode}); stopping the others.")


def stop_children(children: list[subprocess.Popen]) -> None:
    """Stop what `serve` started, each child with its process group (each started in its own): a
    SIGTERM, a second one, then a kill at one shared deadline. A work horse has a group of its own,
    which its worker stops; one whose worker died ends itself (workers.end_when_orphaned)."""
    for child in children:
        _signal_group(child, signal.SIGTERM)
    # An rq worker answers a first SIGTERM by waiting for its job; a second one, a second
    # later, kills the job's work horse (its own process group) so no training is orphaned.
    time.sleep(1.5)
    for child in children:
        _signal_group(child, signal.SIGTERM)
    # One deadline for all of them (not 15 s each): a stop that hangs is worse than a kill.
    deadline = time.monotonic() + STOP_GRACE_S
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _signal_group(child, signal.SIGKILL)  # what it started and left behind in its group, too
        child.wait()


def _signal_group(child: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(child.pid, signum)  # its group's id is its pid (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone: the child and everything it left in its group have ended
