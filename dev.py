#!/usr/bin/env python3
"""The two set-up commands, for a fresh clone with only Python 3.11+:

    python3 dev.py run     # create .venv, install, migrate, start web + worker + embedded Redis
    python3 dev.py test    # create .venv, install with test extras, run the whole test suite
    python3 dev.py manage COMMAND ...   # a manage.py command (fetch_weights, import_images, ...)
                                        # on this machine's local set-up, like `run`

Uses only the standard library until the virtual environment exists.
"""
import hashlib
import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_environment(extras: str) -> None:
    """Create .venv and (re)install only when pyproject.toml or the extras changed."""
    if not PYTHON.exists():
        print("Creating the virtual environment in .venv …", flush=True)
        venv.create(VENV, with_pip=True)
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    stamp = VENV / f".installed-{extras or 'app'}"
    # The test extras include the app's own dependencies, so either stamp serves `run`.
    stamps = [stamp] if extras else [stamp, VENV / ".installed-test"]
    if any(s.exists() and s.read_text() == wanted for s in stamps):
        return
    print("Installing dependencies (the first time takes a few minutes: PyTorch is large) …", flush=True)
    subprocess.run([PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([PYTHON, "-m", "pip", "install", "--quiet", "-e", f".[{extras}]" if extras else "."], check=True, cwd=ROOT)
    stamp.write_text(wanted)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test", "manage"):
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    ensure_environment("test" if command == "test" else "")
    env = {**os.environ, "LOCAL_MODE": os.environ.get("LOCAL_MODE", "1")}
    if command == "run":
        args = [PYTHON, "manage.py", "serve", *rest]
    elif command == "manage":
        args = [PYTHON, "manage.py", *rest]
    else:
        args = [PYTHON, "-m", "pytest", *rest]
    return run_forwarding_signals(args, cwd=ROOT, env=env)


def run_forwarding_signals(args, **popen_kwargs) -> int:
    """Run the command until it exits; `kill <pid of dev.py>` (SIGTERM) or SIGINT reaches it too,
    so it can stop its own children (web server, workers, Redis) instead of being orphaned."""
    child = subprocess.Popen(args, **popen_kwargs)

    def forward(signum, _frame):
        if child.poll() is None:
            child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
