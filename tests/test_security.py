"""The outside review's security findings (issue 13): throttles, sign-up, proxies, headers,
upload caps and prediction limits. Quotas are in test_quotas.py."""
import importlib
import os
import subprocess
import sys

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import override_settings
from django.urls import clear_url_caches, reverse

from transferapp.throttle import client_address

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("queue", "clean_cache")]


@pytest.fixture
def clean_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("root", password="a-long-password-0", is_staff=True, is_superuser=True)


def _reload_urls():
    import transferapp.urls

    importlib.reload(transferapp.urls)
    clear_url_caches()


@pytest.fixture
def admin_disabled(settings):
    settings.ADMIN_ENABLED = False
    _reload_urls()
    yield
    settings.ADMIN_ENABLED = True
    _reload_urls()


# 1. The admin's sign-in shares the app's throttle, and the admin can be switched off.

def test_the_admin_login_is_throttled_like_the_app_login(client, staff, settings):
    settings.LOGIN_ATTEMPTS_LIMIT = 3
    for _ in range(3):
        assert client.post("/admin/login/", {"username": "root", "password": "wrong"}).status_code == 200
    blocked = client.post("/admin/login/", {"username": "root", "password": "a-long-password-0"})
    assert blocked.status_code == 429 and "Too many failed sign-in attempts" in blocked.content.decode()
    assert "_auth_user_id" not in client.session


def test_the_admin_login_still_signs_staff_in(client, staff):
    response = client.post("/admin/login/", {"username": "root", "password": "a-long-password-0", "next": "/admin/"})
    assert response.status_code == 302
    assert client.get("/admin/").status_code == 200


def test_admin_and_app_failures_count_together(client, user, settings):
    settings.LOGIN_ATTEMPTS_LIMIT = 2
    client.post("/admin/login/", {"username": "alice", "password": "wrong"})
    client.post(reverse("login"), {"username": "alice", "password": "wrong"})
    assert client.post(reverse("login"), {"username": "alice", "password": "a-long-password-1"}).status_code == 429


def test_the_admin_can_be_switched_off(client, staff, admin_disabled):
    client.force_login(staff)
    assert client.get("/admin/").status_code == 404
    assert client.get("/admin/login/").status_code == 404


# 3. Sign-up: closed by default in production, throttled per address.

def _settings_value(name, **env):
    """A setting as a fresh process computes it from this environment (settings read env once)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("LOCAL_MODE", "ALLOW_SIGNUP", "DEBUG", "DJANGO_SETTINGS_MODULE")}
    clean.update(SECRET_KEY="x" * 50, ALLOWED_HOSTS="example.org", **env)
    code = f"import transferapp.settings as s; print(s.{name})"
    return subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True, check=True).stdout.strip()


def test_sign_up_is_closed_by_default_in_production_and_open_in_local_mode():
    assert _settings_value("ALLOW_SIGNUP") == "False"
    assert _settings_value("ALLOW_SIGNUP", LOCAL_MODE="1") == "True"
    assert _settings_value("ALLOW_SIGNUP", ALLOW_SIGNUP="true") == "True"


def _sign_up(client, name, address="10.0.0.7"):
    password = "a-long-password-9"
    return client.post(reverse("signup"), {"username": name, "password1": password, "password2": password}, REMOTE_ADDR=address)


def test_sign_up_is_throttled_per_address(client, settings):
    settings.ALLOW_SIGNUP, settings.SIGNUP_RATE_LIMIT = True, 2
    assert _sign_up(client, "one").status_code == 302
    client.logout()
    assert _sign_up(client, "two").status_code == 302
    client.logout()
    refused = _sign_up(client, "three")
    assert refused.status_code == 429 and "Too many accounts were created from your address" in refused.content.decode()
    assert not get_user_model().objects.filter(username="three").exists()
    assert _sign_up(client, "four", address="10.0.0.8").status_code == 302


# 5. Client addresses behind a proxy, and a limit per address across accounts.

class FakeRequest:
    def __init__(self, **meta):
        self.META = {"REMOTE_ADDR": "10.0.0.1", **meta}


def test_the_client_address_is_remote_addr_unless_a_proxy_header_is_trusted(settings):
    settings.TRUSTED_PROXY_HEADER = ""
    assert client_address(FakeRequest(HTTP_X_FORWARDED_FOR="6.6.6.6")) == "10.0.0.1"
    settings.TRUSTED_PROXY_HEADER, settings.TRUSTED_PROXY_COUNT = "X-Forwarded-For", 1
    # The client forged the left entry; the proxy appended what it saw.
    assert client_address(FakeRequest(HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.5")) == "203.0.113.5"
    assert client_address(FakeRequest()) == "10.0.0.1"
    settings.TRUSTED_PROXY_COUNT = 2
    assert client_address(FakeRequest(HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.5, 10.1.1.1")) == "203.0.113.5"


def test_behind_a_trusted_proxy_one_attacker_cannot_lock_out_a_user(client, user, settings):
    settings.TRUSTED_PROXY_HEADER, settings.LOGIN_ATTEMPTS_LIMIT = "X-Forwarded-For", 3
    for _ in range(4):
        client.post(reverse("login"), {"username": "alice", "password": "wrong"}, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="6.6.6.6")
    attacker = client.post(reverse("login"), {"username": "alice", "password": "a-long-password-1"}, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="6.6.6.6")
    assert attacker.status_code == 429
    alice = client.post(reverse("login"), {"username": "alice", "password": "a-long-password-1"}, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.4")
    assert alice.status_code == 302


def test_one_address_guessing_many_accounts_is_stopped(client, settings):
    settings.LOGIN_ATTEMPTS_LIMIT, settings.LOGIN_ADDRESS_ATTEMPTS_LIMIT = 100, 5
    for i in range(5):
        assert client.post(reverse("login"), {"username": f"user{i}", "password": "wrong"}).status_code == 200
    assert client.post(reverse("login"), {"username": "someone-else", "password": "wrong"}).status_code == 429


# 6. Security headers on every response, and templates that need no inline script.

CSP_DIRECTIVES = [
    "default-src 'self'", "script-src 'self'", "img-src 'self' data: blob:", "frame-ancestors 'none'",
    "form-action 'self'", "base-uri 'self'", "object-src 'none'",
]


def _directives(response):
    return [part.strip() for part in response["Content-Security-Policy"].split(";")]


@pytest.mark.parametrize("url", ["/accounts/login/", "/admin/login/", "/healthz", "/no-such-page/"])
def test_every_response_carries_the_security_headers(client, url):
    response = client.get(url)
    for directive in CSP_DIRECTIVES:
        assert directive in _directives(response), (url, directive)
    assert not any("unsafe-inline" in d for d in _directives(response) if d.startswith(("script-src", "default-src")))
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "Strict-Transport-Security" not in response  # plain HTTP: no HSTS


def test_pages_of_a_signed_in_user_carry_the_policy_too(alice, user):
    from tests.factories import project_with_images

    project = project_with_images(user, per_class=1)
    for url in (reverse("project_list"), project.get_absolute_url(), reverse("predict", args=[project.pk])):
        assert "object-src 'none'" in _directives(alice.get(url)), url


def test_https_sites_send_hsts(client, settings):
    assert _settings_value("SECURE_HSTS_SECONDS", HTTPS="true") == "31536000"
    settings.SECURE_HSTS_SECONDS, settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = 31536000, True
    response = client.get("/accounts/login/", secure=True)
    assert response["Strict-Transport-Security"].startswith("max-age=31536000")


def test_templates_have_no_inline_scripts_or_event_handlers():
    import re
    from pathlib import Path

    from django.conf import settings

    for path in Path(settings.BASE_DIR, "templates").rglob("*.html"):
        text = path.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), f"inline <script> in {path}"
        assert not re.search(r"\son[a-z]+\s*=", text), f"inline event handler in {path}"
        assert "javascript:" not in text, path
