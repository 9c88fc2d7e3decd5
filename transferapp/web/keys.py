"""The project's API keys: create (shown once) and revoke."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from transferapp.accounts import api_keys, roles
from transferapp.accounts import selectors as accounts_selectors
from transferapp.library import selectors as library_selectors


@login_required
@require_POST
def api_key_create(request, pk):
    project = library_selectors.project_get_for_user(user=request.user, need=roles.EDITOR, pk=pk)
    _, key = api_keys.api_key_create(project=project, name=request.POST.get("name", ""), by=request.user)
    # Shown on this one response only: the database keeps its hash.
    response = render(request, "transferapp/api_key_created.html", {"project": project, "new_key": key})
    response["Cache-Control"] = "no-store"  # the secret must not stay in a cache or the history
    return response


@login_required
@require_POST
def api_key_revoke(request, pk):
    key = accounts_selectors.api_key_get_for_user(user=request.user, need=roles.EDITOR, pk=pk)
    api_keys.api_key_revoke(key=key)
    messages.success(request, f"Key {key.prefix}… revoked: requests with it are now refused.")
    return redirect(key.project)
