"""Management commands that change data act as "operator" in the audit trail (#26): no one is
signed in, and the one who runs manage.py on the server is the operator."""
import functools

from transferapp.audit import trail

OPERATOR = trail.Actor("operator")


def as_operator(handle):
    """Decorate a command's handle(): every entry recorded while it runs is by the operator."""
    @functools.wraps(handle)
    def handle_as_operator(*args, **kwargs):
        with trail.acting_as(OPERATOR):
            return handle(*args, **kwargs)
    return handle_as_operator
