"""Single sign-on (#26) against a real OpenID Connect provider: django-oauth-toolkit, run by this
module in a second process (tests/oidc_provider/), with its own SQLite database and an RSA key
made here. Our app is driven through the Django test client; the provider's login form through a
requests.Session, as a browser would. Nothing of mozilla-django-oidc is mocked."""
import html
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from django.contrib.auth import get_user_model
from django.core.exceptions import SuspiciousOperation
from django.urls import reverse

from transferapp.accounts import oidc
from transferapp.models import OIDCIdentity

REPO = Path(__file__).resolve().parents[2]
CLIENT_ID, CLIENT_SECRET = "transferapp-test", "a-long-client-secret-for-the-test-only"
CALLBACK = "http://testserver/accounts/oidc/callback/"
CAROL_PASSWORD = "carol-provider-pw-9"


@dataclass
class Provider:
    issuer: str
    process: subprocess.Popen


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rsa_key_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _wait_for_discovery(issuer: str, process: subprocess.Popen, seconds: float = 40) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if requests.get(f"{issuer}/.well-known/openid-configuration", timeout=2).ok:
                return True
        except requests.RequestException:
            time.sleep(0.3)
    return False


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    pytest.importorskip("oauth2_provider", reason="django-oauth-toolkit (the test extras) is not installed, "
                        "so the OpenID Connect provider this test signs in at cannot start")
    folder = tmp_path_factory.mktemp("oidc-provider")
    (folder / "rsa.pem").write_text(_rsa_key_pem())
    port = _free_port()
    issuer = f"http://127.0.0.1:{port}/o"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "OIDC_"))}
    env.update(DJANGO_SETTINGS_MODULE="tests.oidc_provider.settings", PROVIDER_DIR=str(folder),
               PROVIDER_ISSUER=issuer, PYTHONPATH=str(REPO))
    # The database and the client: a failure here is a bug in tests/oidc_provider/, so it fails the test.
    subprocess.run([sys.executable, "-m", "tests.oidc_provider.setup", CALLBACK, CLIENT_ID, CLIENT_SECRET],
                   env=env, cwd=REPO, check=True, capture_output=True, timeout=120)
    with open(folder / "server.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "django", "runserver", "--noreload", f"127.0.0.1:{port}"],
                                   env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            if not _wait_for_discovery(issuer, process):
                pytest.skip("the OpenID Connect provider (django-oauth-toolkit's runserver, a second process) did "
                            f"not start answering on port {port}: {(folder / 'server.log').read_text()[-800:]}")
            yield Provider(issuer, process)
        finally:
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture
def sso(settings, provider):
    settings.OIDC_ISSUER, settings.OIDC_ENABLED = provider.issuer, True
    settings.OIDC_RP_CLIENT_ID, settings.OIDC_RP_CLIENT_SECRET = CLIENT_ID, CLIENT_SECRET
    settings.OIDC_PROVIDER_NAME = "Example Lab SSO"
    settings.AUTHENTICATION_BACKENDS = [*settings.AUTHENTICATION_BACKENDS, "transferapp.accounts.oidc.OIDCBackend"]
    oidc.forget_discovery()
    yield provider
    oidc.forget_discovery()


def _callback_from_provider(client, browser: requests.Session) -> str:
    """Presses "Sign in with ..." in our app, then acts as the browser at the provider (its login
    form when it has no session yet) until it sends the browser back to our callback: that URL."""
    start = client.get(reverse("oidc_authentication_init"))
    assert start.status_code == 302, start.content
    location = start["Location"]
    for _ in range(10):
        if location.startswith(CALLBACK):
            return location
        answer = browser.get(location, allow_redirects=False)
        if answer.status_code == 200 and "csrfmiddlewaretoken" in answer.text:  # the provider's login form
            form = {name: html.unescape(value) for name, value in
                    re.findall(r'name="(csrfmiddlewaretoken|next)" value="([^"]*)"', answer.text)}
            answer = browser.post(answer.url, data={**form, "username": "carol", "password": CAROL_PASSWORD},
                                  allow_redirects=False)
        assert answer.status_code == 302, answer.text[:500]
        location = requests.compat.urljoin(answer.url, answer.headers["Location"])
    raise AssertionError(f"the provider never sent the browser back to {CALLBACK}")


def _come_back(client, callback_url: str):
    parts = urlsplit(callback_url)
    return client.get(f"{parts.path}?{parts.query}")


def _signed_in_user(client):
    user_id = client.session.get("_auth_user_id")
    return get_user_model().objects.filter(pk=user_id).first() if user_id else None


@pytest.mark.django_db
def test_first_sign_in_creates_the_account_and_the_second_reuses_it(client, sso):
    login_page = client.get(reverse("login")).content.decode()
    assert "Sign in with Example Lab SSO" in login_page and "<script>" not in login_page
    browser = requests.Session()

    landed = _come_back(client, _callback_from_provider(client, browser))
    assert landed.status_code == 302 and landed["Location"] == reverse("project_list")
    carol = _signed_in_user(client)
    assert carol.username == "carol" and carol.email == "carol@example.org" and not carol.has_usable_password()
    assert OIDCIdentity.objects.get(user=carol).issuer == sso.issuer

    client.logout()  # local logout; the provider still knows the browser, so no password is asked again
    assert _signed_in_user(client) is None
    _come_back(client, _callback_from_provider(client, browser))
    assert _signed_in_user(client) == carol
    assert get_user_model().objects.filter(email="carol@example.org").count() == 1
    assert client.get(reverse("project_list")).status_code == 200
    get_user_model().objects.filter(pk=carol.pk).update(is_active=False)  # off-boarded here: the session ends
    assert client.get(reverse("project_list")).status_code == 302


@pytest.mark.django_db
def test_a_tampered_state_is_refused(client, sso):
    callback = _callback_from_provider(client, requests.Session())
    tampered = re.sub(r"state=[^&]+", "state=forged-by-someone-else", callback)
    refused = _come_back(client, tampered)
    assert refused.status_code == 400 and "could not be accepted" in refused.content.decode()
    assert _signed_in_user(client) is None and not get_user_model().objects.filter(username="carol").exists()
    # The genuine answer still works once, and a replay of it is refused (the state is used up).
    assert _come_back(client, callback).status_code == 302 and _signed_in_user(client).username == "carol"
    client.logout()
    replay = _come_back(client, callback)  # a fresh session: no sign-in of its own was started
    assert replay.status_code == 302 and replay["Location"] == reverse("login") and _signed_in_user(client) is None


@pytest.mark.django_db
def test_an_existing_account_with_the_same_email_is_not_taken_over(client, sso, settings, django_user_model):
    local = django_user_model.objects.create_user("carol", email="Carol@example.org", password="local-pw-123456")
    answer = _come_back(client, _callback_from_provider(client, requests.Session()))
    assert answer.status_code == 302 and answer["Location"] == reverse("login")
    assert _signed_in_user(client) is None and not OIDCIdentity.objects.exists()
    assert "already uses the e-mail address carol@example.org" in client.get(reverse("login")).content.decode()

    # An operator whose provider verifies addresses may allow the link (the provider says email_verified).
    settings.OIDC_LINK_VERIFIED_EMAIL = True
    _come_back(client, _callback_from_provider(client, requests.Session()))
    assert _signed_in_user(client) == local and OIDCIdentity.objects.get().user == local


@pytest.mark.django_db
def test_a_username_taken_by_another_account_gets_a_number(client, sso, django_user_model):
    django_user_model.objects.create_user("carol", email="someone-else@example.org")
    _come_back(client, _callback_from_provider(client, requests.Session()))
    assert _signed_in_user(client).username == "carol-2"


@pytest.mark.django_db
def test_a_provider_that_is_down_gives_a_sentence_not_a_500(client, settings):
    settings.OIDC_ISSUER, settings.OIDC_ENABLED = f"http://127.0.0.1:{_free_port()}/o", True
    settings.OIDC_RP_CLIENT_ID, settings.OIDC_RP_CLIENT_SECRET, settings.OIDC_TIMEOUT = "x", "y", 2
    oidc.forget_discovery()
    page = client.get(reverse("oidc_authentication_init"), follow=True)
    assert page.status_code == 200 and "is not available right now" in page.content.decode()
    oidc.forget_discovery()


def test_the_app_starts_with_single_sign_on_set_while_the_provider_is_down():
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE",)}
    env.update(LOCAL_MODE="1", OIDC_ISSUER=f"http://127.0.0.1:{_free_port()}/o", OIDC_CLIENT_ID="x",
               OIDC_CLIENT_SECRET="y", DJANGO_SETTINGS_MODULE="tests.settings")
    code = ("import django; django.setup(); import transferapp.urls, transferapp.accounts.oidc; "
            "from django.conf import settings; print(settings.OIDC_ENABLED)")
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0 and done.stdout.strip().endswith("True"), done.stderr[-800:]


@pytest.mark.django_db
def test_without_oidc_settings_the_sso_urls_are_404_and_the_button_is_hidden(client, settings):
    settings.OIDC_ENABLED = False
    assert client.get(reverse("oidc_authentication_init")).status_code == 404
    assert client.get(reverse("oidc_authentication_callback")).status_code == 404
    assert "Sign in with" not in client.get(reverse("login")).content.decode()


@pytest.mark.django_db
def test_signup_false_hides_sign_up_and_closes_its_page(client, settings):
    settings.ALLOW_SIGNUP = False
    assert reverse("signup") not in client.get(reverse("login")).content.decode()
    closed = client.get(reverse("signup"))
    assert closed.status_code == 403 and "Sign-up is closed" in closed.content.decode()
    settings.OIDC_ENABLED, settings.OIDC_PROVIDER_NAME = True, "Example Lab SSO"
    closed = client.get(reverse("signup")).content.decode()
    assert "Sign-up is turned off" in closed and "Sign in with Example Lab SSO" in closed


@pytest.mark.django_db
def test_linking_by_verified_email_never_reaches_a_staff_account(client, sso, settings, django_user_model):
    django_user_model.objects.create_user("carol", email="carol@example.org", is_staff=True)
    settings.OIDC_LINK_VERIFIED_EMAIL = True
    answer = _come_back(client, _callback_from_provider(client, requests.Session()))
    assert answer["Location"] == reverse("login") and _signed_in_user(client) is None
    assert not OIDCIdentity.objects.exists()


def _backend(rf):
    backend = oidc.OIDCBackend()
    backend.request = rf.get("/accounts/oidc/callback/")
    return backend


@pytest.mark.django_db
def test_an_unverified_email_is_neither_stored_nor_blocks_the_real_owner(rf, settings, django_user_model):
    settings.OIDC_ISSUER = "https://sso.example.org"
    claims = {"sub": "mallory-1", "preferred_username": "mallory", "email": "head@lab.org", "email_verified": False}
    mallory = _backend(rf)._first_sign_in(claims)
    assert mallory.email == ""
    _backend(rf).update_user(mallory, {**claims, "email_verified": "false"})
    assert django_user_model.objects.get(pk=mallory.pk).email == ""
    head = _backend(rf)._first_sign_in({"sub": "head-1", "preferred_username": "head", "email": "head@lab.org",
                                        "email_verified": True})
    assert head is not None and head.email == "head@lab.org"


def test_an_id_token_for_several_audiences_must_name_us_as_its_authorized_party(settings):
    settings.OIDC_ISSUER, settings.OIDC_RP_CLIENT_ID = "https://sso.example.org", CLIENT_ID
    token = {"iss": "https://sso.example.org", "aud": [CLIENT_ID, "other-app"]}
    for bad in (token, {**token, "azp": "other-app"}, {"iss": token["iss"], "aud": CLIENT_ID, "azp": "other-app"}):
        with pytest.raises(SuspiciousOperation, match="another client"):
            oidc.check_id_token_claims(bad)
    oidc.check_id_token_claims({**token, "azp": CLIENT_ID})
    oidc.check_id_token_claims({"iss": token["iss"], "aud": CLIENT_ID})
