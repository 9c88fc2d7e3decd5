"""Files from the bucket: a presigned redirect or streamed."""

from pathlib import Path

from django.http import FileResponse, Http404
from django.shortcuts import redirect

from transferapp.storage import blobs

CSV_TYPE = "text/csv; charset=utf-8"


def bucket_file(key: str, filename: str = "", content_type: str | None = None):
    """A file of the bucket for a user already checked to own it: a short-lived presigned redirect
    (S3_PUBLIC_URL set), or streamed through in chunks, never whole in memory."""
    url = blobs.presigned_url(key, filename, content_type)
    if url:
        response = redirect(url)
        response["Cache-Control"] = "private, no-store"  # the URL expires; the next view signs a new one
        return response
    try:
        body, size = blobs.open_stream(key)
    except FileNotFoundError:
        raise Http404("File missing") from None
    response = FileResponse(body, as_attachment=bool(filename), filename=filename or Path(key).name, content_type=content_type)
    response["Content-Length"] = str(size)
    response["Cache-Control"] = "private, max-age=3600"
    return response
