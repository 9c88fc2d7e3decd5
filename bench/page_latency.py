#!/usr/bin/env python3
"""Page latency while a training runs: the web pages must stay responsive.

Starts the whole app (`manage.py serve`: web + worker + embedded Redis) on a throwaway DATA_DIR,
imports a shared data set, starts a training and requests the project and run pages while it
runs. Prints p50/p95 in milliseconds; exits non-zero when p95 exceeds the target.

    .venv/bin/python bench/page_latency.py [--data ../shared/datasets/flowers/train] [--p95-ms 500]
"""
import argparse
import http.cookiejar
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    args = _arguments()
    data_dir = tempfile.mkdtemp(prefix="transferapp-latency-")
    env = {**os.environ, "LOCAL_MODE": "1", "DATA_DIR": data_dir, "TORCH_THREADS": "2"}
    env.pop("REDIS_URL", None)
    env.pop("DATABASE_URL", None)
    _manage(env, "migrate", "--verbosity", "0")
    _manage(env, "shell", "-c", "from django.contrib.auth.models import User; User.objects.create_user('bench', password='bench-password-1')")
    _manage(env, "import_images", "--user", "bench", "--project", "Latency", str(args.data))
    server = subprocess.Popen([sys.executable, "manage.py", "serve", "--port", str(args.port)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        return _measure(args)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def _arguments():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/datasets/flowers/train")
    parser.add_argument("--port", type=int, default=8931)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--p95-ms", type=float, default=500.0)
    return parser.parse_args()


def _manage(env, *command):
    subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def _measure(args) -> int:
    base = f"http://127.0.0.1:{args.port}"
    opener = _logged_in_opener(base)
    project_url = base + "/projects/1/"
    run_url = _start_training(opener, base)
    latencies, statuses = [], []
    for i in range(args.requests):
        url = run_url if i % 2 else project_url
        started = time.perf_counter()
        with opener.open(url, timeout=30) as response:
            response.read()
        latencies.append((time.perf_counter() - started) * 1000)
        statuses.append(_run_status(opener, run_url) if i % 20 == 0 else None)
        time.sleep(0.05)
    training_during = sum(1 for s in statuses if s in ("queued", "running"))
    p50, p95 = statistics.median(latencies), statistics.quantiles(latencies, n=20)[18]
    ok = p95 <= args.p95_ms and training_during > 0
    print(json.dumps({"requests": len(latencies), "p50_ms": round(p50, 1), "p95_ms": round(p95, 1),
                      "max_ms": round(max(latencies), 1), "samples_while_training": training_during,
                      "target_p95_ms": args.p95_ms, "ok": ok}))
    return 0 if ok else 1


def _logged_in_opener(base):
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    for _ in range(60):  # the server takes a few seconds to start
        try:
            page = opener.open(base + "/accounts/login/", timeout=5).read().decode()
            break
        except OSError:
            time.sleep(1)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"username": "bench", "password": "bench-password-1", "csrfmiddlewaretoken": token})
    opener.open(urllib.request.Request(base + "/accounts/login/", data=form.encode(), headers={"Referer": base}))
    return opener


def _start_training(opener, base) -> str:
    page = opener.open(base + "/projects/1/").read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"base_model": "efficientnet_lite0", "preset": "best", "csrfmiddlewaretoken": token})
    response = opener.open(urllib.request.Request(base + "/projects/1/train/", data=form.encode(), headers={"Referer": base}))
    return response.geturl()


def _run_status(opener, run_url) -> str:
    page = opener.open(run_url).read().decode()
    match = re.search(r'id="run-status">([^<]+)<', page)
    return match.group(1).strip().lower() if match else "unknown"


if __name__ == "__main__":
    sys.exit(main())
