"""Rough edges a domain expert hits in the first hour (issue 16), checked through the HTTP client
and the database; the browser side is in tests/browser/test_browser_rough_edges.py."""
import json
import os
import re
import shlex
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.conftest import image_bytes
from tests.factories import project_with_images, upload
from transferapp.library import images as library_images
from transferapp.library import projects as library_projects
from transferapp.library import readiness, trash
from transferapp.library import selectors as library_selectors
from transferapp.models import Image, ImportJob, Project, TrainingRun

ROOT = Path(__file__).resolve().parents[2]
JSON_HEADERS = {"HTTP_X_REQUESTED_WITH": "XMLHttpRequest"}


# ---- 1. every command in the README and the docs runs ----

COMMAND_MARKERS = ("manage.py", "dev.py", "transferapp.engine")
PRODUCTION_PAGE = "docs/production.md"  # its commands run with the environment it sets first


def _doc_pages() -> list[Path]:
    """README.md, then every page of docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _page_commands(page: Path) -> list[tuple[str, str]]:
    """(section, command) for each code-block line and inline code span of one page (inline code
    may wrap across lines); the section is the page and its latest ## heading."""
    name = page.relative_to(ROOT).as_posix()
    commands, section, in_block, prose = [], name, False, []

    def inline():
        commands.extend((section, " ".join(span.split())) for span in re.findall(r"`([^`]+)`", "\n".join(prose)))
        prose.clear()

    for line in page.read_text().replace("\\\n", " ").splitlines():
        if line.startswith("## ") and not in_block:
            inline()
            section = f"{name}: {line[3:].strip()}"
        if line.startswith("```"):
            inline()
            in_block = not in_block
        elif in_block:
            commands.append((section, line))
        else:
            prose.append(line)
    inline()
    return commands


def _is_production(section: str) -> bool:
    return section.startswith(PRODUCTION_PAGE)


def _readme_commands() -> list[tuple[str, str]]:
    """(section, command) for each manage.py / dev.py / engine command in README.md and docs/*.md."""
    found = []
    for section, command in (c for page in _doc_pages() for c in _page_commands(page)):
        command = command.split(" #")[0].strip()
        runs_python = re.match(r"(\S*/)?python3?\b", command)  # not a bare mention such as `dev.py`
        if runs_python and any(marker in command for marker in COMMAND_MARKERS):
            found.append((section, command))
    # Commands that differ only in their arguments run the same --help: once is enough.
    unique = {(_is_production(section), tuple(_harmless(command))): (section, command) for section, command in found}
    return list(unique.values())


def _harmless(command: str) -> list[str]:
    """The command with its arguments replaced by --help: its program, script and subcommand
    run for real, nothing is downloaded, trained or imported."""
    tokens = shlex.split(command.replace("[", "").replace("]", ""))
    python, rest = tokens[0], tokens[1:]
    keep = []
    if rest[:2] == ["-m", "transferapp.engine"]:
        keep, rest = rest[:2], rest[2:]
    elif rest and rest[0].endswith(".py"):
        keep, rest = rest[:1], rest[1:]
    words = [t for t in rest if not t.startswith("-")]
    depth = 2 if keep[-1:] == ["dev.py"] and words[:1] == ["manage"] else 1
    python = sys.executable if keep[-1:] != ["dev.py"] else python
    return [python, *keep, *words[:depth], "--help"]


def test_the_readme_names_its_commands():
    commands = [c for _, c in _readme_commands()]
    assert any("fetch_weights" in c for c in commands) and any("import_images" in c for c in commands)
    assert any("transferapp.engine predict" in c for c in commands)


def test_the_docs_pages_commands_are_followed_too():
    """The commands moved out of the README into docs/ are still run, the production ones with
    the production environment."""
    sections = {section for section, _ in _readme_commands()}
    assert {s.split(":")[0] for s in sections} >= {"README.md", "docs/user-guide.md", "docs/api.md", PRODUCTION_PAGE}
    production = [c for s, c in _readme_commands() if _is_production(s)]
    assert any("manage.py check --deploy" in c for c in production) and any("gpuworker" in c for c in production)


def test_the_readme_is_one_screen_or_three_with_the_two_commands_first():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 150
    headings = [line for line in readme.splitlines() if line.startswith("## ")]
    assert headings[0] == "## Set-up: two commands"
    assert "python3 dev.py run" in readme and "python3 dev.py test" in readme


def _github_anchor(heading: str) -> str:
    """The fragment GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_link_between_the_pages_reaches_a_file_and_its_heading():
    """Images and links are relative to the page that holds them, as GitHub reads them."""
    broken = []
    for page in _doc_pages():
        text = re.sub(r"(?s)```.*?```", "", page.read_text())
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # an outside address
            path, _, fragment = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target}")
            elif fragment and linked.suffix == ".md":
                anchors = {_github_anchor(line.lstrip("#")) for line in linked.read_text().splitlines()
                           if re.match(r"#{1,6} ", line)}
                if fragment not in anchors:
                    broken.append(f"{page.name}: {target}")
    assert not broken


@pytest.mark.parametrize("section,command", _readme_commands())
def test_every_readme_command_runs_as_written_without_a_traceback(section, command, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_MODE", "SECRET_KEY", "DJANGO_SETTINGS_MODULE", "DEBUG", "ALLOWED_HOSTS")}
    env.update(DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(ROOT))
    if _is_production(section):  # docs/production.md sets these for production first
        env.update(SECRET_KEY="x" * 50, ALLOWED_HOSTS="studio.example.org", HTTPS="true")
    argv = _harmless(command)
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "Traceback" not in done.stderr, f"{argv}: {done.stderr[-2000:]}"


def test_manage_py_without_a_secret_key_says_what_to_do_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_MODE", "SECRET_KEY", "DJANGO_SETTINGS_MODULE", "DEBUG")}
    env["DATA_DIR"] = str(tmp_path)
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "dev.py manage" in done.stderr and "SECRET_KEY" in done.stderr


# ---- 2. three states for each uploaded file ----

@pytest.mark.django_db
@pytest.mark.usefixtures("queue")
def test_each_uploaded_file_is_added_skipped_or_refused_with_a_reason(alice, user):
    project = library_projects.project_create(owner=user, name="P")
    label = library_projects.label_create(project=project, name="red")
    url = reverse("label_upload", args=[project.pk, label.pk])
    first = alice.post(url, {"files": [upload("a.png", image_bytes())]}, **JSON_HEADERS)
    assert first.status_code == 200 and json.loads(first.content)["files"][0]["status"] == "added"
    again = json.loads(alice.post(url, {"files": [upload("copy.png", image_bytes())]}, **JSON_HEADERS).content)
    assert again["files"][0]["status"] == "skipped" and "Already in this class" in again["files"][0]["reason"]
    text = json.loads(alice.post(url, {"files": [upload("notes.png", b"plain text")]}, **JSON_HEADERS).content)
    assert text["files"][0]["status"] == "refused" and "not an image" in text["files"][0]["reason"]
    tiny = json.loads(alice.post(url, {"files": [upload("tiny.png", image_bytes(size=(8, 8)))]}, **JSON_HEADERS).content)
    assert tiny["files"][0]["status"] == "refused" and "8x8" in tiny["files"][0]["reason"]
    assert Image.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.usefixtures("queue")
def test_the_upload_summary_counts_added_skipped_and_refused(alice, user):
    project = project_with_images(user, classes=("red",), per_class=1)
    label = project.labels.get()
    files = [upload("new.png", image_bytes(shape_seed=5)), upload("dup.png", image_bytes("red", shape_seed=0)),
             upload("notes.png", b"plain text")]
    page = alice.post(reverse("label_upload", args=[project.pk, label.pk]), {"files": files}, follow=True).content.decode()
    assert "1 added, 1 skipped, 1 refused" in page


@pytest.mark.django_db
def test_a_refused_prediction_is_marked_refused_not_classified(alice, user):
    project = project_with_images(user)
    TrainingRun.objects.create(project=project, base_model="efficientnet_lite0", status="succeeded", artifact_dir="/nowhere")
    response = alice.post(reverse("predict", args=[project.pk]), {"files": [upload("notes.png", b"plain text")]}, **JSON_HEADERS)
    assert response.status_code == 200
    assert 'data-upload-status="refused"' in response.content.decode()


# ---- 3. pages refresh when the work they show ends ----

@pytest.mark.django_db
def test_a_finished_import_tells_the_project_page_to_refresh(alice, user):
    project = project_with_images(user)
    job = ImportJob.objects.create(project=project, source_name="bees.zip", status="done", finished_at=timezone.now())
    response = alice.get(job.get_absolute_url() + "?live=1", HTTP_HX_REQUEST="true")
    assert response.status_code == 286 and "import-finished" in response.get("HX-Trigger", "")
    page = alice.get(project.get_absolute_url()).content.decode()
    assert 'hx-trigger="import-finished from:body"' in page and 'id="class-list"' in page and 'id="train-readiness"' in page


@pytest.mark.django_db
def test_deleting_an_image_answers_with_the_updated_count(alice, user):
    project = project_with_images(user, classes=("red",), per_class=3)
    image = project.images.first()
    response = alice.post(reverse("image_delete", args=[image.pk]), HTTP_HX_REQUEST="true")
    assert "2 images in this class" in response.content.decode()


# ---- 4. deleting with a net ----

@pytest.mark.django_db
def test_a_deleted_image_can_be_restored_with_its_file_and_thumbnail(alice, user):
    project = project_with_images(user, classes=("red", "blue"), per_class=5)
    image = project.images.first()
    label = image.label
    file_bytes, thumb_bytes = image.file.read(), image.thumbnail.read()
    page = alice.post(reverse("image_delete", args=[image.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert "Deleted 1 image" in page and "Undo" in page
    assert label.images.count() == 4 and library_selectors.image_counts(project=project)[label.name] == 4
    assert alice.get(reverse("image_thumbnail", args=[image.pk])).status_code == 404
    alice.post(reverse("images_restore", args=[project.pk]), {"images": [image.pk]})
    restored = label.images.get(pk=image.pk)
    assert restored.file.read() == file_bytes and restored.thumbnail.read() == thumb_bytes


@pytest.mark.django_db
def test_a_bulk_delete_offers_undo_and_deleted_images_stay_out_of_every_list(alice, user):
    project = project_with_images(user, classes=("red", "blue"), per_class=5)
    red = project.labels.get(name="red")
    chosen = list(red.images.values_list("pk", flat=True)[:3])
    page = alice.post(reverse("label_bulk", args=[project.pk, red.pk]), {"images": chosen, "action": "delete"}, follow=True).content.decode()
    assert "Deleted 3 images" in page and "Undo" in page
    assert red.images.count() == 2
    assert library_selectors.image_counts(project=project) == {"red": 2, "blue": 5}
    assert library_selectors.project_list_for_user(user=user).get().n_images == 7
    assert readiness.training_problems(project=project) == ["Class “red” has 2 image(s); add at least 5."]
    assert all(image.label.name == "blue" or image.pk not in chosen for image in project.images.all())
    assert all(pk not in chosen for group in readiness.near_duplicate_groups(project=project) for pk in group)
    assert str(chosen[0]) not in {str(pk) for pk in project.images.values_list("pk", flat=True)}


@pytest.mark.django_db
def test_a_training_snapshot_leaves_deleted_images_out(user):
    from transferapp.training.snapshot import take_snapshot

    project = project_with_images(user, classes=("red", "blue"), per_class=5)
    gone = project.images.first()
    trash.images_delete(images=[gone])
    run = TrainingRun.objects.create(project=project, base_model="efficientnet_lite0")
    samples = take_snapshot(run).samples
    assert len(samples) == 9 and str(gone.pk) not in {s.key for s in samples}


@pytest.mark.django_db
def test_deleted_images_are_purged_with_their_files_after_the_undo_window(user, settings):
    project = project_with_images(user, classes=("red",), per_class=2)
    image = project.images.first()
    path = Path(image.file.path)
    trash.images_delete(images=[image])
    assert path.exists()
    Image.all_objects.filter(pk=image.pk).update(deleted_at=timezone.now() - timedelta(minutes=settings.DELETED_IMAGES_KEPT_MINUTES + 1))
    trash.deleted_images_purge(project_id=project.pk)
    assert not Image.all_objects.filter(pk=image.pk).exists() and not path.exists()


@pytest.mark.django_db
def test_uploading_a_deleted_image_again_brings_it_back(user):
    project = project_with_images(user, classes=("red", "blue"), per_class=1)
    red, blue = project.labels.get(name="red"), project.labels.get(name="blue")
    image = red.images.get()
    trash.images_delete(images=[image])
    outcome = library_images.image_add(label=blue, name="again.png", data=image_bytes("red", shape_seed=0))
    assert outcome.status == "added" and outcome.image.pk == image.pk and blue.images.count() == 2


@pytest.mark.django_db
def test_a_restore_cannot_reach_another_users_images(client, user, other_user):
    mine = project_with_images(user, classes=("red",), per_class=2)
    victim = mine.images.first()
    trash.images_delete(images=[victim])
    theirs = library_projects.project_create(owner=other_user, name="Theirs")
    client.force_login(other_user)
    client.post(reverse("images_restore", args=[theirs.pk]), {"images": [victim.pk]})
    assert client.post(reverse("images_restore", args=[mine.pk]), {"images": [victim.pk]}).status_code == 404
    assert Image.all_objects.get(pk=victim.pk).deleted_at is not None


@pytest.mark.django_db
def test_a_class_and_a_project_are_deleted_only_when_their_name_is_typed(alice, user):
    project = project_with_images(user, classes=("red", "blue"), per_class=1)
    red = project.labels.get(name="red")
    alice.post(reverse("label_delete", args=[project.pk, red.pk]))
    alice.post(reverse("label_delete", args=[project.pk, red.pk]), {"confirm_name": "blue"})
    assert project.labels.filter(name="red").exists()
    alice.post(reverse("label_delete", args=[project.pk, red.pk]), {"confirm_name": " red "})
    assert not project.labels.filter(name="red").exists()
    page = alice.post(reverse("project_delete", args=[project.pk]), {"confirm_name": "colours"}, follow=True).content.decode()
    assert Project.objects.filter(pk=project.pk).exists() and "Type the project name" in page
    alice.post(reverse("project_delete", args=[project.pk]), {"confirm_name": "Colours"})
    assert not Project.objects.filter(pk=project.pk).exists()


# ---- 5. a time estimate ----

def _running(project, *, progress, minutes_ago, epochs_done):
    started = timezone.now() - timedelta(minutes=minutes_ago)
    history = [{"epoch": i + 1, "stage": "head", "val_accuracy": 0.5} for i in range(epochs_done)]
    return TrainingRun.objects.create(project=project, base_model="efficientnet_lite0", status="running",
                                      started_at=started, heartbeat_at=timezone.now(), progress=progress,
                                      history=history, epoch=epochs_done, total_epochs=10)


@pytest.mark.django_db
def test_the_run_page_says_about_how_long_is_left(alice, user):
    project = project_with_images(user)
    run = _running(project, progress=0.5, minutes_ago=4, epochs_done=5)
    page = alice.get(run.get_absolute_url()).content.decode()
    assert "about 4 min left" in page and "rough" not in page


@pytest.mark.django_db
def test_the_estimate_is_called_rough_before_the_first_epoch_ends(alice, user):
    project = project_with_images(user)
    run = _running(project, progress=0.02, minutes_ago=1, epochs_done=0)
    live = alice.get(run.get_absolute_url() + "?live=1", HTTP_HX_REQUEST="true").content.decode()
    assert "min left" in live and "rough estimate" in live


# ---- 9. lists that say something ----

@pytest.mark.django_db
def test_the_project_list_shows_status_images_last_run_and_accuracy(alice, user):
    project = project_with_images(user, classes=("red", "blue"), per_class=5)
    TrainingRun.objects.create(project=project, base_model="efficientnet_lite0", status="succeeded",
                               metrics={"accuracy": 0.875}, finished_at=timezone.now())
    library_projects.project_create(owner=user, name="Empty one")
    page = alice.get(reverse("project_list")).content.decode()
    assert "10 images" in page and "88%" in page and "Last run" in page
    assert "Needs classes" in page and "Trained" in page


@pytest.mark.django_db
def test_the_settings_used_have_human_labels_and_a_cancelled_run_says_so_once(alice, user):
    project = project_with_images(user)
    done = TrainingRun.objects.create(project=project, base_model="efficientnet_lite0", status="succeeded",
                                      config={"lr": 0.001, "refit": True, "val_fraction": 0.2}, metrics={"accuracy": 0.9})
    page = alice.get(done.get_absolute_url()).content.decode()
    settings_table = page.split("Settings used")[1]
    assert "Learning rate" in settings_table and "Validation share" in settings_table and "Yes" in settings_table
    assert "<td>lr</td>" not in settings_table and "val_fraction" not in settings_table
    cancelled = TrainingRun.objects.create(project=project, base_model="efficientnet_lite0", status="cancelled",
                                           started_at=timezone.now(), message="Cancelled.")
    page = alice.get(cancelled.get_absolute_url()).content.decode()
    assert "Cancelled. Cancelled." not in page and "cancelled. Cancelled." not in page
    assert "This run was cancelled" in page


@pytest.mark.django_db
def test_the_project_list_counts_images_set_aside_for_testing_as_not_trainable(alice, user):
    project = project_with_images(user, classes=("red", "blue"), per_class=6)
    aside = list(project.labels.get(name="red").images.values_list("pk", flat=True)[:3])
    project.images.filter(pk__in=aside).update(split="test")
    page = alice.get(reverse("project_list")).content.decode()
    assert "Needs images" in page and "Ready to train" not in page  # "Train" would refuse it
