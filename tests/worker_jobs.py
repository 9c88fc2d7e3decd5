"""Jobs that tests put on the real queue, for a real worker process to run."""
import os
from pathlib import Path

from django.conf import settings


def database_files_open_at_start() -> list[str]:
    """The database files this work horse has open before it made any query of its own: whatever it
    lists came across fork() from the worker (an SQLite connection must never cross it)."""
    name = Path(settings.DATABASES["default"]["NAME"]).name
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if Path(target).name.startswith(name):
            found.append(target)
    return found
