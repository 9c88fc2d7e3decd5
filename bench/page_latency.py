#!/usr/bin/env python3
"""Page latency while a training runs: the web pages must stay responsive.

Starts the whole app (`manage.py serve`: web + worker + embedded Redis) on a throwaway DATA_DIR,
imports a shared data set, starts a training and requests the project and run pages while it
runs. Prints p50/p95 in milliseconds; exits non-zero when p95 exceeds the target.

    .venv/bin/python bench/page_latency.py [--data ../shared/datasets/flowers/train] [--p95-ms 500]
"""
import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from live_app import ROOT, Client, Server, app_env, manage, run_status


def main() -> int:
    args = _arguments()
    env = app_env(tempfile.mkdtemp(prefix="transferapp-latency-"), TORCH_THREADS="2")
    manage(env, "migrate", "--verbosity", "0")
    manage(env, "shell", "-c", "from django.contrib.auth.models import User; User.objects.create_user('bench', password='bench-password-1')")
    manage(env, "import_images", "--user", "bench", "--project", "Latency", str(args.data))
    with Server(env, port=args.port) as server:
        return _measure(args, server.base)


def _arguments():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/datasets/flowers/train")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--p95-ms", type=float, default=500.0)
    return parser.parse_args()


def _measure(args, base) -> int:
    client = Client(base)
    client.log_in("bench", "bench-password-1")
    project_url = "/projects/1/"
    run_url = _start_training(client)
    latencies, statuses = [], []
    for i in range(args.requests):
        url = run_url if i % 2 else project_url
        started = time.perf_counter()
        client.get(url)
        latencies.append((time.perf_counter() - started) * 1000)
        statuses.append(run_status(client.get(run_url).text) if i % 20 == 0 else None)
        time.sleep(0.05)
    training_during = sum(1 for s in statuses if s in ("queued", "running"))
    p50, p95 = statistics.median(latencies), statistics.quantiles(latencies, n=20)[18]
    ok = p95 <= args.p95_ms and training_during > 0
    print(json.dumps({"requests": len(latencies), "p50_ms": round(p50, 1), "p95_ms": round(p95, 1),
                      "max_ms": round(max(latencies), 1), "samples_while_training": training_during,
                      "target_p95_ms": args.p95_ms, "ok": ok}))
    return 0 if ok else 1


def _start_training(client) -> str:
    client.get("/projects/1/")
    response = client.post("/projects/1/train/", {"base_model": "efficientnet_lite0", "preset": "best"})
    assert response.status == 302, f"training was not started (HTTP {response.status})"
    return response.location


if __name__ == "__main__":
    sys.exit(main())
