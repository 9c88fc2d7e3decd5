"""Reading studies' pages (#26): who may open which, blind reading, adjudication and writing back."""
import re

import pytest
from django.urls import reverse

from tests.factories import member, project_with_images
from transferapp.models import AuditEntry, Image, ReadingStudy
from transferapp.studies import studies

pytestmark = pytest.mark.django_db

# Class names no page uses as an ordinary word (PIL knows both colours), so finding one in a page
# means the page named a class.
CLASSES = ("crimson", "teal")


@pytest.fixture
def team(user):
    """A project of 2 x 3 images, two labeller readers, an editor, a viewer, and an open study of all images."""
    project = project_with_images(user, classes=CLASSES, per_class=3)
    people = {"ann": member(project, "ann", "labeller"), "bob": member(project, "bob", "labeller"),
              "eve": member(project, "eve", "editor"), "vic": member(project, "vic", "viewer")}
    ids = list(project.images.order_by("pk").values_list("pk", flat=True))
    study = studies.study_create(project=project, name="Second look", readers=[people["ann"], people["bob"]],
                                 images=ids, created_by=user)
    return project, people, study


def _as(client, person):
    client.force_login(person)
    return client


def _without_class_buttons(page: str) -> str:
    """The page less its class buttons (the choices every reader must see)."""
    return re.sub(r'<ul class="row review-classes" id="study-classes">.*?</ul>', "", page, flags=re.DOTALL)


@pytest.mark.parametrize("who, status", [("ann", 200), ("eve", 403), ("vic", 403), ("stranger", 404)])
def test_the_reading_page_opens_for_its_readers_only(client, team, django_user_model, who, status):
    _, people, study = team
    people["stranger"] = django_user_model.objects.create_user("sam", password="sam-long-password-1")
    assert _as(client, people[who]).get(reverse("study_read", args=[study.pk])).status_code == status


@pytest.mark.parametrize("who, status", [("owner", 200), ("eve", 200), ("ann", 403), ("vic", 403), ("stranger", 404)])
def test_the_adjudication_page_is_an_editors_and_never_a_reader_of_an_open_study(client, team, user,
                                                                                  django_user_model, who, status):
    _, people, study = team
    people.update(owner=user, stranger=django_user_model.objects.create_user("sam", password="sam-long-password-1"))
    assert _as(client, people[who]).get(reverse("study_adjudicate", args=[study.pk])).status_code == status


def test_an_editor_who_reads_sees_no_others_reads_until_the_study_is_closed(client, user):
    project = project_with_images(user, classes=CLASSES, per_class=1)
    ann = member(project, "ann", "labeller")
    study = studies.study_create(project=project, name="", readers=[user, ann], images="class:teal", created_by=user)
    assert _as(client, user).get(reverse("study_adjudicate", args=[study.pk])).status_code == 403
    studies.close(study=study)
    assert client.get(reverse("study_adjudicate", args=[study.pk])).status_code == 200


@pytest.mark.parametrize("who, get, post", [("owner", 200, 302), ("eve", 200, 302), ("ann", 403, 403),
                                            ("vic", 403, 403), ("stranger", 404, 404)])
def test_starting_a_study_needs_an_editor(client, team, user, django_user_model, who, get, post):
    project, people, _ = team
    people.update(owner=user, stranger=django_user_model.objects.create_user("sam", password="sam-long-password-1"))
    url = reverse("study_new", args=[project.pk])
    _as(client, people[who])
    assert client.get(url).status_code == get
    form = {"name": "Teal again", "readers": [people["ann"].pk, people["bob"].pk], "source": "class",
            "label": project.labels.get(name="teal").pk}
    assert client.post(url, form).status_code == post
    assert ReadingStudy.objects.filter(name="Teal again").count() == (1 if post == 302 else 0)


def test_the_editor_offers_labellers_and_the_owner_as_readers_and_says_why_it_refuses(client, team, user):
    project, people, _ = team
    page = _as(client, user).get(reverse("study_new", args=[project.pk])).content.decode()
    offered = re.findall(r'name="readers" value="(\d+)"', page)
    assert sorted(map(int, offered)) == sorted([user.pk, people["ann"].pk, people["bob"].pk, people["eve"].pk])
    # a viewer's id sent anyway is not a reader: one reader left, and the refusal says so
    answer = client.post(reverse("study_new", args=[project.pk]),
                         {"readers": [people["ann"].pk, people["vic"].pk], "source": "test"}, follow=True)
    assert "A study needs at least two readers." in answer.content.decode()
    answer = client.post(reverse("study_new", args=[project.pk]),
                         {"readers": [people["ann"].pk, people["bob"].pk], "source": "test"}, follow=True)
    assert "There are no images to read in that set." in answer.content.decode()
    Image.objects.filter(project=project, label__name="crimson").update(split="test")
    answer = client.post(reverse("study_new", args=[project.pk]),
                         {"readers": [people["ann"].pk, people["bob"].pk], "source": "test"}, follow=True)
    study = ReadingStudy.objects.filter(source="test").get()
    assert study.items.count() == 3 and "Started" in answer.content.decode()


def test_the_reading_page_shows_no_label_file_name_model_answer_or_other_read(client, team):
    _, people, study = team
    study.items.update(model_label="teal")
    first = study.items.first()
    studies.read(study=study, reader=people["bob"], item_id=first.pk, label="teal")
    page = _as(client, people["ann"]).get(reverse("study_read", args=[study.pk])).content.decode()
    assert 'data-key="1"' in page and "image 1 of 6" in page and "0</strong> of <strong>6" in page
    assert reverse("study_image_file", args=[study.pk, first.pk]) in page
    rest = _without_class_buttons(page)
    for name in CLASSES:
        assert name not in rest
    assert ".png" not in rest and first.image.sha256 not in rest
    assert reverse("image_thumbnail", args=[first.image_id]) not in page


def test_a_reader_reads_goes_back_and_changes_a_read(client, team):
    _, people, study = team
    ann = _as(client, people["ann"])
    url = reverse("study_read", args=[study.pk])
    ids = list(study.items.values_list("pk", flat=True))
    answer = ann.post(url, {"image": ids[0], "label": "crimson"})
    assert answer.status_code == 302 and answer["Location"].endswith("?at=2")
    page = ann.get(answer["Location"]).content.decode()
    assert "1</strong> of <strong>6" in page and "image 2 of 6" in page and "?at=1" in page
    back = ann.get(url + "?at=1").content.decode()
    assert "Your read: <strong>crimson</strong>" in back
    ann.post(url, {"image": ids[0], "label": "teal"})
    assert studies.reads_of(study=study, reader=people["ann"]) == {ids[0]: "teal"}
    for image_id in ids[1:]:
        last = ann.post(url, {"image": image_id, "label": "teal"})
    assert last["Location"].endswith("?done=1")
    assert "You have read all 6 images." in ann.get(last["Location"]).content.decode()


def test_a_read_that_is_refused_says_why(client, team):
    _, people, study = team
    image_id = study.items.first().pk
    page = _as(client, people["ann"]).post(reverse("study_read", args=[study.pk]),
                                           {"image": image_id, "label": "mauve"}, follow=True).content.decode()
    assert "is not one of this study&#x27;s classes." in page
    studies.close(study=study)
    page = client.post(reverse("study_read", args=[study.pk]), {"image": image_id, "label": "teal"}, follow=True)
    assert "This study is closed" in page.content.decode()


@pytest.mark.parametrize("who, status", [("ann", 200), ("vic", 200), ("eve", 200), ("stranger", 404)])
def test_a_study_image_is_served_to_anyone_with_a_role_and_only_if_it_is_in_the_study(client, team, django_user_model,
                                                                                     who, status):
    _, people, study = team
    people["stranger"] = django_user_model.objects.create_user("sam", password="sam-long-password-1")
    item = study.items.first()
    answer = _as(client, people[who]).get(reverse("study_image_file", args=[study.pk, item.pk]))
    assert answer.status_code == status
    if status == 200:
        assert answer.content[:4] == b"\x89PNG"
        assert "crimson" not in answer.get("Content-Disposition", "") and "teal" not in answer.get("Content-Disposition", "")
    other = project_with_images(people["eve"], classes=CLASSES, per_class=1, name="Elsewhere").images.first()
    assert client.get(reverse("study_image_file", args=[study.pk, other.pk])).status_code == 404


def test_adjudication_then_write_back_moves_images_with_provenance_and_audit(client, team, user):
    _, people, study = team
    items = list(study.items.select_related("image__label"))
    for item in items:  # ann says teal to all, bob agrees on the last two only
        studies.read(study=study, reader=people["ann"], item_id=item.pk, label="teal")
        studies.read(study=study, reader=people["bob"], item_id=item.pk,
                     label="teal" if item.position >= 4 else "crimson")
    eve = _as(client, people["eve"])
    url = reverse("study_adjudicate", args=[study.pk])
    page = eve.get(url).content.decode()
    assert "0</strong> of <strong>4</strong> disagreements" in page and "ann" in page and "bob" in page
    assert eve.post(reverse("study_write_back", args=[study.pk]), follow=True).content.decode().count("Close the study first")
    eve.post(reverse("study_close", args=[study.pk]))
    for item in items[:4]:  # the first three are crimson in the project: one moves to teal, two stay
        eve.post(url, {"item": item.pk, "label": "teal" if item.position == 0 else item.image.label.name})
    page = eve.get(url).content.decode()
    assert "4</strong> of <strong>4</strong> disagreements" in page and "Every disagreement is adjudicated." in page
    done = eve.post(reverse("study_write_back", args=[study.pk]), follow=True).content.decode()
    assert "1 image(s) moved" in done and "3 already in it" in done
    moved = Image.objects.get(pk=items[0].image_id)
    assert moved.label.name == "teal" and moved.provenance == f"adjudicated in study {study.pk} (Second look)"
    changes = AuditEntry.objects.filter(action="label.changed")
    assert [entry.detail for entry in changes] == [
        {"image": moved.pk, "from": "crimson", "to": "teal", "via": f"study {study.pk}"}]
    assert study.items.filter(written_back_at__isnull=False).count() == 4
    again = eve.post(reverse("study_write_back", args=[study.pk]), follow=True).content.decode()
    assert "no adjudicated label left to write" in again and changes.count() == 1


def test_the_project_page_lists_studies_with_each_readers_progress(client, team, user):
    project, people, study = team
    studies.read(study=study, reader=people["ann"], item_id=study.items.first().pk, label="teal")
    page = _as(client, user).get(reverse("project_detail", args=[project.pk])).content.decode()
    assert "Reading studies" in page and "ann 1 of 6" in page and "bob 0 of 6" in page
    assert reverse("study_adjudicate", args=[study.pk]) in page
    listing = client.get(reverse("study_list", args=[project.pk])).content.decode()
    assert "Second look" in listing and reverse("study_new", args=[project.pk]) in listing


def test_a_class_pages_selection_opens_the_editor_with_those_images(client, team, user):
    project, people, _ = team
    label = project.labels.get(name="teal")
    picked = list(label.images.order_by("pk").values_list("pk", flat=True)[:2])
    page = _as(client, user).get(reverse("label_detail", args=[project.pk, label.pk])).content.decode()
    assert f'formaction="{reverse("study_new", args=[project.pk])}"' in page
    editor = client.post(reverse("study_new", args=[project.pk]), {"images": picked, "action": ""}).content.decode()
    assert "The 2 selected images" in editor and ReadingStudy.objects.count() == 1
    stranger = project_with_images(people["eve"], classes=CLASSES, per_class=1, name="Elsewhere").images.first().pk
    client.post(reverse("study_new", args=[project.pk]), {"readers": [people["ann"].pk, people["bob"].pk],
                                                          "source": "selection", "image": [*picked, stranger]})
    study = ReadingStudy.objects.get(source="selection", name="Study of selection")
    assert sorted(study.items.values_list("image_id", flat=True)) == picked


def test_the_audit_log_tells_a_study_write_back_as_one_sentence_per_moved_image(client, team, user):
    project, people, study = team
    item = study.items.get(position=0)
    for reader, label in (("ann", "teal"), ("bob", "crimson")):
        studies.read(study=study, reader=people[reader], item_id=item.pk, label=label)
    eve = _as(client, people["eve"])
    eve.post(reverse("study_close", args=[study.pk]))
    eve.post(reverse("study_adjudicate", args=[study.pk]), {"item": item.pk, "label": "teal"})
    eve.post(reverse("study_write_back", args=[study.pk]))
    page = _as(client, user).get(reverse("audit_log", args=[project.pk])).content.decode()
    assert f"eve moved image {item.image_id} from crimson to teal (study {study.pk})" in page


def test_the_agreement_page_says_when_the_project_has_no_model_to_compare(client, team):
    _, people, study = team
    page = _as(client, people["eve"]).get(reverse("study_agreement", args=[study.pk])).content.decode()
    assert "This project has no trained model" in page and "not in yet" not in page
