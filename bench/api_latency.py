#!/usr/bin/env python3
"""REST API latency: one image per request (p50/p95) and a 100-image batch (images a second).

Starts the whole app (`manage.py serve`) on a throwaway DATA_DIR, imports a few real JPEG photos
of /work/shared/datasets/flowers (read in place through symlinks), trains a fast EfficientNet-Lite0
with `manage.py train --wait`, publishes it, makes a key with `manage.py create_api_key`, then
calls POST /api/v1/projects/{id}/predict. Exits non-zero when p50 misses the target.

    .venv/bin/python bench/api_latency.py [--per-class 12] [--requests 100] [--p50-ms 30]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from live_app import ROOT, Client, Server, _multipart, app_env, manage

USER, PASSWORD, TITLE = "bench", "bench-password-1", "Flowers API"


def main() -> int:
    args = _arguments()
    data_dir = Path(tempfile.mkdtemp(prefix="transferapp-api-latency-"))
    env = app_env(data_dir, TORCH_THREADS="2")
    photos = _linked_photos(args.data, data_dir / "photos", args.per_class, args.classes)
    manage(env, "migrate", "--verbosity", "0")
    manage(env, "shell", "-c", f"from django.contrib.auth.models import User; User.objects.create_user('{USER}', password='{PASSWORD}')")
    manage(env, "import_images", "--user", USER, "--project", TITLE, str(data_dir / "photos"))
    with Server(env, port=args.port) as server:
        trained = _manage_json(env, "train", "--user", USER, "--project", TITLE, "--preset", "fast", "--wait")
        _publish(env, trained["run"])
        key = _manage_out(env, "create_api_key", "--user", USER, "--project", TITLE).strip().splitlines()[-1]
        return _measure(args, server.base, key, photos, trained)


def _arguments():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("/work/shared/datasets/flowers/train"))
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=12)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--p50-ms", type=float, default=30.0)
    return parser.parse_args()


def _linked_photos(source: Path, target: Path, per_class: int, n_classes: int) -> list[Path]:
    """Class folders of symlinks: the shared photos are read in place, never copied or changed."""
    linked = []
    for class_dir in sorted(p for p in source.iterdir() if p.is_dir())[:n_classes]:
        (target / class_dir.name).mkdir(parents=True)
        for photo in sorted(class_dir.glob("*.jpg"))[:per_class]:
            link = target / class_dir.name / photo.name
            link.symlink_to(photo.resolve())
            linked.append(link)
    return linked


def _manage_out(env, *command) -> str:
    return subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True).stdout


def _manage_json(env, *command) -> dict:
    return json.loads(_manage_out(env, *command).strip().splitlines()[-1])


def _publish(env, run_id: int) -> None:
    manage(env, "shell", "-c", "from transferapp.training import versions; from transferapp.models import TrainingRun; "
                               f"versions.run_publish(run=TrainingRun.objects.get(pk={run_id}))")


def _measure(args, base, key, photos, trained) -> int:
    client = Client(base)
    auth = {"Authorization": f"Bearer {key}"}
    project_id = json.loads(client.get("/api/v1/projects", headers=auth).text)[0]["id"]
    url = f"/api/v1/projects/{project_id}/predict"
    bodies = [p.read_bytes() for p in photos]
    for body in bodies[:5]:  # warm-up: the model is loaded once per web process
        client.request("POST", url, body=body, headers={**auth, "Content-Type": "image/jpeg"})
    latencies = []
    for i in range(args.requests):
        started = time.perf_counter()
        response = client.request("POST", url, body=bodies[i % len(bodies)], headers={**auth, "Content-Type": "image/jpeg"})
        latencies.append((time.perf_counter() - started) * 1000)
        assert response.status == 200, response.text
    files = [("files", f"{i}.jpg", bodies[i % len(bodies)]) for i in range(args.batch)]
    body, content_type = _multipart({}, files)
    started = time.perf_counter()
    response = client.request("POST", url, body=body, headers={**auth, "Content-Type": content_type})
    batch_s = time.perf_counter() - started
    assert response.status == 200 and len(json.loads(response.text)) == args.batch, response.text[:300]
    p50, p95 = statistics.median(latencies), statistics.quantiles(latencies, n=20)[18]
    ok = p50 <= args.p50_ms
    print(json.dumps({"model": {"version": trained["version"], "accuracy": trained["metrics"]["accuracy"],
                                "n_train": trained["metrics"]["n_train"], "n_val": trained["metrics"]["n_val"]},
                      "requests": len(latencies), "p50_ms": round(p50, 1), "p95_ms": round(p95, 1),
                      "batch_images": args.batch, "batch_s": round(batch_s, 2),
                      "batch_images_per_s": round(args.batch / batch_s, 1), "target_p50_ms": args.p50_ms, "ok": ok,
                      "cpu_threads_web": os.environ.get("WEB_TORCH_THREADS", "default")}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
