"""Reads of batch predictions, access-checked."""

from transferapp.accounts.selectors import checked_get
from transferapp.models import BatchPrediction


def batch_get_for_user(*, user, pk, need: str) -> BatchPrediction:
    return checked_get(BatchPrediction.objects.select_related("project"), user=user, need=need, pk=pk)
