"""Rate limits counted in the shared cache (Redis), so every web process sees the same counts.

A limit is a fixed window: the first hit starts a counter that expires `window_s` later. That is
coarser than a sliding window but needs one cache key and two round trips, and a limit of N per
window can never let more than 2N through in any window-long stretch.

Every limit that is keyed on the client's address takes it from `client_address`, which trusts a
proxy header only when the administrator said there is such a proxy (TRUSTED_PROXY_HEADER).
"""
import math
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache


def client_address(request) -> str:
    """The address of the client, as the outermost proxy we trust saw it.

    Without TRUSTED_PROXY_HEADER, REMOTE_ADDR: a header sent by the client itself could be
    forged, so it is never read unless the administrator vouches for the proxy that sets it.
    With it (e.g. X-Forwarded-For and TRUSTED_PROXY_COUNT=1), each trusted proxy appends the
    address it saw, so the client is the entry TRUSTED_PROXY_COUNT places from the right:
    anything further left was written by the client and is ignored.
    """
    remote = request.META.get("REMOTE_ADDR", "")
    header = settings.TRUSTED_PROXY_HEADER
    if not header:
        return remote
    value = request.META.get("HTTP_" + header.upper().replace("-", "_"), "")
    hops = [hop.strip() for hop in value.split(",") if hop.strip()]
    if not hops:
        return remote  # the request did not come through the proxy
    return hops[-min(settings.TRUSTED_PROXY_COUNT, len(hops))]


@dataclass(frozen=True)
class Limit:
    """At most `limit` hits per `window_s` seconds for one key (limit 0 = no limit)."""

    scope: str
    limit: int
    window_s: int

    def _key(self, who: str) -> str:
        return f"throttle:{self.scope}:{who}"

    def exceeded(self, who: str) -> bool:
        return self.limit > 0 and cache.get(self._key(who), 0) >= self.limit

    def hit(self, who: str, amount: int = 1) -> int:
        """Count `amount` hits; returns the count in this window, these included."""
        key = self._key(who)
        cache.add(key, 0, timeout=self.window_s)
        try:
            return cache.incr(key, amount)
        except ValueError:  # the window expired between add and incr: start a new one
            cache.set(key, amount, timeout=self.window_s)
            return amount

    @property
    def wait_text(self) -> str:
        minutes = max(1, round(self.window_s / 60))
        return f"{minutes} minute{'' if minutes == 1 else 's'}"


def failed_logins_per_account() -> Limit:
    return Limit("login-fail", settings.LOGIN_ATTEMPTS_LIMIT, settings.LOGIN_ATTEMPTS_WINDOW_S)


def failed_logins_per_address() -> Limit:
    return Limit("login-fail-address", settings.LOGIN_ADDRESS_ATTEMPTS_LIMIT, settings.LOGIN_ATTEMPTS_WINDOW_S)


def signups_per_address() -> Limit:
    return Limit("signup", settings.SIGNUP_RATE_LIMIT, settings.SIGNUP_RATE_WINDOW_S)


def predictions_per_user() -> Limit:
    return Limit("predict", settings.PREDICT_RATE_PER_MIN, 60)


def signup_refusal(request) -> str:
    """Why this address may not create another account now ("" when it may)."""
    limit = signups_per_address()
    if limit.exceeded(client_address(request)):
        return f"Too many accounts were created from your address. Try again in {limit.wait_text}."
    return ""


def signup_counted(request) -> None:
    signups_per_address().hit(client_address(request))


def prediction_refusal(user, images: int) -> str:
    """Why this user may not have `images` more predictions now ("" when they may; then counted).

    Refused once the minute's allowance is used up; the request that crosses it still runs.
    Each image counts once here; its size is counted once decoded (extra_weight).
    """
    limit = predictions_per_user()
    if limit.exceeded(str(user.pk)):
        return (f"Too many predictions: {limit.limit} images a minute at most (an image over "
                f"{settings.PREDICT_UNIT_MEGAPIXELS:g} megapixels counts once per started {settings.PREDICT_UNIT_MEGAPIXELS:g}). "
                "Wait a minute, then try again.")
    limit.hit(str(user.pk), images)
    return ""


def image_weight(pixels: int) -> int:
    """How many predictions one image counts as: one per started PREDICT_UNIT_MEGAPIXELS, since
    decoding it costs time and memory by its size (a 40-megapixel image counts 4 by default)."""
    unit = settings.PREDICT_UNIT_MEGAPIXELS * 1_000_000
    return max(1, math.ceil(pixels / unit)) if unit > 0 else 1


def extra_weight(pixel_counts) -> int:
    """What images counted once each (before they were decoded) still owe for their size."""
    return sum(image_weight(pixels) - 1 for pixels in pixel_counts)


def predictions_counted(user, images: int) -> None:
    """Count predictions made after a prediction_refusal(user, 0) check (a batch's size is known late)."""
    predictions_per_user().hit(str(user.pk), images)
