"""Where a webhook may point: private, loopback, link-local (and other non-public) addresses are
refused unless the operator allows them; the delivery connects to the address checked, follows no
redirect, and its secret is a Standard Webhooks one."""
import base64
import shutil
import socket
import ssl
import subprocess
import threading

import pytest
import standardwebhooks

from tests.factories import project_with_images
from tests.webhooks.receiver import Receiver
from transferapp.models import Webhook, WebhookDelivery
from transferapp.webhooks import delivery as webhook_delivery
from transferapp.webhooks import events, hooks, targets


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8000/hook",
    "http://localhost/hook",
    "http://[::1]/hook",
    "http://10.1.2.3/hook",
    "https://192.168.0.10/hook",
    "http://172.16.5.5/hook",
    "http://169.254.169.254/latest/meta-data/",  # the cloud's metadata service
    "http://[fe80::1]/hook",
    "http://0.0.0.0/hook",
    "http://224.0.0.1/hook",
    "http://[::ffff:127.0.0.1]/hook",  # an IPv4 address dressed as IPv6
    "http://100.64.0.1/hook",  # carrier-grade NAT
    "http://240.0.0.1/hook",
])
def test_urls_to_the_servers_own_network_are_refused(settings, url):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(targets.UrlRefused, match="cannot receive webhooks") as refused:
        targets.check_url(url)
    assert str(refused.value) == targets.NOT_REACHABLE  # the resolved address is never echoed


def test_an_unknown_host_and_an_internal_one_get_the_same_refusal(settings):
    """Two answers would let a user map the server's internal DNS through the form."""
    settings.WEBHOOK_ALLOW_PRIVATE = False
    answers = []
    for url in ("https://no-such-host.invalid/hook", "http://localhost/hook", "http://10.1.2.3/hook"):
        with pytest.raises(targets.UrlRefused) as refused:
            targets.check_url(url)
        answers.append(str(refused.value))
    assert len(set(answers)) == 1
    assert not any(word in answers[0] for word in ("127.0.0.1", "10.1.2.3", "localhost", "private", "loopback", "could not be found"))


def test_the_operator_may_allow_private_addresses(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    target = targets.check_url("http://127.0.0.1:8123/a/b?c=1")
    assert (target.scheme, target.host, target.port, target.path, target.address) == ("http", "127.0.0.1", 8123, "/a/b?c=1", "127.0.0.1")
    assert targets.check_url("http://10.0.0.7/x").address == "10.0.0.7"


def test_a_public_address_passes(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    target = targets.check_url("https://93.184.215.14/events")
    assert (target.port, target.address) == (443, "93.184.215.14")


@pytest.mark.parametrize("url, words", [
    ("ftp://93.184.215.14/x", "https://"),
    ("file:///etc/passwd", "https://"),
    ("gopher://93.184.215.14/", "https://"),
    ("https:///no-host", "no host"),
    ("https://user:pw@93.184.215.14/", "user name"),
    ("http://93.184.215.14:99999/", "not a valid"),
    ("", "Enter the URL"),
    ("https://93.184.215.14/a hook", "spaces"),
    ("https://93.184.215.14/hook\tx", "control characters"),
    ("https://93.184.215.14/hook\x7f", "control characters"),
    ("https://93.184.215.14/hook\nHost: evil", "control characters"),
    ('https://93.184.215.14/"hook"', "quotes"),
    ("https://93.184.215.14/hook'", "quotes"),
    ("https://93.184.215.14/<hook>", "angle brackets"),
    ("https://no-such-host.invalid/hook", "cannot receive webhooks"),
])
def test_malformed_or_unknown_urls_are_refused_with_a_reason(settings, url, words):
    settings.WEBHOOK_ALLOW_PRIVATE = True  # refused whatever the operator allows
    with pytest.raises(targets.UrlRefused, match=words):
        targets.check_url(url)


def test_a_secret_is_whsec_and_24_random_bytes():
    first, second = targets.new_secret(), targets.new_secret()
    assert first.startswith("whsec_") and first != second
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 24
    standardwebhooks.Webhook(first)  # the library accepts it


def test_the_connection_goes_to_the_checked_address_not_a_second_dns_answer():
    """DNS rebinding: the name is resolved once, checked, and that address is what the socket opens;
    the Host header still names the URL's host."""
    with Receiver() as receiver:
        port = receiver.server.server_address[1]
        target = targets.Target(scheme="http", host="rebinding.example", port=port, path="/x", address="127.0.0.1")
        conn = target.connection(5)
        conn.request("POST", target.path, body=b"{}")
        assert conn.getresponse().status == 200
        conn.close()
    assert receiver.received[0].headers["Host"] == f"rebinding.example:{port}"


@pytest.mark.django_db
def test_a_redirect_is_not_followed_and_counts_as_a_failed_try(user, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_MAX_ATTEMPTS = 5
    project = project_with_images(user, per_class=1)
    with Receiver() as elsewhere, Receiver(answers=(302,), redirect_to="") as receiver:
        receiver.redirect_to = elsewhere.url
        hook = hooks.webhook_create(project=project, url=receiver.url, events=["review.needed"])
        delivery = events.send_test(hook)
        assert webhook_delivery.deliver(delivery.pk, 0) == "pending"
    delivery.refresh_from_db()
    assert len(receiver.received) == 1 and elsewhere.received == []
    assert (delivery.attempts, delivery.last_status_code, delivery.status) == (1, 302, "pending")
    assert "answered 302" in delivery.last_error and delivery.next_attempt_at is not None


@pytest.mark.django_db
def test_a_second_job_for_the_same_try_sends_nothing(user, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    project = project_with_images(user, per_class=1)
    with Receiver() as receiver:
        hook = hooks.webhook_create(project=project, url=receiver.url, events=Webhook.EVENTS)
        delivery = events.send_test(hook)
        assert webhook_delivery.deliver(delivery.pk, 0) == "delivered"
        assert webhook_delivery.deliver(delivery.pk, 0) == "not pending"
    assert len(receiver.received) == 1
    assert WebhookDelivery.objects.get(pk=delivery.pk).attempts == 1


def test_the_backoff_grows_then_stays():
    waits = [webhook_delivery.backoff_s(tries) for tries in range(1, 9)]
    assert waits[:4] == [5, 30, 120, 600] and waits == sorted(waits) and waits[-1] == waits[-2]


def test_https_goes_to_the_checked_address_with_the_urls_name_and_checks_the_certificate(tmp_path):
    """TLS to the pinned address: the server name sent (SNI) is the URL's host, and a certificate
    that no authority signed is refused (no insecure fallback)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=hooks.example",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    names = []
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve_one():
        conn, _ = listener.accept()
        try:
            context.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError):
            pass  # the client hung up on the certificate

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    target = targets.Target(scheme="https", host="hooks.example", port=listener.getsockname()[1], path="/", address="127.0.0.1")
    conn = target.connection(5)
    with pytest.raises(ssl.SSLCertVerificationError):
        conn.request("POST", "/", body=b"{}")
    conn.close()
    thread.join(5)
    listener.close()
    assert names == ["hooks.example"]
