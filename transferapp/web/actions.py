"""A view running a domain write: its refusal shown as a message (or JSON to a script), then back."""

from django.contrib import messages
from django.http import JsonResponse
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme

from transferapp.library import errors


def is_script_request(request) -> bool:
    return request.headers.get("X-Requested-With") == "XMLHttpRequest" or bool(request.htmx)


def _back(request, fallback):
    """Return to the page the form came from (the results page's gallery), if it is ours."""
    target = request.POST.get("next", "")
    return redirect(target if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}) else fallback)


def refuse(request, message, redirect_to, status=400):
    """A refusal the uploader script shows next to the file, or a message on the next page."""
    if is_script_request(request):
        return JsonResponse({"error": message}, status=status)
    messages.error(request, message)
    return redirect(redirect_to)


def apply(request, service, **kwargs):
    """Run a service; show its refusal as a message instead of an error page."""
    try:
        return service(**kwargs)
    except errors.ServiceError as exc:
        messages.error(request, str(exc))
        return None
