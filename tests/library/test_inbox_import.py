"""Unlabelled images in (#24): unlabelled/ folders, "everything into the Inbox", labels from a CSV or JSON file."""
import json

import django_rq
import pytest
from django.core.management import call_command
from django.urls import reverse
from rq import SimpleWorker

from tests.conftest import image_bytes
from tests.factories import upload
from tests.library.test_import import make_zip
from transferapp.library import imports as library_imports
from transferapp.library import label_files
from transferapp.library import projects as library_projects
from transferapp.models import Image, ImportJob
from transferapp.storage import archive


def _import(project, files: dict, tmp_path, **options):
    path = tmp_path / "upload.zip"
    path.write_bytes(make_zip(files))
    with archive.ZipSource(path, archive.Limits()) as source:
        labels = label_files.labels_for_source(source)
        return library_imports.import_entries(project=project, entries=source, labels=labels, **options)


@pytest.fixture
def project(user):
    return library_projects.project_create(owner=user, name="Pile")


@pytest.mark.django_db
@pytest.mark.usefixtures("queue")
@pytest.mark.parametrize("folder", ["unlabelled", "unlabeled", "Inbox"])
def test_an_unlabelled_top_folder_goes_to_the_inbox(project, tmp_path, folder):
    summary = _import(project, {"cats/c1.png": image_bytes("red", shape_seed=1),
                                f"{folder}/u1.png": image_bytes("blue", shape_seed=2),
                                f"{folder}/deeper/u2.png": image_bytes("green", shape_seed=3)}, tmp_path)
    assert summary["accepted"] == 3 and summary["inbox"] == 2
    assert sorted(Image.inbox.filter(project=project).values_list("original_name", flat=True)) == [
        f"{folder}/deeper/u2.png", f"{folder}/u1.png"]
    assert list(project.labels.values_list("name", flat=True)) == ["cats"]


@pytest.mark.django_db
@pytest.mark.usefixtures("queue")
def test_everything_into_the_inbox_ignores_class_folders_and_takes_loose_files(project, tmp_path):
    summary = _import(project, {"cats/c1.png": image_bytes("red", shape_seed=1), "loose.png": image_bytes("blue", shape_seed=2),
                                "notes.txt": b"hello"}, tmp_path, into_inbox=True)
    assert summary["accepted"] == 2 and summary["inbox"] == 2 and summary["refused"] == 1
    assert not project.labels.exists() and Image.inbox.filter(project=project).count() == 2


@pytest.mark.django_db
@pytest.mark.usefixtures("queue")
def test_a_csv_gives_labels_reports_missing_rows_and_sends_unnamed_files_to_the_inbox(project, tmp_path):
    csv = b"filename,class\nimages/a.png,cat\nb.png,dog\nmissing.png,dog\n"
    summary = _import(project, {"labels.csv": csv, "images/a.png": image_bytes("red", shape_seed=1),
                                "images/b.png": image_bytes("blue", shape_seed=2),
                                "images/c.png": image_bytes("green", shape_seed=3)}, tmp_path)
    assert summary["accepted"] == 3 and summary["inbox"] == 1 and summary["missing_rows"] == 1
    assert summary["junk"] == 0 and summary["labels_file"] == "labels.csv" and summary["processed"] == 4  # the file is no junk
    by_class = dict(Image.objects.filter(project=project).values_list("original_name", "label__name"))
    assert by_class == {"images/a.png": "cat", "images/b.png": "dog"}
    rows = {row["name"]: row for row in summary["report"]}
    assert rows["images/c.png"]["inbox"] and "No row in labels.csv" in rows["images/c.png"]["reason"]
    assert rows["labels.csv line 4: missing.png"]["reason"] == "No such file in this import."
    assert sorted(summary["created_classes"]) == ["cat", "dog"]


@pytest.mark.django_db
@pytest.mark.usefixtures("queue")
def test_a_json_list_gives_labels(project, tmp_path):
    listing = json.dumps([{"file": "x/1.png", "label": 3}, {"image": "2.png", "label": ""}]).encode()
    summary = _import(project, {"export/labels.json": listing, "export/x/1.png": image_bytes("red", shape_seed=1),
                                "export/y/2.png": image_bytes("blue", shape_seed=2)}, tmp_path)
    assert summary["accepted"] == 2 and summary["inbox"] == 1
    assert Image.objects.get(project=project).label.name == "3"  # a grade exported as a number


@pytest.mark.parametrize("text, message", [
    (b"name,whatever\na.png,cat\n", "labels.csv line 1: the header needs a column called file or filename or image"),
    (b"file,label\na.png\n", r"labels.csv line 2: 1 column\(s\)"),
    (b"file,label\na.png,cat\na.png,dog\n", "labels.csv line 3: “a.png” is labelled “dog” here but “cat” on line 2"),
    (b"file,label\n\"a.png,cat\n", "labels.csv line"),
    (b"\xff\xfe bad", "not UTF-8"),
])
def test_a_malformed_csv_says_which_line_and_why(text, message):
    with pytest.raises(label_files.LabelsFileError, match=message):
        label_files.read_labels("labels.csv", text)


def test_a_malformed_json_says_why():
    with pytest.raises(label_files.LabelsFileError, match="item 1"):
        label_files.read_labels("labels.json", b'[{"label": "cat"}]')
    with pytest.raises(label_files.LabelsFileError, match="line 1: not valid JSON"):
        label_files.read_labels("labels.json", b"[{")


@pytest.mark.django_db
@pytest.mark.usefixtures("queue")
def test_a_csv_of_notes_beside_class_folders_is_no_labels_file_and_stops_nothing(project, tmp_path):
    summary = _import(project, {"notes.csv": b"specimen,collector\n12,Ada\n", "cats/c1.png": image_bytes("red", shape_seed=1),
                                "dogs/d1.png": image_bytes("blue", shape_seed=2)}, tmp_path)
    assert summary["accepted"] == 2 and summary["inbox"] == 0
    assert sorted(project.labels.values_list("name", flat=True)) == ["cats", "dogs"]


def test_a_base_name_two_files_share_matches_neither():
    rows = label_files.read_labels("labels.csv", b"file,label\na.png,cat\n")
    assert label_files.LabelMap("labels.csv", rows, ["x/a.png", "y/a.png"]).missing == rows


@pytest.mark.django_db
@pytest.mark.usefixtures("queue")
def test_duplicates_between_the_inbox_and_a_class_are_refused_both_ways(project, tmp_path):
    summary = _import(project, {"cats/c1.png": image_bytes("red", shape_seed=1),
                                "unlabelled/again.png": image_bytes("red", shape_seed=1)}, tmp_path)
    assert summary["accepted"] == 1 and summary["refused"] == 1
    assert "already in class “cats”" in summary["report"][1]["reason"]
    second = _import(project, {"unlabelled/u.png": image_bytes("blue", shape_seed=2)}, tmp_path)
    third = _import(project, {"dogs/u-again.png": image_bytes("blue", shape_seed=2),
                              "unlabelled/u-twice.png": image_bytes("blue", shape_seed=2)}, tmp_path)
    assert second["inbox"] == 1 and third["accepted"] == 0
    assert "already in the Inbox" in third["report"][0]["reason"] and third["report"][1]["status"] == "skipped"


@pytest.mark.django_db
@pytest.mark.usefixtures("queue")
def test_the_command_takes_unlabelled_and_a_labels_file(user, tmp_path, capsys):
    (tmp_path / "data").mkdir()
    for i, color in enumerate(["red", "blue", "green"]):
        (tmp_path / "data" / f"{i}.png").write_bytes(image_bytes(color, shape_seed=i))
    call_command("import_images", str(tmp_path / "data"), user="alice", project="Loose", unlabelled=True, json=True)
    document = json.loads(capsys.readouterr().out)
    assert document["accepted"] == 3 and document["inbox"] == 3
    (tmp_path / "labels.csv").write_text("file,label\n0.png,warm\n1.png,cold\nnope.png,cold\n")
    call_command("import_images", str(tmp_path / "data"), user="alice", project="Labelled", labels=str(tmp_path / "labels.csv"))
    out = capsys.readouterr().out
    assert "3 imported" in out and "1 into the Inbox" in out and "1 row(s) of the labels file" in out
    assert "line 4: nope.png" in out


@pytest.mark.django_db(transaction=True)
def test_the_import_form_option_puts_a_zip_into_the_inbox(alice, user, queue):
    project = library_projects.project_create(owner=user, name="Pile")
    zipped = make_zip({"cats/c1.png": image_bytes("red", shape_seed=1), "dogs/d1.png": image_bytes("blue", shape_seed=2)})
    alice.post(reverse("import_create", args=[project.pk]), {"archive": upload("p.zip", zipped, "application/zip"),
                                                             "into_inbox": "on"})
    assert ImportJob.objects.get().into_inbox
    django_rq.get_worker("intake", worker_class=SimpleWorker).work(burst=True)
    assert ImportJob.objects.get().status == "done"
    assert Image.inbox.filter(project=project).count() == 2 and not project.labels.exists()


@pytest.mark.django_db(transaction=True)
def test_a_zip_with_a_malformed_csv_fails_its_import_saying_which_line(alice, user, queue):
    project = library_projects.project_create(owner=user, name="Pile")
    zipped = make_zip({"labels.csv": b"file,label\na.png,cat,extra\nb.png\n", "a.png": image_bytes("red", shape_seed=1),
                       "b.png": image_bytes("blue", shape_seed=2)})
    alice.post(reverse("import_create", args=[project.pk]), {"archive": upload("p.zip", zipped, "application/zip")})
    django_rq.get_worker("intake", worker_class=SimpleWorker).work(burst=True)
    job = ImportJob.objects.get()
    assert job.status == "failed" and job.error.startswith("labels.csv line 3: 1 column(s)")
    assert "labels.csv line 3" in alice.get(job.get_absolute_url()).content.decode()
    assert not Image.all_objects.filter(project=project).exists()


def _review_zip(**extra) -> dict:
    """The outside review's case: two class folders and a labels.csv naming only k1, and k3 as alpha."""
    return {"alpha/k1.png": image_bytes("red", shape_seed=1), "alpha/k2.png": image_bytes("blue", shape_seed=2),
            "beta/k3.png": image_bytes("green", shape_seed=3), "beta/k4.png": image_bytes("yellow", shape_seed=4),
            "labels.csv": b"file,label\nalpha/k1.png,alpha\nbeta/k3.png,alpha\n", **extra}


@pytest.mark.django_db
@pytest.mark.usefixtures("queue")
def test_a_labels_file_keeps_the_class_folders_of_files_it_does_not_name_and_says_where_a_row_overrides_one(project, tmp_path):
    summary = _import(project, _review_zip(**{"loose.png": image_bytes("purple", shape_seed=5),
                                             "unlabelled/u.png": image_bytes("orange", shape_seed=6)}), tmp_path)
    by_class = dict(Image.all_objects.filter(project=project).values_list("original_name", "label__name"))
    assert by_class == {"alpha/k1.png": "alpha", "alpha/k2.png": "alpha", "beta/k3.png": "alpha", "beta/k4.png": "beta",
                        "loose.png": None, "unlabelled/u.png": None}
    assert summary["accepted"] == 6 and summary["inbox"] == 2 and summary["refused"] == 0 and summary["junk"] == 0
    rows = {row["name"]: row for row in summary["report"]}
    assert rows["beta/k3.png"]["reason"] == "labels.csv line 3 says alpha; its folder says beta: labelled alpha."
    assert rows["alpha/k1.png"]["reason"] == "" and rows["beta/k4.png"]["reason"] == ""  # agreeing / no row: nothing to say
    assert "No row in labels.csv: put in the Inbox." == rows["loose.png"]["reason"] == rows["unlabelled/u.png"]["reason"]


@pytest.mark.django_db
@pytest.mark.usefixtures("queue")
def test_everything_into_the_inbox_wins_over_a_labels_file(project, tmp_path):
    summary = _import(project, _review_zip(), tmp_path, into_inbox=True)
    assert summary["accepted"] == 4 and summary["inbox"] == 4 and summary["missing_rows"] == 0
    assert Image.inbox.filter(project=project).count() == 4 and not project.labels.exists()
    rows = {row["name"]: row for row in summary["report"]}
    assert rows["labels.csv"]["reason"] == "Not used: everything went into the Inbox, as asked."


@pytest.mark.django_db
@pytest.mark.usefixtures("queue")
def test_the_command_with_unlabelled_ignores_its_labels_file(user, tmp_path, capsys):
    (tmp_path / "data" / "warm").mkdir(parents=True)
    (tmp_path / "data" / "warm" / "0.png").write_bytes(image_bytes("red", shape_seed=1))
    (tmp_path / "labels.csv").write_text("file,label\nwarm/0.png,cold\n")
    call_command("import_images", str(tmp_path / "data"), user="alice", project="P", unlabelled=True,
                 labels=str(tmp_path / "labels.csv"))
    out = capsys.readouterr().out
    assert "1 into the Inbox" in out and "not used (everything into the Inbox)" in out
    assert Image.inbox.filter(project__name="P").count() == 1 and not Image.objects.filter(project__name="P").exists()


@pytest.mark.django_db(transaction=True)
def test_the_import_page_counts_the_inbox_and_the_rows_naming_no_file_apart_from_refusals(alice, user, queue):
    project = library_projects.project_create(owner=user, name="Pile")
    rows = "".join(f"gone/{n}.png,alpha\n" for n in range(1002))
    files = _review_zip(**{"loose.png": image_bytes("purple", shape_seed=5),
                           "labels.csv": f"file,label\nalpha/k1.png,alpha\nbeta/k3.png,alpha\n{rows}".encode()})
    alice.post(reverse("import_create", args=[project.pk]), {"archive": upload("p.zip", make_zip(files), "application/zip")})
    django_rq.get_worker("intake", worker_class=SimpleWorker).work(burst=True)
    job = ImportJob.objects.get()
    assert (job.status, job.accepted, job.inbox, job.missing_rows, job.refused, job.junk) == ("done", 5, 1, 1002, 0, 0)
    assert job.labels_file == "labels.csv" and job.processed == job.total == 6  # a later try goes on past the labels file
    page = alice.get(job.get_absolute_url()).content.decode()
    assert "1 into the Inbox" in page and "labels from labels.csv" in page
    assert "1002 rows of labels.csv name no file (the first 1000 listed)" in page
    assert "0 refused" not in page and "Refused files" not in page and "system file" not in page
    assert page.count("No such file in this import.") == 1000
    assert "labels.csv line 3 says alpha; its folder says beta: labelled alpha." in page
    assert "loose.png" in page  # the Inbox-bound file, in its own list


@pytest.mark.django_db(transaction=True)
def test_the_import_page_says_a_labels_file_was_not_used_with_everything_into_the_inbox(alice, user, queue):
    project = library_projects.project_create(owner=user, name="Pile")
    alice.post(reverse("import_create", args=[project.pk]), {"archive": upload("p.zip", make_zip(_review_zip()), "application/zip"),
                                                             "into_inbox": "on"})
    django_rq.get_worker("intake", worker_class=SimpleWorker).work(burst=True)
    job = ImportJob.objects.get()
    assert (job.status, job.inbox, job.missing_rows, job.junk) == ("done", 4, 0, 0)
    page = alice.get(job.get_absolute_url()).content.decode()
    assert "4 into the Inbox" in page and "labels.csv not used (everything into the Inbox)" in page
    assert "labels from labels.csv" not in page
