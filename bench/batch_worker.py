#!/usr/bin/env python3
"""A large batch prediction through the whole app: a zip of real JPEG photos posted to the predict
page's batch form, predicted by the worker, the progress panel polled as htmx does, the CSV fetched.

Starts `manage.py serve` (web, workers, embedded Redis) on a throwaway DATA_DIR, imports a few
photos of /work/shared/datasets/flowers, trains a fast EfficientNet-Lite0 (as api_latency.py does),
then sends --images photos (the shared ones in turn) as one zip. Prints seconds and images a second.

    .venv/bin/python bench/batch_worker.py [--images 100]
"""
import argparse
import csv
import io
import json
import re
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from api_latency import PASSWORD, TITLE, USER, _linked_photos, _manage_json
from live_app import Client, Server, app_env, manage


def main() -> int:
    args = _arguments()
    data_dir = Path(tempfile.mkdtemp(prefix="transferapp-batch-worker-"))
    env = app_env(data_dir, TORCH_THREADS="2")
    photos = _linked_photos(args.data, data_dir / "photos", 12, 3)
    manage(env, "migrate", "--verbosity", "0")
    manage(env, "shell", "-c", f"from django.contrib.auth.models import User; User.objects.create_user('{USER}', password='{PASSWORD}')")
    manage(env, "import_images", "--user", USER, "--project", TITLE, str(data_dir / "photos"))
    with Server(env) as server:
        _manage_json(env, "train", "--user", USER, "--project", TITLE, "--preset", "fast", "--wait")
        client = Client(server.base, timeout_s=600)
        client.log_in(USER, PASSWORD)
        project_id = re.search(r'href="/projects/(\d+)/"', client.get("/projects/").text).group(1)
        return _measure(client, project_id, photos, args.images)


def _arguments():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("/work/shared/datasets/flowers/train"))
    parser.add_argument("--images", type=int, default=100)
    return parser.parse_args()


def _measure(client, project_id, photos, n_images) -> int:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(n_images):
            zf.writestr(f"photos/{i:04d}.jpg", photos[i % len(photos)].read_bytes())
    client.get(f"/projects/{project_id}/predict/")  # the CSRF cookie
    started = time.perf_counter()
    sent = client.post(f"/projects/{project_id}/predict/batch/", files=[("files", "photos.zip", archive.getvalue())])
    batch_id = re.search(r"batch=(\d+)", sent.location).group(1)
    polls = 0
    while True:  # as the page does: once a second until 286
        polls += 1
        panel = client.get(f"/batches/{batch_id}/?live=1", headers={"HX-Request": "true"})
        if panel.status == 286:
            break
        time.sleep(1)
    seconds = time.perf_counter() - started
    rows = list(csv.DictReader(io.StringIO(client.get(f"/batches/{batch_id}/download/").text)))
    predicted = sum(1 for row in rows if row["label"])
    print(json.dumps({"images": n_images, "predicted": predicted, "seconds_post_to_done": round(seconds, 1),
                      "images_per_s": round(n_images / seconds, 1), "polls": polls}))
    return 0 if predicted == n_images else 1


if __name__ == "__main__":
    sys.exit(main())
