"""The outside review's security findings (issue 13): throttles, sign-up, proxies, headers,
upload caps and prediction limits. Quotas are in test_quotas.py."""
import importlib
import os
import subprocess
import sys

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.urls import clear_url_caches, reverse

from tests.conftest import image_bytes
from transferapp.accounts.throttle import client_address

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


def test_a_look_alike_username_counts_against_the_same_account(client, user, settings):
    """Django signs `ａlice` (fullwidth a) in as `alice` (NFKC): the limit must count them as one."""
    settings.LOGIN_ATTEMPTS_LIMIT = 2
    client.post(reverse("login"), {"username": "alice", "password": "wrong"})
    client.post("/admin/login/", {"username": "ALICE ", "password": "wrong"})
    look_alike = client.post(reverse("login"), {"username": "\uff41lice", "password": "a-long-password-1"})
    assert look_alike.status_code == 429 and "_auth_user_id" not in client.session


def test_a_look_alike_username_still_signs_its_owner_in(client, user):
    response = client.post(reverse("login"), {"username": "\uff41lice", "password": "a-long-password-1"})
    assert response.status_code == 302 and client.session["_auth_user_id"] == str(user.pk)


def test_the_admin_can_be_switched_off(client, staff, admin_disabled):
    client.force_login(staff)
    assert client.get("/admin/").status_code == 404
    assert client.get("/admin/login/").status_code == 404


# 3. Sign-up: closed by default in production, throttled per address.

def _settings_value(name, **env):
    """A setting as a fresh process computes it from this environment (settings read env once)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("LOCAL_MODE", "ALLOW_SIGNUP", "SIGNUP", "DEBUG", "DJANGO_SETTINGS_MODULE")}
    clean.update(SECRET_KEY="x" * 50, ALLOWED_HOSTS="example.org", **env)
    code = f"import transferapp.settings as s; print(s.{name})"
    return subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True, check=True).stdout.strip()


def test_sign_up_is_closed_by_default_in_production_and_open_in_local_mode():
    assert _settings_value("ALLOW_SIGNUP") == "False"
    assert _settings_value("ALLOW_SIGNUP", LOCAL_MODE="1") == "True"
    assert _settings_value("ALLOW_SIGNUP", ALLOW_SIGNUP="true") == "True"
    assert _settings_value("ALLOW_SIGNUP", LOCAL_MODE="1", SIGNUP="false") == "False"  # issue #26's name
    assert _settings_value("ALLOW_SIGNUP", SIGNUP="true", ALLOW_SIGNUP="false") == "True"


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


# 2. Upload caps: per request (all files together), and per file on the image endpoints.

from django.core.files.uploadhandler import FileUploadHandler  # noqa: E402

from tests.factories import upload  # noqa: E402
from transferapp.accounts import api_keys
from transferapp.library import projects as library_projects
from transferapp.models import Image, ImportJob  # noqa: E402

SPOOLED = {}  # file name -> bytes that reached the handlers after the cap


class RecordingHandler(FileUploadHandler):
    """Sits after the cap and records how many bytes of each file went on to be spooled."""

    def new_file(self, field_name, file_name, *args, **kwargs):
        super().new_file(field_name, file_name, *args, **kwargs)
        SPOOLED[file_name] = 0

    def receive_data_chunk(self, raw_data, start):
        SPOOLED[self.file_name] += len(raw_data)
        return raw_data

    def file_complete(self, file_size):
        return None


@pytest.fixture
def recorded_uploads(settings):
    SPOOLED.clear()
    handlers = list(settings.FILE_UPLOAD_HANDLERS)
    settings.FILE_UPLOAD_HANDLERS = handlers[:1] + [f"{__name__}.RecordingHandler"] + handlers[1:]
    return SPOOLED


@pytest.fixture
def red_label(user):
    project = library_projects.project_create(owner=user, name="P")
    return library_projects.label_create(project=project, name="red")


def _upload_url(label):
    return reverse("label_upload", args=[label.project_id, label.pk])


def test_the_request_cap_counts_every_file_of_a_request(alice, red_label, settings):
    settings.MAX_IMPORT_MB = 1
    files = [upload(f"part-{i}.png", b"\x89PNG" + b"0" * 800_000) for i in range(3)]
    response = alice.post(_upload_url(red_label), {"files": files}, HTTP_X_REQUESTED_WITH="XMLHttpRequest")
    assert response.status_code == 413
    assert "1 MB" in response.json()["error"] and "too large" in response.json()["error"]
    assert not Image.objects.exists()


def test_a_request_declared_too_large_is_refused_before_its_body_is_read(alice, red_label, settings, recorded_uploads):
    settings.MAX_IMPORT_MB = 1
    files = [upload("a.png", image_bytes())]
    response = alice.post(_upload_url(red_label), {"files": files}, CONTENT_LENGTH=str(5 * 1024**3), HTTP_X_REQUESTED_WITH="XMLHttpRequest")
    assert response.status_code == 413 and "1 MB" in response.json()["error"]
    assert recorded_uploads == {} and not Image.objects.exists()


def test_a_form_post_over_the_cap_comes_back_with_a_message(alice, red_label, settings):
    settings.MAX_IMPORT_MB = 1
    files = [upload(f"part-{i}.png", b"\x89PNG" + b"0" * 800_000) for i in range(2)]
    page = alice.post(_upload_url(red_label), {"files": files}, HTTP_REFERER=red_label.get_absolute_url(), follow=True)
    assert page.redirect_chain[-1][0] == red_label.get_absolute_url()
    assert "too large" in page.content.decode() and not Image.objects.exists()


def test_an_image_endpoint_stops_spooling_a_file_past_the_image_cap(alice, red_label, settings, recorded_uploads):
    settings.MAX_UPLOAD_MB = 1
    files = [upload("huge.png", b"\x89PNG" + b"0" * 3_000_000), upload("ok.png", image_bytes())]
    response = alice.post(_upload_url(red_label), {"files": files}, follow=True)
    assert recorded_uploads["huge.png"] <= 1024 * 1024 + 64 * 1024  # the cap plus one chunk at most
    page = response.content.decode()
    assert "huge.png" in page and "the limit is 1 MB" in page
    assert list(red_label.images.values_list("original_name", flat=True)) == ["ok.png"]


def test_the_predict_endpoint_also_stops_a_file_past_the_image_cap(alice, red_label, settings, recorded_uploads):
    settings.MAX_UPLOAD_MB = 1
    project = red_label.project
    project.runs.create(base_model="efficientnet_lite0", status="succeeded")  # the view reads files only with a model
    alice.post(reverse("predict", args=[project.pk]), {"files": [upload("huge.png", b"\x89PNG" + b"0" * 3_000_000)]})
    assert recorded_uploads["huge.png"] <= 1024 * 1024 + 64 * 1024


def test_the_zip_import_may_take_a_file_larger_than_the_image_cap(alice, red_label, settings):
    import io
    import zipfile

    settings.MAX_UPLOAD_MB, settings.MAX_IMPORT_MB = 1, 10
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("red/noise.bin", os.urandom(2_000_000))
    archive_file = upload("photos.zip", buffer.getvalue(), "application/zip")
    response = alice.post(reverse("import_create", args=[red_label.project_id]), {"archive": archive_file})
    assert response.status_code == 302
    assert ImportJob.objects.filter(project=red_label.project, source_name="photos.zip").exists()


# Issue 30, item 9: a body is read (and perhaps spooled to disk) only for a signed-in active user
# or a request with a valid API key; anyone else may send ANONYMOUS_MAX_BODY_KB.

SIX_MB_FILE = b"\x89PNG" + b"0" * 6_000_000  # past FILE_UPLOAD_MAX_MEMORY_SIZE: it would go to a temp file


def test_an_anonymous_upload_is_refused_before_its_body_is_spooled(client, red_label, settings, recorded_uploads, tmp_path):
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    response = client.post(_upload_url(red_label), {"files": [upload("big.png", SIX_MB_FILE)]}, HTTP_X_REQUESTED_WITH="XMLHttpRequest")
    assert response.status_code == 413 and "Sign in" in response.json()["error"]
    assert recorded_uploads == {} and list(tmp_path.iterdir()) == [] and not Image.objects.exists()


def test_a_deactivated_users_session_counts_as_anonymous(alice, user, red_label, recorded_uploads):
    user.is_active = False
    user.save()
    response = alice.post(_upload_url(red_label), {"files": [upload("big.png", SIX_MB_FILE)]}, HTTP_X_REQUESTED_WITH="XMLHttpRequest")
    assert response.status_code == 413 and recorded_uploads == {}


def test_an_api_upload_with_an_unknown_key_is_refused_unread(client, red_label, recorded_uploads):
    url = f"/api/v1/projects/{red_label.project_id}/classes/red/images"
    response = client.post(url, {"files": [upload("big.png", SIX_MB_FILE)]}, HTTP_AUTHORIZATION="Bearer ta_not-a-real-key")
    assert response.status_code == 401 and "API key" in response.json()["error"]
    assert recorded_uploads == {}


def test_a_valid_key_or_a_session_may_send_more_than_the_anonymous_cap(client, alice, red_label, settings):
    settings.ANONYMOUS_MAX_BODY_KB = 1
    _, key = api_keys.api_key_create(project=red_label.project)
    url = f"/api/v1/projects/{red_label.project_id}/classes/red/images"
    response = client.post(url, {"files": [upload("a.png", image_bytes("red", size=(64, 64)))]}, HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 200 and response.json()["added"] == 1
    page = alice.post(_upload_url(red_label), {"files": [upload("b.png", image_bytes("blue", size=(64, 64)))]}, follow=True)
    assert page.status_code == 200 and red_label.images.count() == 2


def test_the_sign_in_form_still_works_under_the_anonymous_cap(client, user, settings):
    settings.ANONYMOUS_MAX_BODY_KB = 1  # a login form, even sent as multipart, is a few hundred bytes
    response = client.post(reverse("login"), {"username": "alice", "password": "a-long-password-1"})
    assert response.status_code == 302 and client.session["_auth_user_id"] == str(user.pk)


@pytest.mark.django_db(transaction=True)
def test_a_live_server_answers_an_anonymous_upload_without_reading_its_body(live_server, settings, tmp_path):
    """A real socket: 600 MB declared, 64 KB sent. A server that reads the body before answering
    would wait for the rest (here: until the timeout)."""
    import socket
    from urllib.parse import urlsplit

    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    address = urlsplit(live_server.url)
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall((f"POST {reverse('label_upload', args=[1, 1])} HTTP/1.1\r\nHost: {address.hostname}\r\n"
                      f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                      f"Content-Length: {600 * 1024 * 1024}\r\nX-Requested-With: XMLHttpRequest\r\n\r\n").encode())
        sock.sendall(head + b"0" * 64 * 1024)
        status_line = sock.makefile("rb").readline()
    assert status_line.split()[1] == b"413"
    assert list(tmp_path.iterdir()) == []


def test_the_upload_temp_folder_is_read_from_the_environment(tmp_path):
    assert _settings_value("FILE_UPLOAD_TEMP_DIR") == "None"  # the system's temp folder (TMPDIR)
    assert _settings_value("FILE_UPLOAD_TEMP_DIR", FILE_UPLOAD_TEMP_DIR=str(tmp_path / "spool")) == str(tmp_path / "spool")
    assert (tmp_path / "spool").is_dir()
    assert _settings_value("ANONYMOUS_MAX_BODY_KB") == "1024"


# 7. Predictions in the web process: a per-user rate, and torch on one thread there.

def test_predictions_are_limited_per_user_per_minute(alice, red_label, settings):
    settings.PREDICT_RATE_PER_MIN = 2
    project = red_label.project
    project.runs.create(base_model="efficientnet_lite0", status="succeeded")
    url = reverse("predict", args=[project.pk])
    for seed in range(2):
        files = [upload(f"{seed}.png", image_bytes(shape_seed=seed))]
        assert alice.post(url, {"files": files}, HTTP_X_REQUESTED_WITH="XMLHttpRequest").status_code == 200
    refused = alice.post(url, {"files": [upload("2.png", image_bytes(shape_seed=2))]}, HTTP_X_REQUESTED_WITH="XMLHttpRequest")
    assert refused.status_code == 429 and "Too many predictions" in refused.json()["error"]


def test_one_users_predictions_do_not_use_up_anothers(client, user, other_user, settings):
    from tests.factories import project_with_images

    settings.PREDICT_RATE_PER_MIN = 1
    for owner in (user, other_user):
        project = project_with_images(owner, per_class=1, name=f"P {owner.username}")
        project.runs.create(base_model="efficientnet_lite0", status="succeeded")
        client.force_login(owner)
        response = client.post(reverse("predict", args=[project.pk]), {"files": [upload("a.png", image_bytes())]}, HTTP_X_REQUESTED_WITH="XMLHttpRequest")
        assert response.status_code == 200, owner


def _torch_threads_after(code, **env):
    clean = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE",)}
    clean.update(LOCAL_MODE="1", DATA_DIR=os.environ.get("DATA_DIR", "/tmp"), **env)
    script = f"import torch; before = torch.get_num_threads(); {code}; print(before, torch.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", script], env=clean, capture_output=True, text=True, check=True).stdout
    return [int(n) for n in out.split()]


def test_the_web_process_runs_torch_on_web_torch_threads():
    _, after = _torch_threads_after("import transferapp.wsgi", WEB_TORCH_THREADS="1", TORCH_THREADS="3")
    assert after == 1


def test_a_worker_process_keeps_its_own_torch_threads():
    code = "import django; django.setup(); from transferapp.jobs import tasks; tasks._configure_threads()"
    before, after = _torch_threads_after(code, DJANGO_SETTINGS_MODULE="transferapp.settings", WEB_TORCH_THREADS="1", TORCH_THREADS="3")
    assert after == 3


def test_the_handler_stops_a_body_longer_than_it_declared_at_the_request_cap(settings, rf):
    """Content-Length normally bounds the body (refused unread above); this is the backstop."""
    from django.core.files.uploadhandler import StopUpload

    from transferapp.web.uploads import SizeCapUploadHandler

    settings.MAX_IMPORT_MB, settings.MAX_UPLOAD_MB = 1, 1
    request = rf.post("/")
    request.user = get_user_model().objects.create_user("bob", password="a-long-password-3")  # signed in
    handler = SizeCapUploadHandler(request)
    chunk = b"0" * 300_000
    for name in ("a.png", "b.png", "c.png"):  # each under the file cap; with d.png, over the request cap
        handler.new_file("files", name, "image/png", None)
        assert handler.receive_data_chunk(chunk, 0) == chunk
    handler.new_file("files", "d.png", "image/png", None)
    with pytest.raises(StopUpload):
        handler.receive_data_chunk(chunk, 0)
    assert "1 MB" in request.upload_refused


def test_a_batch_over_the_prediction_allowance_is_refused_before_any_image_is_predicted(alice, red_label, settings, monkeypatch):
    from transferapp.accounts import throttle
    from transferapp.serving import batch

    settings.PREDICT_RATE_PER_MIN = 2
    project = red_label.project
    project.runs.create(base_model="efficientnet_lite0", status="succeeded", version=1)
    throttle.predictions_counted(red_label.project.owner, 2)  # the minute's allowance is used up
    predicted = []
    monkeypatch.setattr(batch, "predict_rows", lambda run, images: predicted.append(run) or [])
    response = alice.post(reverse("predict_batch", args=[project.pk]), {"files": [upload("a.png", image_bytes())]}, follow=True)
    assert "Too many predictions" in response.content.decode() and not predicted
