"""Test set-up: the real database and the real Redis named by DATABASE_URL / REDIS_URL, or,
when those are unset, SQLite and an embedded Redis, so the suite also runs on a bare machine."""
import functools
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

PALETTE = {"red": (220, 40, 40), "blue": (40, 60, 220), "green": (40, 180, 60)}


@pytest.fixture(scope="session", autouse=True)
def embedded_redis():
    """Start the embedded Redis when no REDIS_URL was given (the same one `serve` uses). For every
    test: the cache behind the sign-in and sign-up throttles lives there too."""
    from django.conf import settings

    if os.environ.get("REDIS_URL"):
        yield None
        return
    from transferapp.jobs.embedded_redis import start_embedded_redis

    server = start_embedded_redis(Path(settings.EMBEDDED_REDIS_SOCKET))
    yield server
    server.shutdown()


@pytest.fixture
def queue(embedded_redis):
    import django_rq

    q, others = django_rq.get_queue("default"), [django_rq.get_queue("intake"), django_rq.get_queue("gpu")]
    for each in (q, *others):
        each.empty()
    yield q
    for each in (q, *others):
        each.empty()


@pytest.fixture(autouse=True)
def private_storage(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.ARTIFACTS_ROOT = tmp_path / "media" / "artifacts"
    settings.FEATURE_CACHE_DIR = tmp_path / "media" / "feature-cache"
    settings.STORAGES = {**settings.STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
    return tmp_path


def image_bytes(color="red", size=(64, 64), fmt="PNG", shape_seed=0) -> bytes:
    """A small real image: a coloured background with a shape, different per seed so hashes differ."""
    rgb = PALETTE.get(color, color)
    image = Image.new("RGB", size, rgb)
    draw = ImageDraw.Draw(image)
    offset = (shape_seed * 7) % (size[0] // 2)
    draw.ellipse([offset, offset, offset + size[0] // 3, offset + size[1] // 3], fill=(255, 255, 255))
    draw.point((shape_seed % size[0], (shape_seed * 3) % size[1]), fill=(0, 0, 0))
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("alice", password="a-long-password-1")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user("mallory", password="a-long-password-2")


@pytest.fixture
def alice(client, user):
    client.force_login(user)
    return client


pytest_plugins = ["tests.browser_support", "tests.s3_support"]


@functools.lru_cache(maxsize=1)
def sixteen_bit_bomb() -> bytes:
    """The outside review's 16-bit memory bomb (issue 30): a 6300x6300 16-bit grey PNG, under the
    40-megapixel cap, whose gradient compresses to ~90 KB; decoding it once cost +1.6 GB and 5 s."""
    ramp = (np.arange(6300, dtype=np.uint32) * 65535 // 6299).astype(np.uint16)
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.broadcast_to(ramp, (6300, 6300)))).save(out, format="PNG")
    return out.getvalue()
