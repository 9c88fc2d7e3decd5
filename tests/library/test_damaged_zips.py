"""A damaged member of a zip (a bad checksum, a header that under-states its size, broken compressed
data, a password) is one refused file with its reason: the import reads every other member, a batch
still writes its CSV; an import that does stop says what it stored."""
import io
import struct
import zipfile

import django_rq
import pytest
from django.core.cache import cache
from django.urls import reverse
from rq import SimpleWorker

from tests.api_support import photo_bytes, photo_project, train_version, work_off_queue
from tests.conftest import image_bytes
from tests.factories import upload
from tests.serving.test_batch import csv_rows, send_batch
from transferapp.library import projects as library_projects
from transferapp.models import Image, ImportJob
from transferapp.storage import archive

pytestmark = pytest.mark.django_db(transaction=True)

LOCAL_HEADER, CENTRAL_HEADER = b"PK\x03\x04", b"PK\x01\x02"


def _zip(members: list[tuple[str, bytes]], compression) -> bytearray:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as z:
        for name, data in members:
            z.writestr(name, data)
    return bytearray(out.getvalue())


def _central_entry(data: bytearray, index: int) -> int:
    at = data.find(CENTRAL_HEADER)
    for _ in range(index):
        at = data.find(CENTRAL_HEADER, at + 4)
    return at


def damage(data: bytearray, index: int, how: str) -> None:
    """Damage member `index` of the zip in `data` in place, the way a bad disk or a broken zip tool does."""
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).infolist()[index]
    local, central = info.header_offset, _central_entry(data, index)
    name_len, extra_len = struct.unpack_from("<HH", data, local + 26)
    start = local + 30 + name_len + extra_len
    if how in ("checksum", "compressed"):  # bytes flipped in the member's data
        for at in range(start + 10, start + 20):
            data[at] ^= 0xFF
    elif how == "understated":  # the headers say it unpacks to half its real size
        struct.pack_into("<I", data, local + 22, info.file_size // 2)
        struct.pack_into("<I", data, central + 24, info.file_size // 2)
    elif how == "encrypted":  # marked as needing a password
        struct.pack_into("<H", data, local + 6, info.flag_bits | 0x1)
        struct.pack_into("<H", data, central + 8, info.flag_bits | 0x1)


COMPRESSION = {"checksum": zipfile.ZIP_STORED, "compressed": zipfile.ZIP_DEFLATED, "understated": zipfile.ZIP_DEFLATED,
               "encrypted": zipfile.ZIP_STORED}
REASONS = {"checksum": "damaged inside the zip", "compressed": "damaged inside the zip", "understated": "damaged inside the zip",
           "encrypted": "encrypted"}


def import_zip(how: str) -> tuple[bytes, str]:
    members = [(f"{'cat' if i % 2 else 'dog'}/{i}.png", image_bytes("red" if i % 2 else "blue", shape_seed=i)) for i in range(6)]
    data = _zip(members, COMPRESSION[how])
    damage(data, 1, how)
    return bytes(data), members[1][0]


@pytest.mark.parametrize("how", list(COMPRESSION))
def test_a_damaged_member_is_refused_by_name_and_every_other_member_is_imported(alice, user, queue, how):
    project = library_projects.project_create(owner=user, name="Pets")
    data, damaged = import_zip(how)
    alice.post(reverse("import_create", args=[project.pk]), {"archive": upload("pets.zip", data, "application/zip")})
    django_rq.get_worker("intake", worker_class=SimpleWorker).work(burst=True)
    job = ImportJob.objects.get()
    assert job.status == "done", job.error
    assert (job.accepted, job.refused, job.skipped, job.processed, job.total) == (5, 1, 0, 6, 6)
    assert Image.objects.filter(project=project).count() == 5
    (refused,) = job.report_rows.filter(ok=False)
    assert refused.name == damaged and REASONS[how] in refused.reason and "refused" in refused.reason
    page = alice.get(job.get_absolute_url()).content.decode()
    assert damaged in page and REASONS[how] in page and "5 images imported" in page


def test_an_import_that_stops_says_how_many_it_stored(alice, user, queue, monkeypatch):
    """An error nobody foresaw, at the 8th of 10 files: the 7 stored before it are counted and
    listed, not only those of the last progress write (at most one a second)."""
    project = library_projects.project_create(owner=user, name="Pets")
    members = [(f"cat/{i}.png", image_bytes("red", shape_seed=i)) for i in range(10)]
    real_read, reads = archive._read_capped, []

    def read_then_fail_at_the_eighth(*args):
        reads.append(1)
        if len(reads) == 8:
            raise RuntimeError("the disk went away")
        return real_read(*args)

    monkeypatch.setattr(archive, "_read_capped", read_then_fail_at_the_eighth)
    alice.post(reverse("import_create", args=[project.pk]),
               {"archive": upload("pets.zip", bytes(_zip(members, zipfile.ZIP_STORED)), "application/zip")})
    django_rq.get_worker("intake", worker_class=SimpleWorker).work(burst=True)
    job = ImportJob.objects.get()
    assert job.status == "failed" and "the disk went away" in job.error
    stored = Image.objects.filter(project=project).count()
    assert stored == 7 and (job.accepted, job.processed) == (stored, stored)
    assert job.report_rows.filter(ok=True).count() == stored
    assert "7 images imported" in alice.get(job.get_absolute_url()).content.decode()


@pytest.fixture(autouse=True)
def fresh_rate_limits(embedded_redis):
    cache.clear()


def test_a_batch_with_damaged_members_writes_its_csv_with_an_error_row_for_each(alice, user, queue):
    project = photo_project(user, per_class=6)
    train_version(project)
    kinds = ("meadow", "sea", "sand")
    members = [(f"shot-{i}.jpg", photo_bytes(kinds[i % 3], 200 + i)) for i in range(6)]
    data = _zip(members, zipfile.ZIP_DEFLATED)
    damage(data, 1, "compressed")
    damage(data, 4, "understated")
    batch = send_batch(alice, project, [upload("shots.zip", bytes(data), "application/zip")])
    work_off_queue("intake")
    batch.refresh_from_db()
    assert batch.status == "done", batch.error
    assert (batch.total, batch.done, batch.refused) == (6, 6, 2)
    rows = csv_rows(alice, batch)
    assert [row["file"] for row in rows] == [name for name, _ in members]
    for i, row in enumerate(rows):
        if i in (1, 4):
            assert "damaged inside the zip" in row["error"] and row["label"] == "", row
        else:
            assert row["label"] in kinds and not row["error"], row
