"""Recording and checking the audit trail (#26).

`record(project=..., action=..., detail=...)` appends one entry. Who acted comes from the context:
the web middleware sets the signed-in user for each request, the API sets the key's or token's
user, a management command names its operator, and the worker is "worker" (`acting_as`). A domain
write therefore records without every caller passing the user down through it.

Each entry's hash covers its fields and the previous entry's hash (a chain over the whole table in
id order), so editing or deleting a row breaks the chain at that row: `verify` names it. Appends
are serialised by locking the one AuditHead row, so two writers cannot both chain onto one entry.
"""
import contextlib
import contextvars
import hashlib
import json
from dataclasses import dataclass

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from transferapp.models import AuditEntry, AuditHead

GENESIS = "0" * 64


@dataclass(frozen=True)
class Actor:
    name: str
    user_id: int | None = None

    @classmethod
    def of_user(cls, user, via: str = "") -> "Actor":
        name = user.get_username() + (f" ({via})" if via else "")
        return cls(name=name[:160], user_id=user.pk)


SYSTEM = Actor("system")
_current: contextvars.ContextVar[Actor] = contextvars.ContextVar("audit_actor", default=SYSTEM)


def current_actor() -> Actor:
    return _current.get()


@contextlib.contextmanager
def acting_as(actor: Actor):
    """Entries recorded inside are by `actor` (a request's user, an operator, the worker)."""
    token = _current.set(actor)
    try:
        yield actor
    finally:
        _current.reset(token)


def set_actor(actor: Actor) -> None:
    """Within a request, say who acts from here on (the API, once it knows the key or token);
    the middleware's `acting_as` puts back what was there before when the request ends."""
    _current.set(actor)


HASHED = ["created_at", "project_ref", "project_name", "actor", "actor_ref", "action", "detail", "prev_hash"]


def fields_of(entry: AuditEntry) -> dict:
    """Every field an entry's hash covers (all but its own hash), as the hash sees them."""
    return {"created_at": entry.created_at.isoformat(), "project_ref": entry.project_ref,
            "project_name": entry.project_name, "actor": entry.actor, "actor_ref": entry.actor_ref,
            "action": entry.action, "detail": entry.detail, "prev_hash": entry.prev_hash}


def canonical_json(value) -> str:
    """The one fixed JSON form the hash uses (sorted keys, no spaces); the CSV writes the detail so."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder, ensure_ascii=False)


def hash_of_fields(fields: dict) -> str:
    return hashlib.sha256(canonical_json(fields).encode()).hexdigest()


def hash_of(entry: AuditEntry) -> str:
    return hash_of_fields(fields_of(entry))


def row_holds(row: dict) -> bool:
    """Whether a written-out entry (the audit CSV's row, its cells as text) matches its entry_hash:
    the refs are numbers or empty, the detail is its canonical JSON."""
    try:
        fields = {name: row[name] for name in HASHED}
        for ref in ("project_ref", "actor_ref"):
            fields[ref] = int(fields[ref]) if fields[ref] not in ("", None) else None
        fields["detail"] = json.loads(fields["detail"])
    except (KeyError, ValueError, TypeError):
        return False
    return hash_of_fields(fields) == row.get("entry_hash")


def _json_safe(detail: dict) -> dict:
    """The detail as it will read back from the JSON column (so the hash computed now matches)."""
    return json.loads(json.dumps(detail or {}, cls=DjangoJSONEncoder))


def record(*, action: str, project=None, detail: dict | None = None, actor: Actor | None = None) -> AuditEntry:
    """Append one entry. Runs in its own atomic block; inside a caller's transaction it commits or
    rolls back with the change it records (a refused write leaves no entry)."""
    actor = actor or current_actor()
    with transaction.atomic():
        head, _ = AuditHead.objects.select_for_update().get_or_create(pk=1, defaults={"last_hash": GENESIS})
        entry = AuditEntry(created_at=timezone.now(),
                           project_ref=getattr(project, "pk", None), project_name=getattr(project, "name", "")[:120],
                           actor=actor.name[:160], actor_ref=actor.user_id, action=action[:40],
                           detail=_json_safe(detail), prev_hash=head.last_hash)
        entry.entry_hash = hash_of(entry)
        entry.save()
        head.last_hash, head.count = entry.entry_hash, head.count + 1
        head.save(update_fields=["last_hash", "count"])
    return entry


@dataclass(frozen=True)
class Verdict:
    ok: bool
    checked: int
    broken: AuditEntry | None = None  # the first entry whose hash or link does not hold (None: none left to name)
    reason: str = ""
    last_hash: str = GENESIS  # the hash of the last entry checked: an operator can keep it outside the database


def verify(batch: int = 2000) -> Verdict:
    """Walk the chain in id order: each entry must hash to its stored hash and link to the one
    before; the head must name the last entry and count them all (a deleted last row shows there).
    The head row itself must be there whenever entries are: without it, a deleted last row (or
    several) and the head deleted with them would pass unseen."""
    expected_prev, checked, last = GENESIS, 0, None
    for entry in AuditEntry.objects.order_by("pk").iterator(chunk_size=batch):
        if entry.prev_hash != expected_prev:
            return Verdict(False, checked, entry, "it does not link to the entry before it (one was deleted or changed)")
        if hash_of(entry) != entry.entry_hash:
            return Verdict(False, checked, entry, "its fields do not match its hash (it was changed)")
        expected_prev, checked, last = entry.entry_hash, checked + 1, entry
    head = AuditHead.objects.filter(pk=1).first()
    if head is None:
        if last is not None:
            return Verdict(False, checked, last, "the chain's head record is missing (it was deleted, perhaps with "
                                                 "entries after this one)", expected_prev)
    elif last is None and head.count:
        return Verdict(False, 0, None, f"all {head.count} entries are gone (the head says {head.count} were written)")
    elif head.last_hash != expected_prev or head.count != checked:
        return Verdict(False, checked, last, "the chain ends early: entries after this one were deleted", expected_prev)
    return Verdict(True, checked, last_hash=expected_prev)
