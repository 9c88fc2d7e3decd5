"""Caps on request bodies, enforced while they are read rather than after they are on disk.

- One request's files together: MAX_IMPORT_MB (the README's "one request body"). A request that
  declares a larger Content-Length is refused before any of its body is read.
- One file: MAX_UPLOAD_MB, except on views marked @accepts_archives (the zip import), whose one
  file may be as large as the request. A file past its cap is skipped (read and dropped, never
  spooled to disk) and reported by name; the other files of the request are kept.

Those caps are for a signed-in active user or a request with a valid API key. Anyone else (no
session, a deactivated account's session, an unknown or revoked key) may send ANONYMOUS_MAX_BODY_KB
in all, enough for the sign-in and sign-up forms: a larger body is refused unread, so nobody can
make the server spool gigabytes to its temp folder (FILE_UPLOAD_TEMP_DIR) before the login, CSRF
or key check turns them away. Under that cap every file stays in memory.

A refused request is answered by RequestRefusalMiddleware before the view (and before the CSRF
check, which would otherwise fail for want of the form's token): JSON {"error": ...} with 413 for
the uploader script, or the message on the page the form came from.
"""
from django.conf import settings
from django.contrib import messages
from django.core.files.uploadhandler import FileUploadHandler, SkipFile, StopUpload
from django.http import JsonResponse, QueryDict
from django.shortcuts import redirect
from django.utils.datastructures import MultiValueDict
from django.utils.http import url_has_allowed_host_and_scheme

MB = 1024 * 1024


def accepts_archives(view):
    """Mark a view whose single uploaded file may be as large as MAX_IMPORT_MB."""
    view.accepts_archives = True
    return view


def refused_files(request) -> list[tuple[str, str]]:
    """(file name, reason) for each file dropped while the request was read."""
    return getattr(request, "refused_files", [])


def _request_too_large() -> str:
    return f"The upload is too large: one request may carry {settings.MAX_IMPORT_MB} MB at most. Send fewer files at a time."


def _not_signed_in() -> str:
    return (f"Sign in first (or send a valid API key): a request from someone not signed in may carry "
            f"{settings.ANONYMOUS_MAX_BODY_KB} KB at most.")


def _has_valid_api_key(request) -> bool:
    """An `Authorization: Bearer <key>` header naming an active key of an active owner (one indexed
    lookup: checked before the body is read, so an invented key cannot make the server spool it)."""
    from transferapp.accounts import selectors as accounts_selectors  # here: it imports the models, which need the app loaded

    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip()) and accounts_selectors.api_key_for_secret(key=token.strip()) is not None


def may_send_large_bodies(request) -> bool:
    """A signed-in active user (AuthenticationMiddleware logs out a deactivated one) or a valid key.

    A request parsed before the auth middleware ran has no `user`: it counts as anonymous."""
    user = getattr(request, "user", None)
    return (user is not None and user.is_authenticated) or _has_valid_api_key(request)


class SizeCapUploadHandler(FileUploadHandler):
    def __init__(self, request=None):
        super().__init__(request)
        self.request_bytes = 0
        self.file_cap = settings.MAX_UPLOAD_MB * MB
        self.request_cap = settings.MAX_IMPORT_MB * MB
        self.too_large = _request_too_large
        match = getattr(request, "resolver_match", None)
        if match is not None and getattr(match.func, "accepts_archives", False):
            self.file_cap = self.request_cap
        if not may_send_large_bodies(request):
            self.request_cap, self.too_large = settings.ANONYMOUS_MAX_BODY_KB * 1024, _not_signed_in
            request.upload_refused_status = 401 if request.path.startswith("/api/") else 413

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        if content_length > self.request_cap:
            self.request.upload_refused = self.too_large()
            return QueryDict(encoding=encoding), MultiValueDict()  # "handled": nothing more is read
        return None

    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        self.file_bytes = 0

    def receive_data_chunk(self, raw_data, start):
        self.file_bytes += len(raw_data)
        self.request_bytes += len(raw_data)
        if self.request_bytes > self.request_cap:  # only when Content-Length understated the body
            self.request.upload_refused = self.too_large()
            raise StopUpload(connection_reset=True)
        if self.file_bytes > self.file_cap:
            reason = f"The file is too large; the limit is {self.file_cap / MB:g} MB."
            self.request.refused_files = [*refused_files(self.request), (self.file_name, reason)]
            raise SkipFile()  # the parser reads past the rest of this file without keeping it
        return raw_data  # pass the bytes on to the next handler

    def file_complete(self, file_size):
        return None  # the next handlers build the file object


class RequestRefusalMiddleware:
    """Answers a request whose body the upload handler refused, before any view sees it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        if request.method != "POST" or request.content_type != "multipart/form-data":
            return None
        request.POST  # noqa: B018 - parse the body now (the handler notes a refusal on the request)
        message = getattr(request, "upload_refused", "")
        if not message:
            return None
        if (request.headers.get("X-Requested-With") == "XMLHttpRequest" or request.headers.get("HX-Request")
                or request.path.startswith("/api/")):
            # 401 for a keyless API request: what the API answers any request without a valid key.
            return JsonResponse({"error": message}, status=getattr(request, "upload_refused_status", 413))
        messages.error(request, message)
        back = request.headers.get("Referer", "")
        safe = url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=request.is_secure())
        return redirect(back if safe else "/")
