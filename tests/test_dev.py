"""`python3 dev.py test` and `run` on a fresh machine: pip installs every Python package, but
WeasyPrint (the PDF report) also needs the system's Pango, which pip cannot install. dev.py says so
in one line, with the install command, and goes on (the tests run, the app starts)."""
import importlib.util
import subprocess
import sys

import pytest
from django.conf import settings

import dev


def test_on_this_machine_the_check_agrees_with_weasyprint_itself():
    """No mock: WeasyPrint imports in a fresh interpreter exactly when dev.py finds nothing missing."""
    imports = subprocess.run([sys.executable, "-c", "import weasyprint"], capture_output=True).returncode == 0
    assert (dev.missing_system_libraries() == []) == imports
    assert (dev.system_library_warning("the report tests will fail") is None) == imports


def test_a_library_name_that_does_not_exist_does_not_load():
    assert not dev.library_loads(("libno-such-pango-9.9-0", "no-such-pango-9.9", "libno-such-pango-9.9.so.0"))
    assert dev.library_loads(("c", "libc.so.6", "libc.dylib"))  # the real lookup, on a library every machine has


def _without(monkeypatch, *absent):
    """This machine as if the libraries named `absent` (WeasyPrint's names for them) were not installed."""
    real = dev.library_loads
    missing_names = {name for library in absent for name in dev.WEASYPRINT_LIBRARIES[library]}
    monkeypatch.setattr(dev, "library_loads", lambda names: not set(names) & missing_names and real(names))


def test_a_missing_pango_is_named_in_one_line_with_the_commands_that_install_it(monkeypatch):
    _without(monkeypatch, "pango-1.0", "pangoft2-1.0")
    assert dev.missing_system_libraries() == ["pango-1.0", "pangoft2-1.0"]
    line = dev.system_library_warning("the report tests will fail")
    assert "\n" not in line
    assert "WeasyPrint" in line and "cannot load pango-1.0, pangoft2-1.0" in line
    assert "apt-get install libpango-1.0-0 libpangoft2-1.0-0" in line and "brew install pango" in line
    assert line.endswith("the report tests will fail.")


@pytest.mark.parametrize("command, says", [("test", "the report tests will fail"), ("run", "the PDF report will fail")])
def test_dev_py_warns_before_it_starts_and_still_starts(monkeypatch, capsys, command, says):
    """The warning comes on stderr before the tests (or the app) start, and they start anyway."""
    _without(monkeypatch, "pangoft2-1.0")
    started = []
    monkeypatch.setattr(dev, "ensure_environment", lambda extras: None)  # no venv install in a test
    monkeypatch.setattr(dev, "run_forwarding_signals", lambda args, **kwargs: started.append(args) or 0)
    assert dev.main([command, "-k", "report"]) == 0
    assert len(started) == 1 and started[0][-2:] == ["-k", "report"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot load pangoft2-1.0:" in err and says in err


def test_dev_py_says_nothing_when_every_library_loads(monkeypatch, capsys):
    monkeypatch.setattr(dev, "library_loads", lambda names: True)
    monkeypatch.setattr(dev, "ensure_environment", lambda extras: None)
    monkeypatch.setattr(dev, "run_forwarding_signals", lambda args, **kwargs: 0)
    assert dev.main(["test"]) == 0
    assert capsys.readouterr().err == ""


def test_dev_py_still_needs_only_the_standard_library():
    """dev.py runs before .venv exists: every module it imports must be in the standard library."""
    source = (settings.BASE_DIR / "dev.py").read_text()
    imported = {line.split()[1].split(".")[0] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imported and all(name in sys.stdlib_module_names for name in imported), imported
    assert importlib.util.find_spec("dev").origin == str(settings.BASE_DIR / "dev.py")


def test_an_old_python_is_told_in_one_line_which_it_needs(monkeypatch, capsys):
    """Before anything is created or installed: pip would otherwise refuse inside a traceback."""
    created = []
    monkeypatch.setattr(dev, "ensure_environment", lambda extras: created.append(extras))
    monkeypatch.setattr(dev.sys, "version_info", (3, 10, 12, "final", 0))
    assert dev.main(["test"]) == 2
    err = capsys.readouterr().err
    assert created == [] and err.count("\n") == 1
    assert "needs Python 3.11 or newer; this is 3.10" in err


def test_a_venv_that_cannot_be_made_is_removed_and_the_fix_is_named(monkeypatch, tmp_path):
    """Debian without python3-venv: ensurepip fails after bin/python exists; a leftover .venv would
    make the next run skip creating it and fail for want of pip."""
    monkeypatch.setattr(dev, "VENV", tmp_path / ".venv")

    def half_made(path, with_pip):
        (path / "bin").mkdir(parents=True)
        (path / "bin" / "python").write_text("")
        raise subprocess.CalledProcessError(1, ["python", "-m", "ensurepip"])

    monkeypatch.setattr(dev.venv, "create", half_made)
    with pytest.raises(SystemExit) as stopped:
        dev.create_virtual_environment()
    assert "apt-get install python3-venv" in str(stopped.value)
    assert not (tmp_path / ".venv").exists()
