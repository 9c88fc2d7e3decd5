"""Single sign-on with OpenID Connect (#26), on top of mozilla-django-oidc.

The library does the protocol (state, nonce, PKCE, the code exchange, the ID token's RS256
signature against the provider's JWKS). This module adds what it leaves to us:

- the provider's endpoints come from its discovery document, fetched at the first sign-in (never
  at start-up: the app must start while the provider is down) and kept OIDC_DISCOVERY_TTL_S;
- a provider that cannot be reached gives the user a sentence (request.oidc_failure), not a 500;
- the ID token must name our issuer and our client (the library checks neither `iss` nor `aud`);
- accounts are found by (issuer, sub), created on the first sign-in, and never linked to an
  existing account by e-mail unless the operator allows it for verified addresses (and never to a
  staff or superuser account); an e-mail address is stored only when the provider verified it.
"""
import logging
import re
import threading
import time

import jwt
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import SuspiciousOperation
from django.db import IntegrityError, transaction
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from transferapp.models import OIDCIdentity

log = logging.getLogger(__name__)

REQUIRED_ENDPOINTS = ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri")


class ProviderUnavailable(Exception):
    """The provider could not be reached or answered nonsense; str() is a sentence for the user."""


_discovery = {"document": None, "fetched_at": 0.0}
_discovery_lock = threading.Lock()


def provider_name() -> str:
    return settings.OIDC_PROVIDER_NAME


def unavailable_message() -> str:
    return (f"Sign-in with {provider_name()} is not available right now: the sign-in service could not be "
            "reached. Try again in a few minutes, or ask your administrator.")


def forget_discovery() -> None:
    """Drop the kept document (tests; a provider that moved its endpoints)."""
    with _discovery_lock:
        _discovery.update(document=None, fetched_at=0.0)


def discovery() -> dict:
    """The provider's discovery document, fetched on first use and kept for OIDC_DISCOVERY_TTL_S.
    A failed fetch is not kept, so the next sign-in tries again."""
    with _discovery_lock:
        fresh = time.monotonic() - _discovery["fetched_at"] < settings.OIDC_DISCOVERY_TTL_S
        if _discovery["document"] is None or not fresh:
            _discovery.update(document=_fetch_discovery(), fetched_at=time.monotonic())
        return _discovery["document"]


def _fetch_discovery() -> dict:
    url = f"{settings.OIDC_ISSUER}/.well-known/openid-configuration"
    try:
        response = requests.get(url, timeout=settings.OIDC_TIMEOUT)
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as error:
        log.warning("OpenID Connect discovery at %s failed: %s", url, error)
        raise ProviderUnavailable(unavailable_message()) from error
    # The spec (Discovery 1.0, 4.3) requires the document's issuer to be the one we asked: a
    # mismatch means a misconfigured OIDC_ISSUER or a document that is not the provider's.
    missing = [key for key in REQUIRED_ENDPOINTS if not document.get(key)]
    if str(document.get("issuer", "")).rstrip("/") != settings.OIDC_ISSUER or missing:
        log.error("OpenID Connect discovery at %s: issuer %r, missing %s", url, document.get("issuer"), missing)
        raise ProviderUnavailable(f"Sign-in with {provider_name()} is misconfigured on this server "
                                  "(the provider's discovery document does not match OIDC_ISSUER). "
                                  "Ask your administrator.")
    return document


def endpoint(key: str) -> str:
    return discovery()[key]


class OIDCBackend(OIDCAuthenticationBackend):
    """The library's backend, with the endpoints from discovery (read when used, not at __init__:
    Django builds a backend for every request of a signed-in user)."""

    OIDC_RP_SIGN_ALGO = "RS256"
    OIDC_RP_IDP_SIGN_KEY = None  # the key comes from the provider's JWKS

    def __init__(self, *args, **kwargs):
        self.UserModel = get_user_model()

    OIDC_OP_TOKEN_ENDPOINT = property(lambda self: endpoint("token_endpoint"))
    OIDC_OP_USER_ENDPOINT = property(lambda self: endpoint("userinfo_endpoint"))
    OIDC_OP_JWKS_ENDPOINT = property(lambda self: endpoint("jwks_uri"))
    OIDC_RP_CLIENT_ID = property(lambda self: settings.OIDC_RP_CLIENT_ID)
    OIDC_RP_CLIENT_SECRET = property(lambda self: settings.OIDC_RP_CLIENT_SECRET)

    # The library's get_user skips Django's is_active check: a deactivated user's session must end.
    get_user = ModelBackend.get_user

    def authenticate(self, request, **kwargs):
        # Only the callback view passes a nonce: a password form sent to a URL with ?code= is not a sign-in here.
        if request is None or not settings.OIDC_ENABLED or "nonce" not in kwargs:
            return None
        try:
            return super().authenticate(request, **kwargs)
        except ProviderUnavailable as error:
            request.oidc_failure = str(error)
        except requests.RequestException as error:  # the token, JWKS or userinfo request
            log.warning("OpenID Connect sign-in failed talking to the provider: %s", error)
            request.oidc_failure = unavailable_message()
        except jwt.InvalidTokenError as error:  # expired or not yet valid; a bad signature raises SuspiciousOperation
            log.warning("OpenID Connect sign-in refused an ID token: %s", error)
            request.oidc_failure = f"Sign-in with {provider_name()} failed: its answer had expired. Try again."
        return None

    def verify_token(self, token, **kwargs):
        payload = super().verify_token(token, **kwargs)
        if "nonce" in kwargs:  # the ID token (a signed userinfo answer comes without)
            check_id_token_claims(payload)
        return payload

    def get_or_create_user(self, access_token, id_token, payload):
        claims = self.get_userinfo(access_token, id_token, payload)
        # OpenID Connect Core 5.3.2: userinfo's sub must be the ID token's, or the answer is not this user's.
        if not payload.get("sub") or claims.get("sub") != payload.get("sub"):
            raise SuspiciousOperation("The provider's userinfo answer is for another subject.")
        claims = {**payload, **claims}
        identity = OIDCIdentity.objects.select_related("user").filter(
            issuer=settings.OIDC_ISSUER, subject=payload["sub"]).first()
        if identity:
            return self.update_user(identity.user, claims)
        return self._first_sign_in(claims)

    def update_user(self, user, claims):
        email = verified_email(claims)
        if email and email != user.email and not self._email_taken(email, exclude=user):
            user.email = email
            user.save(update_fields=["email"])
        return user

    def _first_sign_in(self, claims):
        email = verified_email(claims)
        same_email = list(self.UserModel.objects.filter(email__iexact=email)) if email else []
        if same_email:
            # Never onto an administrator's account: whoever controls an address at the provider
            # would otherwise become staff here.
            if (settings.OIDC_LINK_VERIFIED_EMAIL and len(same_email) == 1
                    and not (same_email[0].is_staff or same_email[0].is_superuser)):
                return self._link(same_email[0], claims)
            self.request.oidc_failure = (
                f"An account on this server already uses the e-mail address {email}. It was not linked to "
                f"{provider_name()} automatically: ask your administrator, or sign in with your password.")
            return None
        return self._create(claims)

    def _create(self, claims):
        try:
            with transaction.atomic():
                user = self.UserModel.objects.create_user(unique_username(claims), email=verified_email(claims))
                return self._link(user, claims)
        except IntegrityError:  # a sign-in at the same moment took the subject or the name
            identity = OIDCIdentity.objects.filter(issuer=settings.OIDC_ISSUER, subject=claims["sub"]).first()
            if identity:  # the same person's other tab: use its account
                return identity.user
            self.request.oidc_failure = f"Sign-in with {provider_name()} did not complete. Try again."
            return None

    def _link(self, user, claims):
        OIDCIdentity.objects.create(user=user, issuer=settings.OIDC_ISSUER, subject=claims["sub"])
        log.info("OpenID Connect subject %s signed in as %s for the first time", claims["sub"], user.username)
        return user

    def _email_taken(self, email, exclude):
        return self.UserModel.objects.filter(email__iexact=email).exclude(pk=exclude.pk).exists()


def check_id_token_claims(payload: dict) -> None:
    """The ID token must name our issuer and our client; with several audiences (or any `azp`),
    the authorized party must be us (OpenID Connect Core 3.1.3.7), not another client of the provider."""
    audience = payload.get("aud")
    audiences = [audience] if isinstance(audience, str) else list(audience or [])
    issuer = str(payload.get("iss", "")).rstrip("/")
    client = settings.OIDC_RP_CLIENT_ID
    if issuer != settings.OIDC_ISSUER or client not in audiences:
        raise SuspiciousOperation("The ID token was issued by another provider or for another client.")
    if (len(audiences) > 1 or "azp" in payload) and payload.get("azp") != client:
        raise SuspiciousOperation("The ID token was issued to another client (its azp is not ours).")


def verified_email(claims: dict) -> str:
    """The e-mail address, only when the provider says it verified it; else "". An unverified
    address is anyone's to type: stored, it would receive what an owner shares by e-mail, and
    would block the real owner's first sign-in."""
    verified = claims.get("email_verified")
    if verified is True or str(verified).lower() == "true":  # some providers send the string
        return claims.get("email") or ""
    return ""


def unique_username(claims) -> str:
    """preferred_username, else the e-mail's local part, else "user", kept to the characters Django
    allows in a username and made unique with a number (carol, carol-2, ...)."""
    raw = claims.get("preferred_username") or (claims.get("email") or "").split("@")[0] or "user"
    base = re.sub(r"[^\w.@+-]", "", raw)[:140] or "user"
    User = get_user_model()
    candidate, number = base, 1
    while User.objects.filter(username__iexact=candidate).exists():
        number += 1
        candidate = f"{base}-{number}"
    return candidate
