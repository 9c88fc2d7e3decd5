"""Personal API tokens (#26): a user's own token, beside the per-project keys. It acts as its user,
with that user's role in each project. Shown once, stored as a SHA-256 like the keys."""
import secrets

from django.utils import timezone

from transferapp.audit import trail
from transferapp.models import PersonalToken

TOKEN_PREFIX = "ta_pt_"  # told apart from a project key ("ta_") by its first characters


def token_create(*, user, name: str = "") -> tuple[PersonalToken, str]:
    """A new token for `user`: (row, the token itself). The token is shown once and never stored."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = PersonalToken.objects.create(user=user, name=(name or "").strip()[:80],
                                       prefix=secret[:PersonalToken.PREFIX_LENGTH], key_hash=_hash(secret))
    trail.record(action="token.created", detail={"token": row.prefix, "name": row.name, "user": user.get_username()})
    return row, secret


def token_revoke(*, token: PersonalToken) -> PersonalToken:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        trail.record(action="token.revoked", detail={"token": token.prefix, "name": token.name,
                                                     "user": token.user.get_username()})
    return token


def is_token(secret: str) -> bool:
    return secret.startswith(TOKEN_PREFIX)


def token_for_secret(*, secret: str) -> PersonalToken | None:
    """The active token with this secret whose user is active, or None."""
    row = (PersonalToken.objects.select_related("user")
           .filter(prefix=secret[:PersonalToken.PREFIX_LENGTH], key_hash=_hash(secret), user__is_active=True).first())
    return row if row is not None and row.is_active else None


def _hash(secret: str) -> str:
    return PersonalToken.hash_of(secret)
