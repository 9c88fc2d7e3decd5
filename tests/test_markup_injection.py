"""User text (class, project and file names) never comes back as markup (issue 30, item 1).

A class name carrying `<i hx-post=... hx-trigger=load>` once came back raw in the "Moved to …"
fragment; htmx then processed it and sent an authenticated, CSRF-valid POST on the victim's behalf.
"""
import pytest
from django.urls import reverse

from tests.factories import project_with_images
from transferapp.models import Label, TrainingRun

pytestmark = pytest.mark.django_db

# An htmx attribute that fires a request on load, and a plain script-less XSS probe.
HTMX_PROBE = '<i hx-post="delete/" hx-trigger="load">'
IMG_PROBE = "<img src=x onerror=alert(1)>"
MARKUP = f"bees{IMG_PROBE}{HTMX_PROBE}"


def _assert_no_raw_markup(body: str, where: str):
    for probe in ("<i hx-post", "<img src=x"):
        assert probe not in body, f"{where} returned raw markup: …{body[max(0, body.find(probe) - 80):body.find(probe) + 80]}…"


def _legacy_label(project, name):
    """A class stored before import neutralised markup (services.label_create would clean the name)."""
    return Label.objects.create(project=project, name=name)


def _finished_run(project, suspects):
    classes = [label.name for label in project.labels.order_by("name")]
    metrics = {"classes": classes, "accuracy": 1.0, "n_scored": 2, "accuracy_ci": [0.34, 1.0], "per_class": {},
               "confusion": [[1, 0], [0, 1]], "evaluated_on": "validation", "n_train": 8, "n_val": 2,
               "trust": {"alpha": 0.1, "min_alpha": 0.1, "n_calibration": 9}, "suspected_mislabels": suspects}
    return TrainingRun.objects.create(project=project, status="succeeded", base_model="efficientnet_lite0",
                                      classes=classes, metrics=metrics)


def test_move_to_a_class_named_with_markup_returns_it_escaped(alice, user):
    project = project_with_images(user, classes=("red",), per_class=1)
    image = project.labels.get().images.get()
    target = _legacy_label(project, MARKUP)
    response = alice.post(reverse("image_relabel", args=[image.pk]), {"target": target.pk}, HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert response.status_code == 200
    _assert_no_raw_markup(body, "Move to")
    assert "bees&lt;img src=x" in body and "Moved to" in body  # still says where the image went
    image.refresh_from_db()
    assert image.label_id == target.pk


# --- structural: HTML is built by templates only ------------------------------------------------

import ast  # noqa: E402
import re  # noqa: E402
from pathlib import Path  # noqa: E402

from django.conf import settings  # noqa: E402

APP = Path(__file__).resolve().parent.parent / "transferapp"
# An HTML element: "<p ", "<p>", "</p>", "<img src=..." (not "<key>" or "<class>" in help texts).
HTML_TAG = re.compile(r"</?(?:a|b|i|p|br|hr|em|li|ol|ul|tr|td|th|h[1-6]|div|img|pre|nav|form|span|code|input|table|"
                      r"button|label|small|style|script|strong|select|option|section|figure|iframe|svg|meta|link)"
                      r"(?=[\s>/])", re.IGNORECASE)
SAFE_MAKERS = {"mark_safe", "SafeString", "SafeText", "format_html_join"}


def _docstrings(tree) -> set:
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))]
    return {id(n.body[0].value) for n in nodes
            if n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}


def _string_built_html(path: Path) -> list[str]:
    """Each place in a module where Python, not a template, writes HTML or marks text as safe."""
    tree, found = ast.parse(path.read_text(), filename=str(path)), []
    docstrings = _docstrings(tree)
    for node in ast.walk(tree):
        where = f"{path.relative_to(APP.parent)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if HTML_TAG.search(node.value):
                found.append(f"{where} HTML in a Python string: {node.value[:60]!r}")
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in SAFE_MAKERS:
                found.append(f"{where} {name}() marks text as safe")
            elif name == "format_html" and not (node.args and isinstance(node.args[0], ast.Constant)):
                found.append(f"{where} format_html() with a built format string")
    return found


def test_no_html_is_built_from_python_strings():
    modules = sorted(APP.rglob("*.py"))
    assert len(modules) > 30
    found = [problem for path in modules if "migrations" not in path.parts for problem in _string_built_html(path)]
    assert found == []


def test_the_scan_catches_each_way_of_building_html(tmp_path):
    """The check above can fail: each of these is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text('name = "x"\n'
                   "a = HttpResponse(f'<p class=\"small\">Moved to {name}</p>')\n"
                   "b = '<li>{}</li>'.format(name)\n"
                   "c = '<span>%s</span>' % name\n"
                   "d = mark_safe(name)\n"
                   "e = format_html(f'{name}')\n"
                   "f = '<b>' + name + '</b>'\n")
    global APP
    app, APP = APP, tmp_path
    try:
        found = _string_built_html(bad)
    finally:
        APP = app
    assert sorted({int(line.split()[0].rsplit(":", 1)[1]) for line in found}) == [2, 3, 4, 5, 6, 7]


# Templates that must print a value unescaped, and why (nothing a user typed reaches them).
UNESCAPED_ALLOWED = {("report.html", "report.css|safe"): "the report's own stylesheet, read from static/"}


def test_templates_never_turn_autoescape_off_for_user_text():
    for path in Path(settings.BASE_DIR, "templates").rglob("*.html"):
        text = path.read_text()
        assert "autoescape off" not in text, path
        for match in re.finditer(r"\{\{\s*([^}]*?\|\s*(?:safe|safeseq)\b)[^}]*\}\}", text):
            expression = re.sub(r"\s", "", match.group(1))
            assert (path.name, expression) in UNESCAPED_ALLOWED, f"{path.name}: {{{{ {match.group(1)} }}}} is unescaped"
