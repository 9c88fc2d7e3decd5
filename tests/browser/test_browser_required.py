"""CI sets REQUIRE_BROWSER=1: then a missing Chromium must fail the run, never skip the browser tests."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run_browser_tests(**env):
    environment = {**os.environ, "CHROMIUM": "/nonexistent/chromium", **env}
    # The child makes its own throwaway DATA_DIR with SQLite and an embedded Redis: it must never
    # create (or drop) a test database on the server this run's own tests are using.
    for name in ("DATA_DIR", "DATABASE_URL", "REDIS_URL"):
        environment.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "tests", "-m", "browser", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300,
    )


def test_a_missing_browser_fails_the_run_when_the_browser_is_required():
    result = _run_browser_tests(REQUIRE_BROWSER="1")
    assert result.returncode != 0, result.stdout
    assert "REQUIRE_BROWSER is set but Chromium is not at /nonexistent/chromium" in result.stdout
    assert "apt-get install chromium" in result.stdout
    assert " skipped" not in result.stdout  # not one browser module skips itself

def test_a_missing_browser_only_skips_the_tests_on_a_developer_machine():
    result = _run_browser_tests(REQUIRE_BROWSER="")
    assert result.returncode == 0, result.stdout
    assert "skipped" in result.stdout and "Chromium is not at /nonexistent/chromium" in result.stdout
