"""The project's audit log page and its CSV (#26): editors only, newest first, filtered, one
query per page however many entries, sentences a person reads; and verify_audit_log."""
import csv
import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from tests.factories import member, project_with_images
from transferapp.audit import log, trail
from transferapp.models import AuditEntry, AuditHead

pytestmark = pytest.mark.django_db


def _moves(project, image, n, by="alice"):
    with trail.acting_as(trail.Actor(by)):
        for i in range(n):
            trail.record(action="label.changed", project=project, detail={
                "to": "blue", "how": "relabelled", "count": 1, "more": 0,
                "listed": [{"image": image.pk, "file": image.original_name, "from": "red"}]})


def test_access_by_role_stranger_404_labeller_403_editor_and_owner_200(client, user, other_user):
    project = project_with_images(user, per_class=1)
    url = f"/projects/{project.pk}/audit/"
    for person, status in [(other_user, 404), (member(project, "lab", "labeller"), 403),
                           (member(project, "vic", "viewer"), 403), (member(project, "ed", "editor"), 200), (user, 200)]:
        client.force_login(person)
        assert client.get(url).status_code == status, person
        assert client.get(url + "log.csv").status_code == status, person


def test_the_page_tells_each_entry_as_a_sentence_newest_first_with_its_thumbnail(alice, user):
    project = project_with_images(user, per_class=1)
    image = project.labels.get(name="red").images.first()
    _moves(project, image, 1)
    with trail.acting_as(trail.Actor("bob")):
        trail.record(action="run.started", project=project, detail={"run": 7, "base": "b", "preset": "fast"})
    html = alice.get(f"/projects/{project.pk}/audit/").content.decode()
    assert f"alice moved image {image.pk} ({image.original_name}) from red to blue" in html
    assert html.index("bob started training run 7") < html.index("alice moved image")
    assert f"/images/{image.pk}/thumbnail/" in html


def test_filters_by_kind_and_person(alice, user):
    project = project_with_images(user, per_class=1)
    image = project.labels.get(name="red").images.first()
    _moves(project, image, 2, by="carol")
    html = alice.get(f"/projects/{project.pk}/audit/", {"kind": "label", "actor": "carol"}).content.decode()
    assert html.count('data-action="label.changed"') == 2 and 'data-action="class.created"' not in html
    html = alice.get(f"/projects/{project.pk}/audit/", {"kind": "class"}).content.decode()
    assert 'data-action="class.created"' in html and "carol moved" not in html
    html = alice.get(f"/projects/{project.pk}/audit/", {"actor": "nobody"}).content.decode()
    assert "No entries match these filters." in html


def test_a_page_costs_the_same_queries_for_many_entries_as_for_few(alice, user, django_assert_max_num_queries):
    project = project_with_images(user, per_class=1)
    image = project.labels.get(name="red").images.first()
    _moves(project, image, 3)
    with django_assert_max_num_queries(1000) as few:
        alice.get(f"/projects/{project.pk}/audit/")
    _moves(project, image, 60)
    with django_assert_max_num_queries(len(few.captured_queries)) as many:
        response = alice.get(f"/projects/{project.pk}/audit/")
    assert response.content.decode().count('data-action="label.changed"') == 50  # one page
    assert "Page 1 of 2" in response.content.decode()
    assert len(many.captured_queries) == len(few.captured_queries)


def test_the_csv_holds_the_whole_project_log_and_no_cell_is_a_formula(client, user, other_user, django_user_model):
    project = project_with_images(user, per_class=1)
    theirs = project_with_images(other_user, per_class=1, name="Theirs")
    sly = member(project, "@sly", "editor")
    image = project.labels.get(name="red").images.first()
    _moves(project, image, 55, by="@sly")
    client.force_login(sly)
    response = client.get(f"/projects/{project.pk}/audit/log.csv")
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    mine = AuditEntry.objects.filter(project_ref=project.pk)
    assert [int(r["id"]) for r in rows] == list(mine.order_by("pk").values_list("pk", flat=True))
    assert not AuditEntry.objects.filter(project_ref=theirs.pk, pk__in=[int(r["id"]) for r in rows]).exists()
    moved = [r for r in rows if r["action"] == "label.changed"]
    assert len(moved) == 55 and moved[0]["actor"] == "'@sly"  # quoted: a spreadsheet must not run it
    assert moved[0]["what"] == f"'@sly moved image {image.pk} ({image.original_name}) from red to blue"
    assert '"to":"blue"' in moved[0]["detail"] and len(moved[0]["entry_hash"]) == 64


def test_the_csv_carries_every_hashed_field_and_verify_audit_log_checks_each_row(client, user, tmp_path):
    project = project_with_images(user, per_class=1)
    sly = member(project, "@sly", "editor")
    _moves(project, project.labels.get(name="red").images.first(), 3, by="@sly")
    with trail.acting_as(trail.Actor.of_user(sly)):
        trail.record(action="run.started", project=project, detail={"run": 7, "base": "b", "preset": "fast"})
    client.force_login(sly)
    text = b"".join(client.get(f"/projects/{project.pk}/audit/log.csv").streaming_content).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    for row in rows:
        entry = AuditEntry.objects.get(pk=row["id"])
        assert row["created_at"] == entry.created_at.isoformat() and row["prev_hash"] == entry.prev_hash
        assert row["project_ref"] == str(project.pk) and row["project_name"] == project.name
    assert any(row["actor_ref"] == str(sly.pk) for row in rows)
    download = tmp_path / "log.csv"
    download.write_text(text, encoding="utf-8")
    out = io.StringIO()
    call_command("verify_audit_log", csv=str(download), stdout=out)
    assert f"{len(rows)} rows, each matches its hash." in out.getvalue()
    edited = text.replace('""to"":""blue""', '""to"":""green""', 1)  # CSV doubles the quotes inside a cell
    assert edited != text
    download.write_text(edited, encoding="utf-8")
    with pytest.raises(CommandError, match="does not match its hash"):
        call_command("verify_audit_log", csv=str(download), stdout=io.StringIO())


def test_verify_audit_log_passes_on_an_honest_log_and_names_an_edited_row(user):
    project = project_with_images(user, per_class=1)
    image = project.labels.get(name="red").images.first()
    _moves(project, image, 3)
    out = io.StringIO()
    call_command("verify_audit_log", stdout=out)
    total = AuditEntry.objects.count()
    last = AuditEntry.objects.order_by("pk").last()
    assert f"{total} entries, the chain holds. Last hash: {last.entry_hash}" in out.getvalue()
    victim = AuditEntry.objects.filter(action="label.changed").order_by("pk")[1]
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {AuditEntry._meta.db_table} SET actor = %s WHERE id = %s", ["mallory", victim.pk])
    with pytest.raises(CommandError) as failed:
        call_command("verify_audit_log", stdout=io.StringIO())
    message = str(failed.value)
    assert f"entry {victim.pk}" in message and "label.changed" in message and "changed" in message
    assert victim.created_at.isoformat() in message


def test_verify_audit_log_names_the_entry_after_a_deleted_row(user):
    project = project_with_images(user, per_class=1)
    _moves(project, project.labels.get(name="red").images.first(), 3)
    _, second, third = AuditEntry.objects.filter(action="label.changed").order_by("pk")
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {AuditEntry._meta.db_table} WHERE id = %s", [second.pk])
    with pytest.raises(CommandError) as failed:
        call_command("verify_audit_log", stdout=io.StringIO())
    assert f"entry {third.pk}" in str(failed.value) and "deleted" in str(failed.value)


def test_verify_audit_log_fails_when_the_last_entry_and_the_head_are_deleted_together(user):
    _three = [trail.record(action="label.changed", detail={"image": i}) for i in range(3)]
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {AuditEntry._meta.db_table} WHERE id = %s", [_three[-1].pk])
        cursor.execute(f"DELETE FROM {AuditHead._meta.db_table}")
    with pytest.raises(CommandError) as failed:
        call_command("verify_audit_log", stdout=io.StringIO())
    assert f"entry {_three[1].pk}" in str(failed.value) and "head record is missing" in str(failed.value)


def test_verify_audit_log_says_so_when_every_entry_is_gone(user):
    for i in range(3):
        trail.record(action="label.changed", detail={"image": i})
    AuditEntry.objects.all().delete()
    with pytest.raises(CommandError, match="all 3 entries are gone"):
        call_command("verify_audit_log", stdout=io.StringIO())


@pytest.mark.parametrize("action, detail, told", [
    ("sharing.added", {"user": "ed", "role": "editor"}, "lab shared the project with ed as editor"),
    ("sharing.changed", {"user": "ed", "from": "editor", "to": "viewer"}, "lab changed ed's role from editor to viewer"),
    ("sharing.removed", {"user": "ed", "role": "editor", "left": False}, "lab removed ed (editor) from the project"),
    ("sharing.removed", {"user": "lab", "role": "viewer", "left": True}, "lab left the project (they were viewer)"),
    ("study.started", {"study": 4, "name": "Pilot", "images": 20, "source": "test", "readers": ["ann", "ben"]},
     "lab started the reading study Pilot of 20 images with the readers ann, ben"),
    ("study.closed", {"study": 4, "name": "Pilot"}, "lab closed the reading study Pilot"),
    ("study.adjudicated", {"study": 4, "image": 9, "label": "red"}, "lab adjudicated image 9 as red in reading study 4"),
    ("study.written_back", {"study": 4, "moved": 2, "confirmed": 5, "skipped": 0},
     "lab wrote the adjudicated labels of reading study 4 into the project (2 moved, 5 confirmed, 0 skipped)"),
    ("key.created", {"key": "ta_abc", "name": "lims"}, "lab created the API key ta_abc… (lims)"),
    ("key.revoked", {"key": "ta_abc", "name": "", "why": "member removed"},
     "lab revoked the API key ta_abc… because: member removed"),
    ("token.created", {"token": "ta_pt_x", "name": "laptop", "user": "lab"},
     "lab created the personal token ta_pt_x… (laptop) of lab"),
])
def test_team_entries_read_as_sentences(action, detail, told):
    with trail.acting_as(trail.Actor("lab")):
        entry = trail.record(action=action, detail=detail)
    assert log.sentence(entry) == told


def test_the_log_offers_no_tokens_filter_since_token_entries_belong_to_no_project(alice, user):
    project = project_with_images(user, per_class=1)
    assert "token" not in log.KINDS
    page = alice.get(f"/projects/{project.pk}/audit/?kind=token").content.decode()
    assert 'value="token"' not in page
