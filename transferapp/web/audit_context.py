"""Who acts, for the audit trail (#26): the signed-in user for the length of each request.

The API's authentication replaces it with the key's or token's caller (web/api.py), and the
reset at the end of the request undoes that too (a ContextVar reset restores the value from
before this middleware's set, whatever was set in between)."""
from transferapp.audit import trail


class AuditActorMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        actor = trail.Actor.of_user(user) if user is not None and user.is_authenticated else trail.Actor("anonymous")
        with trail.acting_as(actor):
            return self.get_response(request)
