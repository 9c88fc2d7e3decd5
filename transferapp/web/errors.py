"""Error pages Django would otherwise render unstyled."""
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme


def csrf_failure(request, reason: str = ""):
    """CSRF_FAILURE_VIEW: a form sent from a page open too long, or from before a sign-in or
    sign-out in another tab. Say what happened, that nothing was saved, and offer the way back."""
    back = request.headers.get("Referer", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        back = ""
    return render(request, "403_csrf.html", {"back": back}, status=403)
