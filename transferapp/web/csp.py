"""A Content-Security-Policy header on every response (Django 5.2 has none built in).

Scripts come only from our own static files: the templates hold no inline <script> and no
on*="" handlers (tests/test_security.py checks), so an injected script tag or handler cannot run.
"""
from urllib.parse import urlsplit

from django.conf import settings


def policy(image_origin: str = "") -> str:
    """The policy; `image_origin` is the bucket's public address when images are served from it
    (S3_PUBLIC_URL: the app redirects each image, after its ownership check, to a presigned URL)."""
    return "; ".join(_DIRECTIVES).replace("img-src 'self'", f"img-src 'self' {image_origin}".rstrip())


_DIRECTIVES = [
    "default-src 'self'",
    "script-src 'self'",
    # Inline style attributes stay allowed: progress bars and confusion-matrix cells are drawn
    # with style="width/background: ..." from server data, app.js builds upload rows the same
    # way, and htmx 2 injects its indicator <style>. Styles cannot run code; scripts stay strict.
    "style-src 'self' 'unsafe-inline'",
    # data: for the favicon and prediction thumbnails, blob: for the uploader's local previews.
    "img-src 'self' data: blob:",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
]
POLICY = policy()


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        public = urlsplit(settings.S3_PUBLIC_URL) if settings.S3_PUBLIC_URL else None
        self.policy = policy(f"{public.scheme}://{public.netloc}" if public else "")

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", self.policy)
        return response
