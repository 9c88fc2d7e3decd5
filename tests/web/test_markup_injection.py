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
HTMX_PROBE = '<i hx-post="delete" hx-trigger="load">'  # no "/": an upload's name would be cut there
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

import ast
import re
from pathlib import Path

from django.conf import settings

APP = Path(__file__).resolve().parents[2] / "transferapp"  # tests/web/ -> the repository root
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


# --- every htmx endpoint, with markup in every name ------------------------------------------------

import io
import json
import zipfile

from tests.conftest import image_bytes
from tests.factories import upload
from tests.library.test_reviews import make_prediction
from transferapp.accounts import api_keys
from transferapp.library import images as library_images
from transferapp.library import projects as library_projects
from transferapp.library import reviews
from transferapp.models import BatchPrediction, ImportJob, Webhook, WebhookDelivery
from transferapp.serving import batch

HX = {"HTTP_HX_REQUEST": "true"}
XHR = {"HTTP_X_REQUESTED_WITH": "XMLHttpRequest"}
# Each url name that a template asks htmx to GET or POST, and the model whose get_absolute_url it polls.
ABSOLUTE_URL_VIEWS = {"run": "run_detail", "project": "project_detail", "label": "label_detail",
                      "job": "import_detail", "batch": "batch_detail"}


def _htmx_endpoints_in_templates() -> set:
    names = set()
    for path in Path(settings.BASE_DIR, "templates").rglob("*.html"):
        for target in re.findall(r'hx-(?:get|post|put|patch|delete)="([^"]*)"', path.read_text()):
            named = re.search(r"\{% url '([a-z_]+)'", target) or re.search(r"\{\{ (\w+)\.get_absolute_url", target)
            assert named, f"{path.name}: unrecognised htmx target {target}"
            names.add(ABSOLUTE_URL_VIEWS.get(named.group(1), named.group(1)))
    return names


@pytest.fixture
def marked_up(user, tmp_path):
    """A project where every name a user chooses is markup: project, classes, files, zip, batch."""
    project = library_projects.project_create(owner=user, name=f"P{MARKUP}")
    red = library_projects.label_create(project=project, name="red")
    bees = _legacy_label(project, MARKUP)
    images = [library_images.image_add(label=label, name=f"{MARKUP}{i}.png", data=image_bytes("red", shape_seed=i)).image
              for i, label in enumerate((red, red, red, bees))]
    library_images.image_add(label=None, project=project, name=f"{MARKUP}-inbox.png", data=image_bytes("blue", shape_seed=77))
    suspects = [{"key": str(image.pk), "label": 1, "suggested": 0, "p_given": 0.1, "p_suggested": 0.9}
                for image in images[:3]]
    run = _finished_run(project, suspects)  # classes sorted: [MARKUP, "red"]
    run.version = 1
    run.metrics["eval_predictions"] = [[str(images[0].pk), 1, 0, 0.9], [str(images[3].pk), 0, 0, 0.8]]
    run.save()
    newer = _finished_run(project, [])
    newer.version = 2
    newer.metrics["eval_predictions"] = [[str(images[0].pk), 1, 1, 0.9], [str(images[3].pk), 0, 1, 0.7]]
    newer.save()
    job = ImportJob.objects.create(project=project, source_name=f"{MARKUP}.zip", status="done", total=2, processed=2,
                                   accepted=1, skipped=1)
    job.report_rows.create(name=f"{MARKUP}/{MARKUP}.png", label=MARKUP, ok=False, reason=f"Not an image: {MARKUP}")
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / BatchPrediction.CSV).write_text(batch.to_csv([
        {"file": f"{MARKUP}.png", "top": {"label": MARKUP, "probability": 0.9}, "prediction_set": [MARKUP, "red"],
         "abstained": False},
        {"file": f"{MARKUP}.txt", "error": f"Not an image: {MARKUP}"}]), encoding="utf-8")
    common = {"project": project, "run": run, "version": 1, "source_name": f"{MARKUP}.zip", "total": 2}
    done = BatchPrediction.objects.create(**common, folder=str(folder), csv_path=str(folder / BatchPrediction.CSV),
                                          status="done", done=2, refused=1)
    running = BatchPrediction.objects.create(**common, folder=str(folder), status="running", done=1,
                                             message=f"Paused: {MARKUP}")
    return {"project": project, "red": red, "bees": bees, "images": images, "run": run, "job": job,
            "batches": (done, running)}


def _zip_with_markup_folder() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(f"{MARKUP}/{MARKUP}.png", image_bytes("blue"))
        archive.writestr("red/notes.png", b"not an image")
    return out.getvalue()


def _study_read_as_markup(project, marked_class):
    """A reading study named in markup whose two readers read every image as the class named in markup."""
    from tests.factories import member
    from transferapp.studies import studies
    readers = [member(project, name, "labeller") for name in ("ann", "bob")]
    study = studies.study_create(project=project, name=MARKUP, readers=readers, created_by=project.owner,
                                 images=list(project.images.values_list("pk", flat=True)))
    for reader in readers:
        for item in study.items.all():
            studies.read(study=study, reader=reader, item_id=item.pk, label=marked_class.name)
    return study


def test_no_htmx_endpoint_returns_a_name_as_markup(alice, marked_up, queue):
    m, project = marked_up, marked_up["project"]
    red, bees, images, run = m["red"], m["bees"], m["images"], m["run"]
    done, running = m["batches"]
    # The review queue (#25): a prediction whose answer, file and reviewed class are markup.
    shown, added = (make_prediction(project, top_label=MARKUP, audit=True, file_name=f"{MARKUP}.jpg", seed=s) for s in (50, 51))
    for prediction in (shown, added):
        reviews.review_record(prediction=prediction, label=MARKUP, by=marked_up["project"].owner)
    make_prediction(project, top_label=MARKUP, audit=True, file_name=f"{MARKUP}.jpg", seed=52)  # still in the queue
    queue_url = reverse("review_queue", args=[project.pk])
    # Webhooks (#25): a receiver's answer (last_error) and a URL with markup, in the polled delivery log.
    hook = Webhook.objects.create(project=project, url=f"https://hooks.example.com/{MARKUP}", events=["training.finished"],
                                  secret="whsec_dGVzdA==")
    WebhookDelivery.objects.create(webhook=hook, event="training.finished", message_id="msg_markup", attempts=1,
                                   last_error=MARKUP)
    hooks_url = reverse("webhooks_page", args=[project.pk])
    study_url = reverse("study_agreement", args=[_study_read_as_markup(project, bees).pk])
    requests = {  # url name -> each request that template's htmx (or app.js's XHR) sends, full pages too
        "project_detail": [("get", project.get_absolute_url(), {}, HX), ("get", project.get_absolute_url(), {}, {})],
        "label_detail": [("get", bees.get_absolute_url(), {}, HX), ("get", red.get_absolute_url() + "?suspects=1", {}, {})],
        "run_detail": [("get", run.get_absolute_url() + "?live=1", {}, HX), ("get", run.get_absolute_url(), {}, {})],
        "import_detail": [("get", m["job"].get_absolute_url() + "?live=1", {}, HX),
                          ("get", m["job"].get_absolute_url(), {}, {})],
        "batch_detail": [("get", done.get_absolute_url() + "?live=1", {}, HX),
                         ("get", running.get_absolute_url() + "?live=1", {}, HX),
                         ("get", reverse("predict", args=[project.pk]) + f"?batch={done.pk}", {}, {})],
        "version_compare": [("get", reverse("version_compare", args=[project.pk]) + "?before=1&after=2", {}, HX),
                            ("get", reverse("version_compare", args=[project.pk]) + "?before=1&after=2", {}, {})],
        "review_queue": [("get", queue_url + "?part=reviewed", {}, HX), ("get", queue_url, {}, {})],
        # The labelling page (#24): class names on its keys; the Inbox's file names come as JSON (textContent).
        "labelling_page": [("get", reverse("labelling_page", args=[project.pk]), {}, {})],
        "prediction_add": [("post", reverse("prediction_add", args=[added.pk]), {}, HX)],
        "review_add_all": [("post", reverse("review_add_all", args=[project.pk]), {}, HX)],
        "webhooks_page": [("get", hooks_url + "?log=1", {}, HX), ("get", hooks_url, {}, {})],
        "run_image_similar": [("get", reverse("run_image_similar", args=[run.pk, images[0].pk]), {}, HX)],
        "image_relabel": [("post", reverse("image_relabel", args=[images[0].pk]), {"target": bees.pk}, HX)],
        "image_confirm": [("post", reverse("image_confirm", args=[images[1].pk]), {}, HX)],
        "image_delete": [("post", reverse("image_delete", args=[images[2].pk]), {"card": "1"}, HX),
                         ("post", reverse("image_delete", args=[images[3].pk]), {}, HX)],
        # app.js's uploader: rows of stored and refused files, and the import's live panel.
        "label_upload": [("post", reverse("label_upload", args=[project.pk, red.pk]),
                          {"files": [upload(f"{MARKUP}.png", image_bytes("red", shape_seed=9)),
                                     upload(f"{MARKUP}.txt", b"no image", "text/plain")]}, XHR)],
        "import_create": [("post", reverse("import_create", args=[project.pk]),
                           {"archive": upload(f"{MARKUP}.zip", _zip_with_markup_folder(), "application/zip")}, XHR)],
        # The project map (#24): its status line, polled while the worker lays it out, then the page.
        "project_map": [("get", reverse("project_map", args=[project.pk]) + "?part=status", {}, HX),
                        ("get", reverse("project_map", args=[project.pk]), {}, {})],
        # the Inbox (#24): its grid, refreshed by htmx, and its uploader
        "inbox_page": [("get", reverse("inbox_page", args=[project.pk]), {}, HX),
                       ("get", reverse("inbox_page", args=[project.pk]), {}, {})],
        "inbox_upload": [("post", reverse("inbox_upload", args=[project.pk]),
                          {"files": [upload(f"{MARKUP}.png", image_bytes("green", shape_seed=8)),
                                     upload(f"{MARKUP}.txt", b"no image", "text/plain")]}, XHR)],
        # A reading study's agreement (#26): its name and the class names read, in the figures and the matrix.
        "study_agreement": [("get", study_url + "?a=ann&b=bob", {}, HX), ("get", study_url, {}, {})],
    }
    assert _htmx_endpoints_in_templates() <= set(requests), "a new htmx endpoint: add it here"
    escaped = []
    for name, calls in requests.items():
        for method, url, data, headers in calls:
            response = getattr(alice, method)(url, data, **headers)
            assert response.status_code in (200, 286), (name, url, response.status_code)
            body = response.content.decode()
            if response["Content-Type"].startswith("application/json"):  # app.js puts it in with textContent
                assert MARKUP in {file["name"].removesuffix(".png") for file in response.json()["files"]}
                continue
            assert response["Content-Type"].startswith("text/html"), (name, url)
            _assert_no_raw_markup(body, f"{name} {url}")
            escaped.append(("&lt;img src=x" in body, name))
    # The names are shown (escaped) by every response but those that only give a status.
    # run_image_similar: this run has no model files, so it names no class.
    # project_map's status line: it says how far the layout is, no names.
    assert [name for shown, name in escaped if not shown] == ["run_detail", "run_image_similar", "image_confirm",
                                                              "image_delete", "project_map"]


# --- class names at import: markup neutralised, control characters left out, nothing lost ---------

from tests.library.test_import import _summary, make_zip

REVIEW_FOLDER = "bees<i hx-post=delete&#47; hx-trigger=load>"


@pytest.mark.usefixtures("queue")
def test_a_zip_folder_with_markup_or_control_characters_imports_every_image_under_a_neutral_name(user, tmp_path):
    project = library_projects.project_create(owner=user, name="Zoo")
    folders = {REVIEW_FOLDER: "bees‹i hx-post=delete&#47; hx-trigger=load›", "a<b": "a‹b", "tab\there\x01\u202e": "tab here",
               "Café (été)": "Café (été)", "猫 ねこ": "猫 ねこ", "my-class_1.0": "my-class_1.0", "R&D \"x\" 'y'": "R&D \"x\" 'y'"}
    files = {f"{folder}/{i}.png": image_bytes("red", shape_seed=n * 2 + i)
             for n, folder in enumerate(folders) for i in range(2)}
    summary = _summary(project, make_zip(files), tmp_path)
    assert (summary["accepted"], summary["skipped"]) == (len(files), 0)
    assert sorted(project.labels.values_list("name", flat=True)) == sorted(folders.values())
    for name in folders.values():
        assert project.labels.get(name=name).images.count() == 2
    assert {row["label"] for row in summary["report"]} == set(folders.values())


def test_the_class_form_neutralises_markup_and_says_so(alice, user):
    project = library_projects.project_create(owner=user, name="P")
    response = alice.post(reverse("label_create", args=[project.pk]), {"name": "a<b>\x07"}, follow=True)
    assert project.labels.get().name == "a‹b›"
    assert "Saved as “a‹b›”" in response.content.decode()
    label = project.labels.get()
    alice.post(reverse("label_rename", args=[project.pk, label.pk]), {"name": "<i hx-get=x>"})
    label.refresh_from_db()
    assert label.name == "‹i hx-get=x›"
    # Typing the name as it was given confirms the deletion too.
    alice.post(reverse("label_delete", args=[project.pk, label.pk]), {"confirm_name": "<i hx-get=x>"})
    assert not project.labels.exists()


def test_the_api_finds_a_class_by_the_name_it_was_given(client, user, queue):
    from urllib.parse import quote

    project = library_projects.project_create(owner=user, name="P")
    label = library_projects.label_create(project=project, name="a<b")
    _, key = api_keys.api_key_create(project=project)
    url = f"/api/v1/projects/{project.pk}/classes/{quote('a<b')}/images"
    response = client.post(url, {"files": [upload("x.png", image_bytes("red"))]}, HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 200, response.content
    assert label.images.count() == 1


# --- htmx never processes the regions that show names -----------------------------------------------

from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _TextOutsideHxDisable(HTMLParser):
    """Text nodes holding `needle` that no hx-disable element encloses (titles and options aside:
    htmx never processes those)."""

    def __init__(self, needle):
        super().__init__()
        self.needle, self.stack, self.exposed = needle, [], []

    def handle_starttag(self, tag, attrs):
        if tag not in VOID:
            disabled = any(name == "hx-disable" for name, _ in attrs) or bool(self.stack and self.stack[-1][1])
            self.stack.append((tag, disabled))

    def handle_endtag(self, tag):
        while self.stack and self.stack.pop()[0] != tag:
            pass

    def handle_data(self, data):
        tag, disabled = self.stack[-1] if self.stack else ("", False)
        if self.needle in data and not disabled and tag not in ("title", "option", "textarea"):
            self.exposed.append(f"<{tag}>{data.strip()[:60]}")


def test_names_are_shown_inside_hx_disable_and_htmx_runs_without_eval(alice, marked_up):
    m, project = marked_up, marked_up["project"]
    done, _ = m["batches"]
    pages = [project.get_absolute_url(), m["bees"].get_absolute_url(), m["red"].get_absolute_url(),
             m["run"].get_absolute_url(), m["job"].get_absolute_url(), done.get_absolute_url() + "?live=1",
             reverse("version_compare", args=[project.pk]) + "?before=1&after=2", reverse("inbox_page", args=[project.pk])]
    for url in pages:
        page = alice.get(url, **(HX if "live" in url else {})).content.decode()
        checker = _TextOutsideHxDisable(MARKUP)
        checker.feed(page)
        assert checker.exposed == [], url
    page = alice.get(project.get_absolute_url()).content.decode()
    config = json.loads(re.search(r"<meta name=\"htmx-config\" content='([^']*)'>", page).group(1))
    assert config == {"allowEval": False, "allowScriptTags": False, "selfRequestsOnly": True}
