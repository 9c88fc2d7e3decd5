"""The audit trail's hash chain: an honest log verifies; an edited or deleted row is named."""
import pytest

from transferapp.audit import trail
from transferapp.models import AuditEntry

pytestmark = pytest.mark.django_db


def _three_entries(project=None):
    with trail.acting_as(trail.Actor("alice", 1)):
        return [trail.record(action="label.changed", project=project, detail={"image": i, "from": "a", "to": "b"})
                for i in range(3)]


def test_an_honest_log_verifies_and_each_entry_links_to_the_one_before():
    entries = _three_entries()
    assert entries[0].prev_hash == trail.GENESIS
    assert [e.prev_hash for e in entries[1:]] == [e.entry_hash for e in entries[:-1]]
    verdict = trail.verify()
    assert verdict.ok and verdict.checked == 3
    assert AuditEntry.objects.get(pk=entries[1].pk).actor == "alice"


def test_an_edited_row_breaks_the_chain_at_that_row():
    entries = _three_entries()
    AuditEntry.objects.filter(pk=entries[1].pk).update(detail={"image": 1, "from": "a", "to": "c"})
    verdict = trail.verify()
    assert not verdict.ok and verdict.broken.pk == entries[1].pk and "changed" in verdict.reason


def test_a_deleted_row_breaks_the_chain_at_the_row_after_it_and_a_deleted_last_row_at_the_end():
    entries = _three_entries()
    AuditEntry.objects.filter(pk=entries[1].pk).delete()
    assert trail.verify().broken.pk == entries[2].pk
    AuditEntry.objects.filter(pk=entries[2].pk).delete()
    verdict = trail.verify()
    assert not verdict.ok and verdict.broken.pk == entries[0].pk and "deleted" in verdict.reason
