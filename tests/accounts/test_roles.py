"""Roles (#26): ordered, a stranger gets 404, a lower role 403."""
import pytest
from django.core.exceptions import PermissionDenied
from django.http import Http404

from tests.factories import member, project_with_images
from transferapp.accounts import roles
from transferapp.models import Project

pytestmark = pytest.mark.django_db


def test_each_role_allows_what_the_ones_below_it_do_and_a_stranger_nothing(user, other_user):
    project = project_with_images(user, per_class=1)
    viewer, editor = member(project, "vic", "viewer"), member(project, "eddie", "editor")
    assert roles.require(user, project, roles.OWNER) == roles.OWNER
    assert roles.require(editor, project, roles.LABELLER) == roles.EDITOR
    assert roles.require(viewer, project) == roles.VIEWER
    with pytest.raises(PermissionDenied):
        roles.require(viewer, project, roles.LABELLER)
    with pytest.raises(PermissionDenied):
        roles.require(editor, project, roles.OWNER)
    with pytest.raises(Http404):
        roles.require(other_user, project)
    assert set(Project.objects.filter(roles.visible(viewer))) == {project}
    assert not Project.objects.filter(roles.visible(other_user)).exists()


def test_a_deactivated_member_has_no_role(user):
    project = project_with_images(user, per_class=1)
    viewer = member(project, "vic", "viewer")
    viewer.is_active = False
    viewer.save()
    with pytest.raises(Http404):
        roles.require(viewer, project)
