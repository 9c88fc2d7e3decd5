"""Reads of batch predictions, access-checked."""

from django.shortcuts import get_object_or_404

from transferapp.models import BatchPrediction


def batch_get_for_user(*, user, pk) -> BatchPrediction:
    return get_object_or_404(BatchPrediction.objects.select_related("project"), pk=pk, project__owner=user)
