"""How a write refuses (ServiceError, shown to the user as is) or fails to queue its job."""

import logging

from django.db import transaction
from redis.exceptions import RedisError

from transferapp.storage import blobs

logger = logging.getLogger(__name__)

QUEUE_DOWN = "The job queue (Redis) could not be reached, so this was not started. Try again in a moment; if it persists, ask your administrator to check Redis."


class ServiceError(Exception):
    """A user-facing refusal: the message is shown as is."""


def refuse_if(reason: str) -> None:
    if reason:
        raise ServiceError(reason)


def not_stored(exc: Exception) -> str:
    where = "its object store (S3_BUCKET)" if blobs.s3_mode() else "its disk"
    return (f"The server could not store the files ({getattr(exc, 'strerror', None) or exc}). Try again later, or "
            f"ask your administrator to check {where}.")


def on_commit_or_fail(enqueue, *, on_failure) -> None:
    """Enqueue once the rows exist for the worker; if Redis is unreachable, say so on the row
    instead of leaving it "queued" with no job behind it."""

    def attempt():
        try:
            enqueue()
        except RedisError:
            logger.exception("Could not enqueue a job")
            on_failure()

    transaction.on_commit(attempt)


def clean_name(name: str, what: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ServiceError(f"{what} cannot be empty.")
    if len(name) > 80:
        raise ServiceError(f"{what} is too long (80 characters at most).")
    return name
