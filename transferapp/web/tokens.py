"""The account's personal API tokens (#26): list, create (shown once), revoke. A token acts as its
user in every project they have a role in, so only its user sees or revokes it."""
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from transferapp.accounts import tokens
from transferapp.models import PersonalToken


@login_required
def token_list(request):
    return _page(request)


@login_required
@require_POST
def token_create(request):
    row, secret = tokens.token_create(user=request.user, name=request.POST.get("name", ""))
    # Shown on this one response only: the database keeps its hash.
    response = _page(request, new_token=secret, new_row=row)
    response["Cache-Control"] = "no-store"  # the secret must not stay in a cache or the history
    return response


@login_required
@require_POST
def token_revoke(request, pk):
    token = get_object_or_404(PersonalToken, pk=pk, user=request.user)  # another user's token: 404
    tokens.token_revoke(token=token)
    messages.success(request, f"Token {token.prefix}… revoked: requests with it are now refused.")
    return redirect("token_list")


def _page(request, **extra):
    return render(request, "transferapp/tokens.html",
                  {"tokens": PersonalToken.objects.filter(user=request.user), **extra})
