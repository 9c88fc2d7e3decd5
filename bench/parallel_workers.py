"""Two CPU workers training two projects at once vs one worker training them one after the other.

    .venv/bin/python bench/parallel_workers.py [--per-class 60] [--preset fast|best] [--budget-s 60]

Builds two projects from real images of ../shared/datasets (flowers: 5 classes, brick_crack: 2, the
first --per-class images of each class, read in place), in a throwaway DATA_DIR with its own SQLite
database and the Redis database named by --redis-url (emptied first). Then, for each arrangement,
starts real `manage.py rqworker default` processes, waits until they are registered, starts both
trainings through the services (as the Train button does) and times until both have finished:

  one after the other: 1 worker, TORCH_THREADS = all cores
  at once:             2 workers, TORCH_THREADS = cores / 2 each (the README's advice)

The feature cache is emptied before each arrangement, so both compute every feature.
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATASETS = next((d / "shared" / "datasets" for d in (ROOT.parent, ROOT.parent.parent, ROOT)
                 if (d / "shared" / "datasets").is_dir()), ROOT.parent / "shared" / "datasets")


def main() -> int:
    args = _parser().parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="parallel-workers-"))
    env = {**os.environ, "LOCAL_MODE": "1", "DATA_DIR": str(data_dir), "REDIS_URL": args.redis_url,
           "DATABASE_URL": f"sqlite:///{data_dir / 'db.sqlite3'}", "QUOTA_RUNS": "0", "LOG_LEVEL": "WARNING"}
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "transferapp.settings"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    _empty_redis()
    projects = _projects(args.per_class)
    cores = os.cpu_count() or 2
    results = []
    try:
        arrangements = [("one after the other", 1, cores), ("at once", 2, max(1, cores // 2))]
        # Each arrangement twice, interleaved (A B B A): whatever warms up (disk cache, first imports) or
        # whatever else the machine is doing meanwhile weighs on both alike.
        for label, workers, threads in arrangements + arrangements[::-1]:
            results.append((label, workers, threads, *_arrangement(projects, workers, threads, env, args)))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"\n{cores} cores; preset {args.preset}; {', '.join(f'{p.name} ({p.images.count()} images)' for p in projects)}")
    for label, workers, threads, wall, each in results:
        print(f"{label:>20}: {workers} worker(s) x {threads} thread(s): {wall:6.1f} s wall "
              f"(runs: {', '.join(f'{s:.1f} s' for s in each)})")
    walls = {label: [r[3] for r in results if r[0] == label] for label, *_ in arrangements}
    ratio = sum(walls["one after the other"]) / sum(walls["at once"])
    print(f"two workers at once finished both in {1 / ratio:.2f}x the time of one after the other "
          f"({ratio:.2f}x throughput; sums of both repeats)")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-class", type=int, default=60, help="images a class from each data set (default 60)")
    p.add_argument("--preset", choices=("fast", "best"), default="fast")
    p.add_argument("--budget-s", type=float, default=60, help="each run's time budget (default 60 s)")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/10", help="a Redis database this may empty")
    return p


def _empty_redis() -> None:
    import django_rq

    django_rq.get_queue("default").connection.flushdb()


def _projects(per_class: int):
    from django.contrib.auth import get_user_model

    from transferapp.engine.data import folder_samples
    from transferapp.library import images as library_images
    from transferapp.library import projects as library_projects

    owner = get_user_model().objects.create_user("bench", password="a-long-password-9")
    projects = []
    for name in ("flowers", "brick_crack"):
        classes, train, _ = folder_samples(DATASETS / name)
        project = library_projects.project_create(owner=owner, name=name)
        for index, class_name in enumerate(classes):
            label = library_projects.label_create(project=project, name=class_name)
            for sample in [s for s in train if s.label == index][:per_class]:
                path = Path(sample.path)
                library_images.image_add(label=label, name=path.name, data=path.read_bytes())  # a duplicate is skipped
        projects.append(project)
    return projects


def _arrangement(projects, n_workers: int, threads: int, env: dict, args) -> tuple[float, list[float]]:
    import django_rq
    from django.conf import settings
    from rq import Worker

    from transferapp.models import TrainingRun
    from transferapp.training import runs as training_runs

    shutil.rmtree(settings.FEATURE_CACHE_DIR, ignore_errors=True)
    worker_env = {**env, "TORCH_THREADS": str(threads)}
    workers = [subprocess.Popen([sys.executable, "manage.py", "rqworker", "default"], cwd=ROOT, env=worker_env,
                                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(n_workers)]
    queue = django_rq.get_queue("default")
    try:
        _wait(lambda: len(Worker.all(queue=queue)) == n_workers, "workers to register")
        time.sleep(2)  # their reapers' first sweep
        started = time.perf_counter()
        runs = [training_runs.training_start(project=p, base_model="efficientnet_lite0", preset=args.preset,
                                        config={"time_budget_s": args.budget_s, "epochs": 3}) for p in projects]
        _wait(lambda: all(r.is_finished for r in TrainingRun.objects.filter(pk__in=[r.pk for r in runs])),
              "both trainings", timeout_s=3600)
        wall = time.perf_counter() - started
        done = list(TrainingRun.objects.filter(pk__in=[r.pk for r in runs]).order_by("pk"))
        for run in done:
            assert run.status == "succeeded", run.error
        return wall, [run.metrics["seconds"] for run in done]
    finally:
        for process in workers:
            os.killpg(process.pid, signal.SIGTERM)
        for process in workers:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _wait(condition, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
