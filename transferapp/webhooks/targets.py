"""Where a webhook may point: its secret, the URL check, and a connection pinned to the checked address.

A user must not make the server probe its own network (server-side request forgery), so a URL whose
host resolves to a private, loopback, link-local, multicast, reserved or unspecified address is
refused, unless the operator allows it (settings.WEBHOOK_ALLOW_PRIVATE, an intranet receiver). The
check runs when the webhook is saved and again before every delivery, and the delivery connects to
the very address it checked (a second DNS answer cannot swap in 127.0.0.1: DNS rebinding). No
redirect is ever followed: http.client follows none.
"""
import base64
import http.client
import ipaddress
import secrets
import socket
import unicodedata
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

SECRET_PREFIX = "whsec_"
_NOT_IN_A_URL = set("\"'`<>\\")  # never valid unencoded in a URL: a request line with them fails on every try


# One refusal for a host name that does not resolve and one that resolves to this server's own
# network, naming no address: two answers would let a user map the internal DNS through this form.
NOT_REACHABLE = ("This URL cannot receive webhooks: it must be a public http(s) address on the internet "
                 "that this server can reach.")


class UrlRefused(Exception):
    """A webhook URL that may not be used; the message is shown as is."""


def new_secret() -> str:
    """A Standard Webhooks signing secret: "whsec_" + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # with its query string
    address: str  # the checked IP address the delivery connects to

    def connection(self, timeout_s: float) -> http.client.HTTPConnection:
        """An HTTP(S) connection to `address`; the Host header, the TLS server name and the
        certificate check still use the URL's host name."""
        kind = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        conn = kind(self.host, self.port, timeout=timeout_s)
        address = self.address

        def create_connection(host_and_port, timeout=None, source_address=None):
            return socket.create_connection((address, host_and_port[1]), timeout, source_address)

        conn._create_connection = create_connection  # http.client's hook for opening the socket
        return conn


def check_url(url: str, *, allow_private: bool | None = None) -> Target:
    """The URL's target once its host resolved to addresses that may be reached; UrlRefused otherwise."""
    allow_private = settings.WEBHOOK_ALLOW_PRIVATE if allow_private is None else allow_private
    url = (url or "").strip()
    if not url:
        raise UrlRefused("Enter the URL that should receive the events.")
    if len(url) > 500:
        raise UrlRefused("The URL is too long (500 characters at most).")
    if any(char.isspace() or char in _NOT_IN_A_URL or unicodedata.category(char) == "Cc" for char in url):
        raise UrlRefused("The URL may not contain spaces, quotes, angle brackets or control characters; "
                         "write them percent-encoded (a space is %20).")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UrlRefused("This is not a valid URL.") from None
    if parts.scheme not in ("http", "https"):
        raise UrlRefused("The URL must start with https:// (or http://).")
    if not parts.hostname:
        raise UrlRefused("The URL has no host name.")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("The URL may not carry a user name or password; the signature proves who sent the event.")
    port = port or (443 if parts.scheme == "https" else 80)
    addresses = _resolve(parts.hostname, port)
    if not allow_private and any(_why_unreachable(address) for address in addresses):
        raise UrlRefused(NOT_REACHABLE)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(scheme=parts.scheme, host=parts.hostname, port=port, path=path, address=addresses[0])


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        raise UrlRefused(NOT_REACHABLE) from None
    addresses = list(dict.fromkeys(info[4][0].split("%")[0] for info in infos))  # no IPv6 zone
    if not addresses:
        raise UrlRefused(NOT_REACHABLE)
    return addresses


def _why_unreachable(address: str) -> str:
    """'' for a public address, else what it is ("a private", "a loopback", ...)."""
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None) or getattr(ip, "sixtofour", None)
    if mapped is not None:
        ip = mapped
    for flag, words in (("is_unspecified", "an unspecified"), ("is_loopback", "a loopback"),
                        ("is_link_local", "a link-local"), ("is_multicast", "a multicast"),
                        ("is_reserved", "a reserved"), ("is_private", "a private")):
        if getattr(ip, flag):
            return words
    return "" if ip.is_global else "a non-public"
