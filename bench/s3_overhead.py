"""What object storage adds to a training: the same 500 flower images trained with local files and
with a SeaweedFS bucket (cold scratch cache), wall time of each and the difference.

    .venv/bin/python bench/s3_overhead.py [--preset fast] [--threads 2]

Local: the engine reads the images where they lie and writes the model folder. Bucket: the images
(uploaded beforehand, untimed, under their content-hash names as the app stores them) are fetched by
blobs.media_paths into an empty scratch folder, the engine trains on those copies, and the model
folder is published to the bucket (blobs.artifact_publish), as a worker does. Each side computes its
features from scratch (its own empty feature cache), so the difference is the storage's cost alone.
Prints one JSON line.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
DATASETS = next((p / "shared" / "datasets" for p in ROOT.parents if (p / "shared" / "datasets").is_dir()),
                ROOT.parent / "shared" / "datasets")
sys.path.insert(0, str(ROOT))


def _configure(server, scratch: Path) -> None:
    import django
    from django.conf import settings

    os.environ.setdefault("SECRET_KEY", "bench-only")  # transferapp.settings is read for s3_storage()
    os.environ.setdefault("LOCAL_MODE", "1")

    from transferapp.settings import s3_storage

    settings.configure(S3_BUCKET=server.bucket, S3_PUBLIC_URL="", SCRATCH_DIR=scratch, SCRATCH_CACHE_MB=4096,
                       STORAGES={"default": s3_storage(server.bucket, server.endpoint, server.access_key,
                                                       server.secret_key, server.region)})
    django.setup()


def _upload(server, samples) -> list[str]:
    """Store each image under the name the app gives it (projects/1/images/<sha256>.<suffix>)."""
    client, names = server.client(), []
    for sample in samples:
        data = Path(sample.path).read_bytes()
        names.append(f"projects/1/images/{hashlib.sha256(data).hexdigest()}{Path(sample.path).suffix.lower()}")
        client.put_object(Bucket=server.bucket, Key=names[-1], Body=data)
    return names


def _train(train, val, classes, config, out_dir: Path, cache_dir: Path) -> None:
    from transferapp.engine import fit

    fit(train, val, classes, config, out_dir, cache_dir=cache_dir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    from tests.s3_support import start_seaweedfs, stop_seaweedfs
    from transferapp.engine import TrainConfig, folder_samples
    from transferapp.engine.data import development_split

    torch.set_num_threads(args.threads)
    classes, samples, _ = folder_samples(DATASETS / "flowers" / "train")
    config = TrainConfig(preset=args.preset)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        server = start_seaweedfs(tmp / "seaweedfs")
        try:
            _configure(server, tmp / "scratch")
            from transferapp.storage import blobs

            names = _upload(server, samples)
            train, val = development_split(samples, config)
            # Untimed warm-up (the network's first build, the ONNX session): neither side pays it.
            _train(train[::10], val[::5], classes, config, tmp / "warm-model", tmp / "warm-features")

            started = time.perf_counter()
            _train(train, val, classes, config, tmp / "local-model", tmp / "local-features")
            local_s = time.perf_counter() - started

            run = SimpleNamespace(project_id=1, pk=1)
            started = time.perf_counter()
            fetched = dict(zip((s.path for s in samples), blobs.media_paths(names)))
            fetch_s = time.perf_counter() - started
            moved = [[replace(s, path=str(fetched[s.path])) for s in part] for part in (train, val)]
            with blobs.training_into(run) as out_dir:
                _train(*moved, classes, config, out_dir, tmp / "bucket-features")
            publish_started = time.perf_counter()
            blobs.artifact_publish(run)
            publish_s = time.perf_counter() - publish_started
            bucket_s = time.perf_counter() - started
        finally:
            stop_seaweedfs(server)
    print(json.dumps({"images": len(samples), "preset": args.preset, "threads": args.threads,
                      "local_s": round(local_s, 1), "bucket_s": round(bucket_s, 1),
                      "extra_s": round(bucket_s - local_s, 1), "fetch_s": round(fetch_s, 2),
                      "publish_s": round(publish_s, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
