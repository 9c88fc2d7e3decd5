"""Filters for the training report, whose page must carry its images inside it."""
from django import template

from transferapp.reporting import reports as reporting_reports

register = template.Library()


@register.filter
def data_uri(image) -> str:
    """An image row's thumbnail as a data: URI ("" when it has none)."""
    return reporting_reports.thumbnail_uri(image) if image is not None else ""
