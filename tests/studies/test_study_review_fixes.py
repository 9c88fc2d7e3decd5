"""The outside review of reading studies (#26): a reading editor or owner stays blind, readers see the
study's own ids and freshly encoded bytes, write-back spares labels changed since, the model's caveat,
the "all finished" notice, and readers who left the project."""
import csv
import io
import json

import pytest
from django.urls import reverse

from tests.factories import member, project_with_images
from transferapp.accounts import tokens
from transferapp.models import AuditEntry, Image, Membership, ReadingStudy, TrainingRun
from transferapp.studies import agreement, studies

pytestmark = pytest.mark.django_db

CLASSES = ("crimson", "teal")


def _bearer(secret):
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


def _as(client, person):
    client.force_login(person)
    return client


@pytest.fixture
def team(user):
    """2 x 3 images; the owner, an editor (ed) and a labeller (ann) read; another editor (eve) does not.
    An earlier study of every image makes the study items' ids differ from every image id."""
    project = project_with_images(user, classes=CLASSES, per_class=3)
    people = {"owner": user, "ed": member(project, "ed", "editor"), "ann": member(project, "ann", "labeller"),
              "eve": member(project, "eve", "editor"), "vic": member(project, "vic", "viewer")}
    readers = [user, people["ed"], people["ann"]]
    all_ids = list(project.images.order_by("pk").values_list("pk", flat=True))
    studies.study_create(project=project, name="Earlier", readers=readers, images=all_ids, created_by=user)
    study = studies.study_create(project=project, name="Teal", readers=readers, images="class:teal", created_by=user)
    return project, people, study


def _read_all(study, readers, label="teal"):
    for reader in readers:
        for item in study.items.all():
            studies.read(study=study, reader=reader, item_id=item.pk, label=label)


# 1. Blindness whatever the reader's role --------------------------------------------------------------

@pytest.mark.parametrize("who", ["owner", "ed"])
def test_a_reader_who_is_an_editor_or_the_owner_sees_no_agreement_figure_while_the_study_is_open(client, team, who):
    project, people, study = team
    page, csv_url = reverse("study_agreement", args=[study.pk]), reverse("study_agreement_csv", args=[study.pk])
    api = f"/api/v1/studies/{study.pk}/agreement"
    secret = tokens.token_create(user=people[who])[1]
    reader = _as(client, people[who])
    assert reader.get(page).status_code == 403
    assert reader.get(page + "?a=ann&b=ed", HTTP_HX_REQUEST="true").status_code == 403
    assert reader.get(csv_url).status_code == 403
    assert client.get(api, **_bearer(secret)).status_code == 403
    listed = reader.get(reverse("study_list", args=[project.pk])).content.decode()
    assert page not in listed
    # an editor who does not read sees the interim figures; once closed, the readers too
    assert _as(client, people["eve"]).get(page).status_code == 200
    assert page in client.get(reverse("study_list", args=[project.pk])).content.decode()
    studies.close(study=study)
    assert _as(client, people[who]).get(page).status_code == 200
    assert client.get(api, **_bearer(secret)).status_code == 200


# 2. The study's own ids, and bytes that do not match the stored file -----------------------------------

def test_a_reader_sees_only_the_studys_ids_for_its_images_on_the_page_and_in_the_api(client, team):
    _, people, study = team
    items = list(study.items.select_related("image"))
    image_ids = {item.image_id for item in items}
    assert not image_ids & {item.pk for item in items}  # the fixture's precondition: the ids differ
    page = _as(client, people["ann"]).get(reverse("study_read", args=[study.pk])).content.decode()
    assert reverse("study_image_file", args=[study.pk, items[0].pk]) in page
    assert f'name="image" value="{items[0].pk}"' in page
    assert not any(f"/images/{pk}/" in page or f'value="{pk}"' in page for pk in image_ids)
    assert "do not open them until the study is closed" in page
    client.post(reverse("study_read", args=[study.pk]), {"image": items[0].pk, "label": "crimson"})
    assert studies.reads_of(study=study, reader=people["ann"]) == {items[0].pk: "crimson"}

    secret = tokens.token_create(user=people["ann"])[1]
    unread = client.get(f"/api/v1/studies/{study.pk}/next", **_bearer(secret)).json()
    assert [row["image"] for row in unread] == [item.pk for item in items[1:]]
    assert all(f"/images/{row['image']}/file" in row["file"] for row in unread)
    read = client.post(f"/api/v1/studies/{study.pk}/reads", json.dumps({"image": items[1].pk, "label": "teal"}),
                       content_type="application/json", **_bearer(secret))
    assert read.status_code == 200 and read.json()["image"] == items[1].pk
    # a project's image id is no study id: the image-file route does not know it
    assert client.get(f"/api/v1/studies/{study.pk}/images/{items[0].image_id}/file", **_bearer(secret)).status_code == 404


def test_a_study_image_is_a_fresh_png_that_does_not_match_the_class_pages_file(client, team):
    _, people, study = team
    item = study.items.select_related("image").first()
    with item.image.file.open("rb") as f:
        stored = f.read()
    served = _as(client, people["ann"]).get(reverse("study_image_file", args=[study.pk, item.pk]))
    assert served.status_code == 200 and served.content[:4] == b"\x89PNG"
    assert served.content != stored
    secret = tokens.token_create(user=people["ann"])[1]
    by_api = client.get(f"/api/v1/studies/{study.pk}/images/{item.pk}/file", **_bearer(secret))
    assert by_api.status_code == 200 and by_api.content[:4] == b"\x89PNG" and by_api.content != stored


def test_the_start_page_says_plainly_that_members_can_browse_the_class_pages(client, team):
    project, people, _ = team
    page = _as(client, people["eve"]).get(reverse("study_new", args=[project.pk])).content.decode()
    assert "a member can browse its class pages" in page and "we cannot stop a member looking" in page


# 3. Write-back spares labels changed since the study started ------------------------------------------

def _closed_and_adjudicated(study, label="crimson"):
    studies.close(study=study)
    for item in study.items.all():
        studies.adjudicate(study=study, item_id=item.pk, label=label, by=study.created_by)


def test_write_back_leaves_an_image_relabelled_since_the_study_started_and_counts_it(client, team):
    project, people, study = team
    changed, *others = list(study.items.order_by("position"))
    Image.objects.filter(pk=changed.image_id).update(label=project.labels.get(name="crimson"))
    Image.objects.filter(pk=others[0].image_id).update(label=project.labels.get(name="crimson"))
    # the second one was relabelled to crimson; the adjudicators say teal for it, crimson for the rest
    _closed_and_adjudicated(study)
    studies.adjudicate(study=study, item_id=others[0].pk, label="teal", by=study.created_by)
    before = AuditEntry.objects.filter(action="label.changed").count()
    answer = _as(client, people["eve"]).post(reverse("study_write_back", args=[study.pk]), follow=True).content.decode()
    assert "1 image(s) moved" in answer and "2 left as they are because their label changed since the study started" in answer
    assert Image.objects.get(pk=others[0].image_id).label.name == "crimson"  # the later decision stands
    assert Image.objects.get(pk=others[1].image_id).label.name == "crimson"  # moved from teal
    moved = [entry.detail["image"] for entry in AuditEntry.objects.filter(action="label.changed")[before:]]
    assert moved == [others[1].image_id]


def test_a_second_write_of_the_same_item_moves_nothing_and_leaves_no_audit_entry(team):
    project, _, study = team
    _closed_and_adjudicated(study)
    stale = list(study.items.exclude(adjudicated_label="").select_related("image__label"))
    assert studies.write_back(study=study)["moved"] == 3
    entries = AuditEntry.objects.filter(action="label.changed").count()
    classes = {label.name: label for label in project.labels.all()}
    # a racing submit that read the items before the first one wrote them
    assert {studies._write_one(study, item, classes["crimson"], "again") for item in stale} == {"skipped"}
    assert AuditEntry.objects.filter(action="label.changed").count() == entries


# 4. The model's caveat ----------------------------------------------------------------------------------

def test_the_agreement_warns_that_the_model_may_have_trained_on_a_class_study_but_not_on_the_test_set(client, team, user):
    project, people, study = team
    study.items.update(model_label="teal")
    studies.close(study=study)
    secret = tokens.token_create(user=people["eve"])[1]
    said = client.get(f"/api/v1/studies/{study.pk}/agreement", **_bearer(secret)).json()
    assert "may have trained on some of these images" in said["model_caveat"]
    page = _as(client, people["eve"]).get(reverse("study_agreement", args=[study.pk])).content.decode()
    assert 'id="model-caveat"' in page and "optimistic" in page
    Image.objects.filter(project=project, label__name="crimson").update(split="test")
    fair = studies.study_create(project=project, name="Test set", readers=[people["ann"], people["ed"]], images="test",
                                created_by=user)
    fair.items.update(model_label="teal")
    assert client.get(f"/api/v1/studies/{fair.pk}/agreement", **_bearer(secret)).json()["model_caveat"] == ""


def test_a_validation_study_carries_the_caveat_only_when_its_model_was_retrained_on_all_images(team):
    project, _, study = team
    run = TrainingRun.objects.create(project=project, base_model="resnet18", status=TrainingRun.Status.SUCCEEDED,
                                     version=1, metrics={"refit": {"done": False}})
    ReadingStudy.objects.filter(pk=study.pk).update(source="validation", model_version=1)
    study.refresh_from_db()
    assert agreement.model_caveat(study) == ""
    TrainingRun.objects.filter(pk=run.pk).update(metrics={"refit": {"done": True}})
    assert "retrained on all images" in agreement.model_caveat(study)


# 5. and 6. Everyone finished; readers who left ---------------------------------------------------------

def test_when_every_reader_has_finished_the_list_and_adjudication_say_close_the_study(client, team):
    project, people, study = team
    notice = "All readers have finished: close the study to see the agreement"
    eve = _as(client, people["eve"])
    assert notice not in eve.get(reverse("study_adjudicate", args=[study.pk])).content.decode()
    _read_all(study, [people["owner"], people["ed"], people["ann"]])
    assert notice in eve.get(reverse("study_adjudicate", args=[study.pk])).content.decode()
    assert notice in eve.get(reverse("study_list", args=[project.pk])).content.decode()
    assert ReadingStudy.objects.get(pk=study.pk).is_open  # no auto-close


@pytest.mark.parametrize("leave", ["removed", "viewer"])
def test_a_reader_who_left_the_project_no_longer_holds_the_study_open_and_their_reads_still_count(client, team, leave):
    project, people, study = team
    studies.read(study=study, reader=people["ann"], item_id=study.items.first().pk, label="crimson")
    _read_all(study, [people["owner"], people["ed"]])
    assert not studies.progress(study=ReadingStudy.objects.get(pk=study.pk))["complete"]
    gone = Membership.objects.filter(project=project, user=people["ann"])
    gone.delete() if leave == "removed" else gone.update(role="viewer")
    fresh = ReadingStudy.objects.get(pk=study.pk)
    progress = studies.progress(study=fresh)
    assert progress["complete"] and {r["reader"]: r["member"] for r in progress["readers"]}["ann"] is False
    listed = _as(client, people["eve"]).get(reverse("study_list", args=[project.pk])).content.decode()
    assert "ann 1 of 3 (no longer a member)" in listed
    studies.close(study=fresh)
    rows = list(csv.reader(io.StringIO(client.get(reverse("study_agreement_csv", args=[study.pk])).content.decode())))
    assert [row[rows[0].index("ann")] for row in rows[1:]].count("crimson") == 1  # ann's read still counts
