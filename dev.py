#!/usr/bin/env python3
"""The two set-up commands, for a fresh clone with only Python 3.11+:

    python3 dev.py run     # create .venv, install, migrate, start web + worker + embedded Redis
    python3 dev.py test    # create .venv, install with test extras, run the whole test suite
    python3 dev.py manage COMMAND ...   # a manage.py command (fetch_weights, import_images, ...)
                                        # on this machine's local set-up, like `run`

Uses only the standard library until the virtual environment exists.
"""
import ctypes
import ctypes.util
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")

# The system libraries WeasyPrint (the PDF training report) cannot import without, each with the
# names it tries, as in weasyprint/text/ffi.py. pip cannot install them: the operating system must.
WEASYPRINT_LIBRARIES = {
    "gobject-2.0": ("libgobject-2.0-0", "gobject-2.0-0", "gobject-2.0", "libgobject-2.0.so.0",
                    "libgobject-2.0.0.dylib", "libgobject-2.0-0.dll"),
    "pango-1.0": ("libpango-1.0-0", "pango-1.0-0", "pango-1.0", "libpango-1.0.so.0", "libpango-1.0.dylib",
                  "libpango-1.0-0.dll"),
    "harfbuzz": ("libharfbuzz-0", "harfbuzz", "harfbuzz-0.0", "libharfbuzz.so.0", "libharfbuzz.0.dylib",
                 "libharfbuzz-0.dll"),
    "fontconfig": ("libfontconfig-1", "fontconfig-1", "fontconfig", "libfontconfig.so.1", "libfontconfig.1.dylib",
                   "libfontconfig-1.dll"),
    "pangoft2-1.0": ("libpangoft2-1.0-0", "pangoft2-1.0-0", "pangoft2-1.0", "libpangoft2-1.0.so.0",
                     "libpangoft2-1.0.dylib", "libpangoft2-1.0-0.dll"),
}
# Pango's packages depend on the other four, so this one command installs whichever is missing.
PANGO_INSTALL = "apt-get install libpango-1.0-0 libpangoft2-1.0-0 (Debian/Ubuntu) or brew install pango (macOS)"


MINIMUM_PYTHON = (3, 11)  # pyproject.toml's requires-python; Django 5.2 and the pinned torch need it


def python_too_old_message(version) -> str:
    return (f"transferapp needs Python {MINIMUM_PYTHON[0]}.{MINIMUM_PYTHON[1]} or newer; this is "
            f"{version[0]}.{version[1]}. Run dev.py with a newer python3 (for example python3.11 dev.py test).")


def ensure_environment(extras: str) -> None:
    """Create .venv and (re)install only when pyproject.toml or the extras changed."""
    if not PYTHON.exists():
        print("Creating the virtual environment in .venv …", flush=True)
        create_virtual_environment()
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


def library_loads(names) -> bool:
    """Whether one of these names loads the way cffi's dlopen, which WeasyPrint uses, finds it:
    a name with a dot or a slash as given, then any name through ctypes.util.find_library."""
    for name in names:
        candidates = [name] if "." in name or "/" in name else []
        candidates.append(ctypes.util.find_library(name))
        for candidate in filter(None, candidates):
            try:
                ctypes.CDLL(candidate)
                return True
            except OSError:
                continue
    return False


def missing_system_libraries() -> list[str]:
    """The libraries WeasyPrint needs that this machine cannot load (none: the PDF report works)."""
    return [library for library, names in WEASYPRINT_LIBRARIES.items() if not library_loads(names)]


def system_library_warning(consequence: str) -> "str | None":  # quoted: Python 3.9 still reads the file
    """One line naming what is missing and how to install it, or None when nothing is."""
    missing = missing_system_libraries()
    if not missing:
        return None
    return f"WeasyPrint (the PDF training report) cannot load {', '.join(missing)}: {PANGO_INSTALL}; {consequence}."


def warn_about_system_libraries(command: str) -> None:
    """Say it before the tests or the app start; both still run (only the PDF report needs Pango)."""
    consequence = "the report tests will fail" if command == "test" else "the PDF report will fail"
    line = system_library_warning(consequence)
    if line:
        print(line, file=sys.stderr, flush=True)


def create_virtual_environment() -> None:
    """A half-made .venv (Debian without python3-venv: ensurepip fails after bin/python is written)
    would make every later run skip this step and fail for want of pip: remove it and say why."""
    try:
        venv.create(VENV, with_pip=True)
    except (subprocess.CalledProcessError, OSError) as exc:
        shutil.rmtree(VENV, ignore_errors=True)
        sys.exit(f"Could not create .venv ({exc}). On Debian or Ubuntu install the venv module first: "
                 "apt-get install python3-venv (then run this command again).")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test", "manage"):
        print(__doc__)
        return 2
    if sys.version_info < MINIMUM_PYTHON:
        print(python_too_old_message(sys.version_info), file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    ensure_environment("test" if command == "test" else "")
    if command in ("run", "test"):
        warn_about_system_libraries(command)
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
