"""The sharing page and the project list for shared projects (#26)."""
import pytest
from django.urls import reverse

from tests.conftest import image_bytes
from tests.factories import member, project_with_images, upload
from transferapp.accounts import roles
from transferapp.models import AuditEntry, Membership

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(user):
    return project_with_images(user, per_class=1, name="Shared colours")


def test_the_owner_shares_changes_and_removes_on_the_page(alice, project, django_user_model):
    bob = django_user_model.objects.create_user("bob", email="bob@example.org")
    page = alice.get(reverse("project_sharing", args=[project.pk])).content.decode()
    assert 'id="share-form"' in page
    response = alice.post(reverse("sharing_add", args=[project.pk]), {"who": "bob@example.org", "role": "labeller"}, follow=True)
    assert "Shared with bob as labeller." in response.content.decode()
    membership = Membership.objects.get(project=project, user=bob)
    alice.post(reverse("sharing_change", args=[project.pk, membership.pk]), {"role": "editor"})
    assert Membership.objects.get(pk=membership.pk).role == roles.EDITOR
    alice.post(reverse("sharing_remove", args=[project.pk, membership.pk]))
    assert not Membership.objects.filter(pk=membership.pk).exists()
    actions = list(AuditEntry.objects.filter(action__startswith="sharing.").order_by("pk").values_list("action", "actor"))
    assert actions == [("sharing.added", "alice"), ("sharing.changed", "alice"), ("sharing.removed", "alice")]


def test_a_refused_share_says_why_without_telling_whether_the_address_exists(alice, project, django_user_model):
    django_user_model.objects.create_user("gone", email="gone@example.org", is_active=False)
    for who in ("gone@example.org", "nobody@example.org"):
        page = alice.post(reverse("sharing_add", args=[project.pk]), {"who": who, "role": "viewer"}, follow=True)
        assert "No active account has that username or e-mail address." in page.content.decode()
    assert not Membership.objects.exists()


def test_a_member_sees_the_list_read_only_and_can_leave(client, project):
    viewer = member(project, "vera", roles.VIEWER)
    member(project, "lena", roles.LABELLER)
    client.force_login(viewer)
    page = client.get(reverse("project_sharing", args=[project.pk])).content.decode()
    assert 'data-member="lena"' in page and "labeller" in page
    assert 'id="share-form"' not in page and "Change role" not in page and 'id="leave-form"' in page
    lena = Membership.objects.get(user__username="lena")
    assert client.post(reverse("sharing_remove", args=[project.pk, lena.pk])).status_code == 403
    assert client.post(reverse("sharing_add", args=[project.pk]), {"who": "vera", "role": "editor"}).status_code == 403
    response = client.post(reverse("sharing_leave", args=[project.pk]))
    assert response.status_code == 302 and roles.role_of(viewer, project) is None
    assert client.get(reverse("project_detail", args=[project.pk])).status_code == 404


def test_a_membership_of_another_project_cannot_be_changed_through_this_one(alice, project, user, django_user_model):
    other_owner = django_user_model.objects.create_user("olga")
    other = project_with_images(other_owner, per_class=1, name="Olga's")
    theirs = Membership.objects.get(user=member(other, "pete", roles.VIEWER))
    assert alice.post(reverse("sharing_change", args=[project.pk, theirs.pk]), {"role": "editor"}).status_code == 404
    assert Membership.objects.get(pk=theirs.pk).role == roles.VIEWER


def test_the_project_list_shows_shared_projects_with_the_role_and_owner(client, project, django_user_model):
    editor = member(project, "ed", roles.EDITOR)
    own = project_with_images(editor, per_class=1, name="Ed's own")
    client.force_login(editor)
    page = client.get(reverse("project_list")).content.decode()
    assert "Shared colours" in page and "Ed&#x27;s own" in page
    assert 'data-role="editor"' in page and "Shared by alice" in page
    assert page.count("shared-note") == 1  # the own project carries no note
    assert own.pk != project.pk


def test_a_viewer_sees_no_buttons_they_cannot_use(client, project):
    client.force_login(member(project, "vera", roles.VIEWER))
    page = client.get(reverse("project_detail", args=[project.pk])).content.decode()
    for hidden in ("project_rename", "label_create", "inbox_upload", "training_start", "api_key_create", "import_create"):
        assert reverse(hidden, args=[project.pk]) not in page, hidden
    assert reverse("predict", args=[project.pk]) in page and "you are viewer" in page
    label = project.labels.first()
    page = client.get(label.get_absolute_url()).content.decode()
    assert reverse("label_upload", args=[project.pk, label.pk]) not in page and "thumb-delete" not in page


def test_a_labeller_sees_labelling_but_not_editing(client, project):
    client.force_login(member(project, "lena", roles.LABELLER))
    page = client.get(reverse("project_detail", args=[project.pk])).content.decode()
    assert reverse("inbox_upload", args=[project.pk]) in page and reverse("label_create", args=[project.pk]) in page
    assert reverse("training_start", args=[project.pk]) not in page and reverse("project_delete", args=[project.pk]) not in page


def test_a_labellers_upload_counts_against_the_owners_quota(client, project, settings):
    settings.QUOTA_IMAGES = 3  # the owner has 2 images; the labeller has none of their own
    lena = member(project, "lena", roles.LABELLER)
    client.force_login(lena)
    label = project.labels.first()
    files = [upload(f"new-{i}.png", image_bytes("green", shape_seed=50 + i)) for i in range(2)]
    response = client.post(reverse("label_upload", args=[project.pk, label.pk]), {"files": files},
                           headers={"X-Requested-With": "XMLHttpRequest"})
    assert response.json()["added"] == 1 and response.json()["refused"] == 1
    assert project.images.count() == 3


def test_a_viewer_sees_a_class_without_the_selection_form_a_labeller_with_it(client, project):
    label = project.labels.get(name="red")
    for name, role, shown in (("vera", roles.VIEWER, False), ("lena", roles.LABELLER, True)):
        client.force_login(member(project, name, role))
        page = client.get(label.get_absolute_url()).content.decode()
        assert "1 image in this class" in page
        for part in ('id="selection-form"', "data-select-all", 'class="thumb-select"', "Move selected"):
            assert (part in page) == shown, (name, part)
