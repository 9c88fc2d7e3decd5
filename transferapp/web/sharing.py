"""A project's sharing page (#26): the owner adds a user with a role, changes a role, removes a
member; every member sees who else is in the project (read-only) and can leave it."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from transferapp.accounts import roles, sharing
from transferapp.library import selectors as library_selectors


def _back(project):
    return redirect("project_sharing", pk=project.pk)


@login_required
def sharing_page(request, pk):
    """Read-only for members (knowing who else sees and changes the data is their business too);
    the forms are the owner's."""
    project = library_selectors.project_get_for_user(user=request.user, pk=pk, need=roles.VIEWER)
    members = sharing.members(project=project)
    if project.can.own:  # the owner's confirmations say how many keys a removal or downgrade revokes
        at_stake = sharing.keys_at_stake(project=project)
        for member in members:
            member.keys_at_stake = at_stake.get(member.user_id, 0)
    context = {"project": project, "members": members, "roles": roles.SHARABLE, "who": request.GET.get("who", "")}
    return render(request, "transferapp/sharing.html", context)


@login_required
@require_POST
def sharing_add(request, pk):
    project = library_selectors.project_get_for_user(user=request.user, pk=pk, need=roles.OWNER)
    try:
        member = sharing.share(project=project, who=request.POST.get("who", ""), role=request.POST.get("role", ""),
                               by=request.user)
    except sharing.SharingRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Shared with {member.user.get_username()} as {member.role}.")
    return _back(project)


def _member(request, pk, member_pk):
    """A member of this project (the id from the URL is looked up inside the owner's project only)."""
    project = library_selectors.project_get_for_user(user=request.user, pk=pk, need=roles.OWNER)
    return get_object_or_404(project.memberships.select_related("user", "project"), pk=member_pk)


@login_required
@require_POST
def sharing_change(request, pk, member_pk):
    member = _member(request, pk, member_pk)
    try:
        sharing.change_role(member=member, role=request.POST.get("role", ""))
    except sharing.SharingRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{member.user.get_username()} is now {member.role}.")
    return _back(member.project)


@login_required
@require_POST
def sharing_remove(request, pk, member_pk):
    member = _member(request, pk, member_pk)
    sharing.unshare(member=member)
    messages.success(request, f"{member.user.get_username()} no longer has access to this project.")
    return _back(member.project)


@login_required
@require_POST
def sharing_leave(request, pk):
    project = library_selectors.project_get_for_user(user=request.user, pk=pk, need=roles.VIEWER)
    try:
        sharing.leave(project=project, user=request.user)
    except sharing.SharingRefused as exc:
        messages.error(request, str(exc))
        return _back(project)
    messages.success(request, f"You left “{project.name}”.")
    return redirect("project_list")
