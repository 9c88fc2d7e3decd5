#!/usr/bin/env python3
"""Soak test: many simulated users at once against the whole app, nothing may fail or get lost.

Starts the app as a user would (`manage.py serve`, LOCAL_MODE=1, a throwaway DATA_DIR, a free
port on 127.0.0.1), creates accounts, projects, classes and images through HTTP with the real
CSRF flow, trains a first model per account, then for --duration seconds runs, in threads:

- 20 users browsing pages (projects, project, class, run, live run poll, predict page,
  thumbnails) and predicting images;
- 4 users uploading new images into their own class;
- 2 users training (fast preset, started with the train form), again as soon as a run ends.

It reports the requests made, the errors (any 5xx, connection error or unexpected status;
target 0), p50/p95 latency per kind of request, the training runs completed, and checks that
every image whose upload was answered with success is there afterwards: on its class page, in
the database and on disk. Exits non-zero when there was an error or an image was lost.
Everything is bounded (threads, requests per user, time) and the server is stopped at the end.

    .venv/bin/python bench/soak.py [--duration 180] [--browsers 20] [--uploaders 4] [--trainers 2]
"""
import argparse
import io
import json
import random
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

from live_app import Client, Server, app_env, run_status

PASSWORD = "soak-password-long-1"
CLASSES = ("red", "blue")
SEED_IMAGES_PER_CLASS = 6
FINISHED = ("succeeded", "failed", "cancelled")
POLL_S = 2.0  # as the run page polls
MAX_REQUESTS_PER_USER = 20_000  # a bound even if requests are very fast


def main() -> int:
    args = _arguments()
    data_dir = Path(tempfile.mkdtemp(prefix="transferapp-soak-"))
    # One torch thread per job: two trainings and the feature warm-up share a small machine.
    # Five simulated users share each account, so the per-user limits that stop one person from
    # flooding the server (predictions a minute, trainings at once) are raised: this measures capacity.
    env = app_env(data_dir, TORCH_THREADS="1", PREDICT_RATE_PER_MIN="100000", QUOTA_RUNS="0")
    setup, stats = Stats(), Stats()  # set-up requests are counted apart from the load's
    print(f"soak: starting the app in {data_dir} ...", flush=True)
    with Server(env, workers=args.workers, log_path=data_dir / "serve.log") as server:
        world = _set_up(server.base, args, setup)
        print(f"soak: {len(world.accounts)} accounts with a model ready; {args.duration:.0f} s of load ...", flush=True)
        _load(server.base, args, world, stats)
        lost = _lost_images(server.base, world, data_dir, stats)
    report = stats.report(setup, lost, args)
    print(json.dumps(report, indent=2))
    if report["ok"]:
        shutil.rmtree(data_dir, ignore_errors=True)
    else:
        print(f"soak: FAILED; the data and the server's log (serve.log) are kept in {data_dir}", file=sys.stderr)
    return 0 if report["ok"] else 1


def _arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=180, help="seconds of load (default 180)")
    parser.add_argument("--browsers", type=int, default=20, help="users browsing and predicting")
    parser.add_argument("--uploaders", type=int, default=4, help="users uploading images")
    parser.add_argument("--trainers", type=int, default=2, help="users training again and again")
    parser.add_argument("--accounts", type=int, default=4, help="accounts the users share (one session each)")
    parser.add_argument("--workers", type=int, default=2, help="training workers `serve` starts")
    parser.add_argument("--think-s", type=float, default=0.3, help="mean pause between a user's requests")
    parser.add_argument("--grace", type=float, default=240, help="seconds a training running at the end may still take")
    return parser.parse_args()


# ---- measuring ----


class Stats:
    """Latency per kind of request and every error, from all threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.latency = defaultdict(list)
        self.errors = defaultdict(int)
        self.error_samples = []
        self.requests = 0
        self.runs_completed = 0
        self.uploads_accepted = 0

    def call(self, kind, send, expect=(200,)):
        """send() makes one request; anything but an expected status is an error."""
        started = time.perf_counter()
        try:
            response = send()
        except OSError as exc:  # refused, reset, timed out
            self._error(kind, f"connection error: {exc}")
            return None
        with self.lock:
            self.requests += 1
            self.latency[kind].append((time.perf_counter() - started) * 1000)
        if response.status not in expect:
            self._error(kind, f"HTTP {response.status}: {response.text[:200]!r}")
            return None
        return response

    def _error(self, kind, detail):
        with self.lock:
            self.errors[kind] += 1
            if len(self.error_samples) < 20:
                self.error_samples.append(f"{kind}: {detail}")

    def problem(self, kind, detail):
        """An error that is not an HTTP status: a failed run, a page without what it must show."""
        self._error(kind, detail)

    def report(self, setup, lost, args) -> dict:
        kinds = {}
        for kind, values in sorted(self.latency.items()):
            kinds[kind] = {
                "count": len(values),
                "p50_ms": round(statistics.median(values), 1),
                "p95_ms": round(_p95(values), 1),
                "max_ms": round(max(values), 1),
                "errors": self.errors.get(kind, 0),
            }
        errors = sum(self.errors.values()) + sum(setup.errors.values())
        return {
            "duration_s": args.duration,
            "setup": {"requests": setup.requests, "errors": sum(setup.errors.values())},
            "users": {"browsing": args.browsers, "uploading": args.uploaders, "training": args.trainers},
            "requests": self.requests,
            "requests_per_s": round(self.requests / args.duration, 1),
            "errors": errors,
            "error_samples": setup.error_samples + self.error_samples,
            "training_runs_completed": self.runs_completed,
            "uploads_accepted": self.uploads_accepted,
            "images_lost": len(lost),
            "lost_samples": lost[:10],
            "per_kind": kinds,
            "ok": errors == 0 and not lost,
        }


def _p95(values):
    # "inclusive": a p95 within the measured values, also for the kinds with few samples.
    return statistics.quantiles(values, n=20, method="inclusive")[18] if len(values) >= 2 else values[0]


# ---- the world the users work in ----


@dataclass
class Project:
    pk: int
    labels: dict  # class name -> class id
    run_url: str = ""
    image_ids: list = field(default_factory=list)


@dataclass
class Account:
    username: str
    model: Project  # trained during set-up: browsed and predicted with


@dataclass
class Role:
    """One uploading or training user: an account's session working in a project of its own."""

    account: Account
    project: Project
    accepted: list = field(default_factory=list)  # names of uploads answered with success


@dataclass
class World:
    accounts: list
    uploaders: list
    trainers: list


_image_counter = iter(range(1, 10**9))
_counter_lock = threading.Lock()


def _png(color=None) -> bytes:
    """A small image, different from every other one this process makes (so never a duplicate)."""
    with _counter_lock:
        n = next(_image_counter)
    rng = random.Random(n)
    rgb = {"red": (220, 40, 40), "blue": (40, 60, 220)}.get(color) or tuple(rng.randrange(256) for _ in range(3))
    image = Image.new("RGB", (64, 64), rgb)
    draw = ImageDraw.Draw(image)
    x, y = rng.randrange(40), rng.randrange(40)
    draw.ellipse([x, y, x + 20, y + 20], fill=(255, 255, 255))
    draw.text((2, 2), str(n), fill=(0, 0, 0))  # unique pixels: unique bytes
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _set_up(base, args, stats) -> World:
    accounts = []
    for i in range(args.accounts):
        client = Client(base)
        username = f"soak-{i}"
        stats.call("sign up", lambda: client.sign_up(username, PASSWORD), expect=(302,))
        accounts.append(Account(username=username, model=_project_with_images(client, stats, f"Model {i}")))
    uploaders, trainers = [], []
    for u in range(args.uploaders):
        account = accounts[u % len(accounts)]
        client = _signed_in(base, account, stats)
        uploaders.append(Role(account, _new_project(client, stats, f"Uploads {u}", classes=("incoming",))))
    for t in range(args.trainers):
        account = accounts[t % len(accounts)]
        client = _signed_in(base, account, stats)
        trainers.append(Role(account, _project_with_images(client, stats, f"Training {t}")))
    # A first model per account, so that browsing users can predict from the first second.
    clients = [_signed_in(base, account, stats) for account in accounts]
    for client, account in zip(clients, accounts):
        account.model.run_url = _start_training(client, account.model, stats)
    deadline = time.monotonic() + 900
    for client, account in zip(clients, accounts):
        status = _wait_for_run(client, account.model.run_url, stats, deadline)
        if status != "succeeded":
            raise SystemExit(f"set-up: the first model of {account.username} ended {status!r}")
    return World(accounts=accounts, uploaders=uploaders, trainers=trainers)


def _signed_in(base, account, stats) -> Client:
    client = Client(base)
    stats.call("log in", lambda: client.log_in(account.username, PASSWORD), expect=(302,))
    return client


def _new_project(client, stats, name, classes=CLASSES) -> Project:
    stats.call("project list", lambda: client.get("/projects/"))
    created = stats.call("create project", lambda: client.post("/projects/", {"name": name}), expect=(302,))
    pk = int(re.search(r"/projects/(\d+)/", created.location).group(1))
    labels = {}
    for label in classes:
        made = stats.call("add class", lambda: client.post(f"/projects/{pk}/classes/new/", {"name": label}), expect=(302,))
        labels[label] = int(re.search(r"/classes/(\d+)/", made.location).group(1))
    return Project(pk=pk, labels=labels)


def _project_with_images(client, stats, name) -> Project:
    project = _new_project(client, stats, name)
    for label, label_pk in project.labels.items():
        for i in range(SEED_IMAGES_PER_CLASS):
            response = _upload(client, stats, project.pk, label_pk, f"{label}-{i}.png", _png(label))
            if response is not None:
                project.image_ids.extend(image["id"] for image in json.loads(response.body)["images"])
    return project


def _upload(client, stats, project_pk, label_pk, name, data):
    return stats.call(
        "upload POST",
        lambda: client.post(f"/projects/{project_pk}/classes/{label_pk}/upload/", files=[("files", name, data)],
                            headers={"X-Requested-With": "XMLHttpRequest"}),
    )


def _start_training(client, project, stats) -> str:
    stats.call("project page", lambda: client.get(f"/projects/{project.pk}/"))
    started = stats.call(
        "train POST",
        lambda: client.post(f"/projects/{project.pk}/train/", {"base_model": "efficientnet_lite0", "preset": "fast"}),
        expect=(302,),
    )
    if started is None or "/runs/" not in started.location:
        stats.problem("train POST", f"no run was started: redirected to {started and started.location!r}")
        return ""
    return started.location


def _wait_for_run(client, run_url, stats, deadline) -> str:
    status = "unknown"
    while run_url and time.monotonic() < deadline:
        page = stats.call("run page", lambda: client.get(run_url))
        status = run_status(page.text) if page is not None else status
        if status in FINISHED:
            return status
        time.sleep(POLL_S)
    return status


# ---- the load ----


def _load(base, args, world, stats):
    stop_at = time.monotonic() + args.duration
    accounts = world.accounts
    threads = [threading.Thread(target=_browse, args=(base, accounts[i % len(accounts)], stats, stop_at, args.think_s, i))
               for i in range(args.browsers)]
    threads += [threading.Thread(target=_upload_forever, args=(base, r, stats, stop_at, args.think_s)) for r in world.uploaders]
    threads += [threading.Thread(target=_train_forever, args=(base, r, stats, stop_at, args.grace)) for r in world.trainers]
    for thread in threads:
        thread.daemon = True
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, stop_at - time.monotonic()) + args.grace + 120)
    stuck = [t for t in threads if t.is_alive()]
    if stuck:
        stats.problem("load", f"{len(stuck)} simulated user(s) still busy after the grace period")


def _pause(think_s):
    time.sleep(random.expovariate(1 / think_s) if think_s > 0 else 0)


def _browse(base, account, stats, stop_at, think_s, seed):
    """Looks around and predicts: the mix a user of a trained project makes."""
    rng = random.Random(seed)
    client = _signed_in(base, account, stats)
    project = account.model
    label_pk = rng.choice(list(project.labels.values()))
    live = {"HX-Request": "true"}
    actions = [
        ("project list", lambda: client.get("/projects/"), (200,)),
        ("project page", lambda: client.get(f"/projects/{project.pk}/"), (200,)),
        ("class page", lambda: client.get(f"/projects/{project.pk}/classes/{label_pk}/"), (200,)),
        ("run page", lambda: client.get(project.run_url), (200,)),
        ("run live poll", lambda: client.get(project.run_url + "?live=1", headers=live), (200, 286)),
        ("predict page", lambda: client.get(f"/projects/{project.pk}/predict/"), (200,)),
        ("thumbnail", lambda: client.get(f"/images/{rng.choice(project.image_ids)}/thumbnail/"), (200,)),
    ]
    for _ in range(MAX_REQUESTS_PER_USER):
        if time.monotonic() >= stop_at:
            return
        if rng.random() < 0.3:
            _predict(client, project, stats, rng)
        else:
            kind, send, expect = rng.choice(actions)
            stats.call(kind, send, expect)
        _pause(think_s)


def _predict(client, project, stats, rng):
    color = rng.choice(CLASSES)
    response = stats.call(
        "predict POST",
        lambda: client.post(f"/projects/{project.pk}/predict/", files=[("files", f"new-{color}.png", _png(color))],
                            headers={"X-Requested-With": "XMLHttpRequest"}),
    )
    if response is not None and 'class="top-class"' not in response.text:
        stats.problem("predict POST", f"no prediction in the answer: {response.text[:200]!r}")


def _upload_forever(base, role, stats, stop_at, think_s):
    client = _signed_in(base, role.account, stats)
    project = role.project
    label_pk = project.labels["incoming"]
    client.get(f"/projects/{project.pk}/classes/{label_pk}/")
    for n in range(MAX_REQUESTS_PER_USER):
        if time.monotonic() >= stop_at:
            return
        name = f"upload-{project.pk}-{n}.png"
        response = _upload(client, stats, project.pk, label_pk, name, _png())
        if response is not None and json.loads(response.body).get("added") == 1:
            role.accepted.append(name)
            with stats.lock:
                stats.uploads_accepted += 1
        if n % 10 == 9:  # now and then, look at the grid as the page's refresh does
            stats.call("class page", lambda: client.get(f"/projects/{project.pk}/classes/{label_pk}/", headers={"HX-Request": "true"}))
        _pause(think_s)


def _train_forever(base, role, stats, stop_at, grace):
    """Train, watch the run page until it ends, train again; the last run may finish in the grace time."""
    client = _signed_in(base, role.account, stats)
    for _ in range(1000):
        if time.monotonic() >= stop_at:
            return
        run_url = _start_training(client, role.project, stats)
        status = _wait_for_run(client, run_url, stats, stop_at + grace)
        if status == "succeeded":
            with stats.lock:
                stats.runs_completed += 1
        elif run_url:
            stats.problem("training", f"{run_url} ended {status!r}")
            if status not in FINISHED:
                return


# ---- nothing lost ----


def _lost_images(base, world, data_dir, stats) -> list[str]:
    """Every upload answered with success: on its class page, a database row, a file on disk."""
    database = sqlite3.connect(f"file:{data_dir / 'db.sqlite3'}?mode=ro", uri=True)
    media = data_dir / "media"
    lost = []
    try:
        for role in world.uploaders:
            client = _signed_in(base, role.account, stats)
            label_pk = role.project.labels["incoming"]
            page = stats.call("class page", lambda: client.get(f"/projects/{role.project.pk}/classes/{label_pk}/"))
            shown = set(re.findall(r'<img src="/images/\d+/thumbnail/" alt="([^"]+)"', page.text)) if page else set()
            rows = dict(database.execute("SELECT original_name, file FROM transferapp_image WHERE label_id = ?", (label_pk,)))
            for name in role.accepted:
                if name not in shown:
                    lost.append(f"{name}: not on its class page")
                elif name not in rows:
                    lost.append(f"{name}: no database row")
                elif not (media / rows[name]).is_file():
                    lost.append(f"{name}: file {rows[name]} missing on disk")
    finally:
        database.close()
    return lost


if __name__ == "__main__":
    sys.exit(main())
