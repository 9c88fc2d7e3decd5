"""Sign-in with a limit on failed attempts, shared by the app's login page and the admin's.

The limit lives in the login form (both views take an `authentication_form`), so the two pages
share one check and one count, and the admin keeps its own page. Two limits, both in a window of
LOGIN_ATTEMPTS_WINDOW_S:

- per (account, address), LOGIN_ATTEMPTS_LIMIT: caps guessing one account's password from one
  address. It never locks an account as such: its owner, from another address, can still sign in,
  so nobody can lock a known user out from afar.
- per address across accounts, LOGIN_ADDRESS_ATTEMPTS_LIMIT (higher): caps one address trying a
  few passwords on many accounts. Behind a reverse proxy this needs TRUSTED_PROXY_HEADER, or every
  user shares the proxy's address (see throttle.client_address).
"""
import unicodedata

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

from transferapp.accounts import throttle

THROTTLED = "throttled"


def account_key(username: str) -> str:
    """The name the failed-attempt counter is kept under: one per account, however it is spelt.

    Django NFKC-normalises the typed name before looking the user up (UsernameField), so
    `ｔarget1` (U+FF54, a fullwidth t) signs in as `target1`: counting the raw text would give each
    look-alike spelling a fresh allowance. NFKC, then case-folded (and NFKC again, since folding can
    undo it: Unicode's NFKC_Casefold), so that `Target1` shares it too.
    """
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", username.strip()).casefold())
    return folded.strip()


class LoginThrottleMixin:
    """For an AuthenticationForm: refuses while a limit is reached, counts each wrong password."""

    def clean(self):
        address = throttle.client_address(self.request)
        account = f"{account_key(self.data.get('username') or '')}:{address}"
        per_account, per_address = throttle.failed_logins_per_account(), throttle.failed_logins_per_address()
        if per_account.exceeded(account) or per_address.exceeded(address):
            raise ValidationError(
                f"Too many failed sign-in attempts. Try again in {per_account.wait_text}.", code=THROTTLED
            )
        try:
            return super().clean()
        except ValidationError:
            if self.user_cache is None:  # a wrong password, not an inactive or non-staff account
                per_account.hit(account)
                per_address.hit(address)
            raise


class ThrottledAuthenticationForm(LoginThrottleMixin, AuthenticationForm):
    pass


class ThrottledAdminAuthenticationForm(LoginThrottleMixin, AdminAuthenticationForm):
    pass


def with_throttled_status(response):
    """429 Too Many Requests when the login form was refused by the limit (else unchanged)."""
    form = (getattr(response, "context_data", None) or {}).get("form")
    if form is not None and form.has_error(NON_FIELD_ERRORS, code=THROTTLED):
        response.status_code = 429
    return response


class RateLimitedLoginView(auth_views.LoginView):
    template_name = "transferapp/login.html"
    authentication_form = ThrottledAuthenticationForm

    def form_invalid(self, form):
        return with_throttled_status(super().form_invalid(form))


class ThrottledAdminSite(admin.AdminSite):
    """The admin, signing in through the same limited form (installed by apps.AdminConfig)."""

    login_form = ThrottledAdminAuthenticationForm

    def login(self, request, extra_context=None):
        return with_throttled_status(super().login(request, extra_context))
