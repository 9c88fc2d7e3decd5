"""Filters for the training report, whose page must carry its images inside it."""
from django import template

from transferapp import reports

register = template.Library()


@register.filter
def data_uri(image) -> str:
    """An image row's thumbnail as a data: URI ("" when it has none)."""
    return reports.thumbnail_uri(image) if image is not None else ""
