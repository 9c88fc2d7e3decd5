"""Reading a project's audit trail (#26): its entries, newest first, filtered by kind and person,
each told as a sentence ("alice moved image 123 from cat to dog")."""
from transferapp.models import AuditEntry

KINDS = {"label": "Labels", "images": "Uploads, deletes and restores", "import": "Imports", "class": "Classes",
         "project": "The project", "run": "Trainings", "version": "Versions", "export": "Exports",
         "model": "Model downloads", "webhook": "Webhooks", "key": "API keys",
         "sharing": "Sharing", "study": "Reading studies"}
# No "Tokens" kind: a personal token is its user's, not a project's, so its entries (token.created,
# token.revoked) carry no project and never appear in a project's log. They are in the one chain
# that verify_audit_log checks; what a token changes in a project is logged there as "its user (token ta_pt_…)".


def entries(*, project_ref: int, kind: str = "", actor: str = ""):
    """Newest first; `kind` is the noun before the dot ("label" for label.changed and label.confirmed)."""
    found = AuditEntry.objects.filter(project_ref=project_ref)
    if kind:
        found = found.filter(action__startswith=f"{kind}.")
    if actor:
        found = found.filter(actor=actor)
    return found.order_by("-pk")


def actors(*, project_ref: int) -> list[str]:
    """Everyone who has an entry in this project's log, for the person filter."""
    return sorted(set(AuditEntry.objects.filter(project_ref=project_ref).values_list("actor", flat=True)))


def _images(n: int) -> str:
    return "1 image" if n == 1 else f"{n} images"


def _class(name: str) -> str:
    return name or "the Inbox"


def _label_changed(d: dict) -> str:
    if isinstance(d.get("image"), int):  # one image, named in the entry itself (a study's write-back)
        via = f" ({d['via']})" if d.get("via") else ""
        return f"moved image {d['image']} from {_class(d.get('from', ''))} to {_class(d.get('to', ''))}{via}"
    listed = d.get("listed", [])
    if d.get("count") == 1 and listed:
        one = listed[0]
        return f"moved image {one.get('image')} ({one.get('file')}) from {_class(one.get('from', ''))} to {_class(d.get('to', ''))}"
    return f"moved {_images(d.get('count', 0))} to {_class(d.get('to', ''))} ({d.get('how', '')})"


def _counted(verb: str):
    return lambda d: f"{verb} {_images(d.get('count', 0))}" + (
        f" ({d['listed'][0].get('file')})" if d.get("count") == 1 and d.get("listed") else "")


def _sharing_removed(d: dict) -> str:
    if d.get("left"):
        return f"left the project (they were {d.get('role')})"
    return f"removed {d.get('user')} ({d.get('role')}) from the project"


def _secret(prefix, name) -> str:
    """A key or token as the keys list shows it: its first characters, and its name when it has one."""
    return f"{prefix}…" + (f" ({name})" if name else "")


SENTENCES = {
    "label.changed": _label_changed,
    "label.confirmed": lambda d: f"confirmed that image {d.get('image')} ({d.get('file')}) is {_class(d.get('label', ''))}",
    "images.uploaded": lambda d: f"uploaded {_images(d.get('added', 0))} to {_class(d.get('to', ''))}"
                                 + (f" ({d.get('refused')} refused)" if d.get("refused") else ""),
    "images.imported": lambda d: f"imported {_images(d.get('added', 0))} ({d.get('skipped', 0)} skipped, "
                                 f"{d.get('refused', 0)} refused)",
    "import.started": lambda d: f"started importing {d.get('file')}",
    "images.deleted": _counted("deleted"),
    "images.restored": _counted("restored"),
    "class.created": lambda d: f"created the class {d.get('name')}",
    "class.renamed": lambda d: f"renamed the class {d.get('from')} to {d.get('to')}",
    "class.deleted": lambda d: f"deleted the class {d.get('name')} and its {_images(d.get('images', 0))}",
    "project.created": lambda d: f"created the project {d.get('name')}",
    "project.renamed": lambda d: f"renamed the project {d.get('from')} to {d.get('to')}",
    "project.deleted": lambda d: f"deleted the project {d.get('name')}",
    "run.started": lambda d: f"started training run {d.get('run')} ({d.get('base')}, {d.get('preset')})",
    "run.cancelled": lambda d: f"cancelled training run {d.get('run')}",
    "run.deleted": lambda d: f"deleted training run {d.get('run')}",
    "version.published": lambda d: f"published version {d.get('version')}",
    "version.deleted": lambda d: f"deleted version {d.get('version')}",
    "export.made": lambda d: f"exported version {d.get('version')}" + ("" if d.get("passed") else " (its self-test failed)"),
    "model.downloaded": lambda d: f"downloaded the {d.get('what')} of version {d.get('version') or '?'} (run {d.get('run')})",
    "webhook.added": lambda d: f"added a webhook to {d.get('url')}",
    "webhook.removed": lambda d: f"removed the webhook to {d.get('url')}",
    "sharing.added": lambda d: f"shared the project with {d.get('user')} as {d.get('role')}",
    "sharing.changed": lambda d: f"changed {d.get('user')}'s role from {d.get('from')} to {d.get('to')}",
    "sharing.removed": _sharing_removed,
    "study.started": lambda d: f"started the reading study {d.get('name')} of {_images(d.get('images', 0))}"
                               f" with the readers {', '.join(map(str, d.get('readers') or []))}",
    "study.closed": lambda d: f"closed the reading study {d.get('name')}",
    "study.adjudicated": lambda d: f"adjudicated image {d.get('image')} as {_class(d.get('label', ''))} "
                                   f"in reading study {d.get('study')}",
    "study.written_back": lambda d: f"wrote the adjudicated labels of reading study {d.get('study')} into the project "
                                    f"({d.get('moved', 0)} moved, {d.get('confirmed', 0)} confirmed, "
                                    f"{d.get('skipped', 0)} skipped)",
    "key.created": lambda d: f"created the API key {_secret(d.get('key'), d.get('name'))}",
    "key.revoked": lambda d: f"revoked the API key {_secret(d.get('key'), d.get('name'))}"
                             + (f" because: {d['why']}" if d.get("why") else ""),
    "token.created": lambda d: f"created the personal token {_secret(d.get('token'), d.get('name'))} of {d.get('user')}",
    "token.revoked": lambda d: f"revoked the personal token {_secret(d.get('token'), d.get('name'))} of {d.get('user')}",
    "webhook.switched": lambda d: f"switched the webhook to {d.get('url')} {'on' if d.get('on') else 'off'}",
}


def sentence(entry: AuditEntry) -> str:
    """Who did what, in words; an action without its own wording says its name and details."""
    told = SENTENCES.get(entry.action)
    try:
        what = told(entry.detail or {}) if told else f"{entry.action} {_plain(entry.detail)}"
    except (AttributeError, TypeError, KeyError, IndexError):  # a detail of an older shape
        what = f"{entry.action} {_plain(entry.detail)}"
    return f"{entry.actor} {what}".strip()


def _plain(detail) -> str:
    if not isinstance(detail, dict):
        return ""
    return ", ".join(f"{key}: {value}" for key, value in detail.items() if not isinstance(value, (list, dict)))


def image_of(entry: AuditEntry) -> int | None:
    """The one image an entry is about (for a thumbnail), or None."""
    detail = entry.detail or {}
    if isinstance(detail.get("image"), int):
        return detail["image"]
    listed = detail.get("listed") or []
    if detail.get("count") == 1 and listed and isinstance(listed[0], dict):
        return listed[0].get("image")
    return None
