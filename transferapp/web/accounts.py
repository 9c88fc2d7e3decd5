"""Sign-up, and single sign-on's two views (sign-in with a password is accounts/auth.py's
throttled login view; the OpenID Connect backend is accounts/oidc.py)."""
import logging

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.forms import UserCreationForm
from django.core.exceptions import SuspiciousOperation
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.generic import View
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from transferapp.accounts import oidc, throttle

security_log = logging.getLogger("django.security.oidc")


def signup(request):
    if not settings.ALLOW_SIGNUP:
        return render(request, "transferapp/signup.html", {"closed": True}, status=403)
    refusal = throttle.signup_refusal(request) if request.method == "POST" else ""
    if refusal:
        return HttpResponse(refusal, status=429, content_type="text/plain; charset=utf-8")
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        throttle.signup_counted(request)
        login(request, user)
        messages.success(request, "Welcome! Create your first project to get started.")
        return redirect("project_list")
    return render(request, "transferapp/signup.html", {"form": form})


class OIDCLoginStart(OIDCAuthenticationRequestView):
    """"Sign in with ...": sends the browser to the provider (the library sets state, nonce, PKCE).
    The provider's address comes from its discovery document, fetched here at the first use."""

    def __init__(self, **kwargs):
        View.__init__(self, **kwargs)  # the library's __init__ reads endpoints from settings; ours come later

    def get(self, request):
        if not settings.OIDC_ENABLED:
            raise Http404("Single sign-on is not set up on this server.")
        try:
            self.OIDC_OP_AUTH_ENDPOINT = oidc.endpoint("authorization_endpoint")
        except oidc.ProviderUnavailable as error:
            messages.error(request, str(error))
            return redirect("login")
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        return super().get(request)


class OIDCCallback(OIDCAuthenticationCallbackView):
    """Where the provider sends the browser back. The library checks state, nonce and the token
    (an unknown state is a 400); a failure comes back to the login page with its reason."""

    def get(self, request):
        if not settings.OIDC_ENABLED:
            raise Http404("Single sign-on is not set up on this server.")
        try:
            return super().get(request)
        except SuspiciousOperation as error:  # unknown state, wrong nonce, bad signature, another client's token
            security_log.warning("Refused a single sign-on answer: %s", error)
            return render(request, "transferapp/sso_refused.html", status=400)

    def login_failure(self):
        reason = getattr(self.request, "oidc_failure", "") or (
            f"Sign-in with {oidc.provider_name()} did not complete (it was cancelled or refused). Try again.")
        messages.error(self.request, reason)
        return redirect("login")
