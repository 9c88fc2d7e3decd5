"""Where a job's files are, whether media lives on this machine's disk or in an S3 bucket.

Local mode (no S3_BUCKET, the default): every function hands back the paths the app always used
and copies nothing.

Bucket mode: the bucket is the only shared place. A process that needs files (a worker training,
the web process predicting) fetches them into its own scratch folder (SCRATCH_DIR) and works on
local paths; results go back to the bucket under keys named by what they are (and, where a job
that is run again could meet its own silent earlier try, by which try wrote them):

- images and thumbnails: their storage names (content-hash names, projects/N/images/<sha256>.png),
  fetched to SCRATCH_DIR/media/<name>: the scratch copy is keyed by content too;
- a run's model folder: artifacts/project-N/run-M/ (run-M-try-K/ for a later try), mirrored at
  the same path under SCRATCH_DIR (a manifest of ETags says which files changed in the bucket
  since the last copy);
- a batch prediction's folder: batches/<random>/, its inputs fetched into SCRATCH_DIR/work/ for the
  job, its results (CSV, thumbnails) fetched into the scratch cache when a page shows them;
- zip imports: imports/<random>.zip, fetched to SCRATCH_DIR/work/ for the job and then deleted.

The scratch cache is bounded (SCRATCH_CACHE_MB): beyond it, the least recently used images and model
folders are removed, never a model folder being trained into nor anything used in the last minute.
"""
import json
import logging
import os
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage

logger = logging.getLogger(__name__)

MANIFEST = ".blobs.json"  # in a mirrored model folder: {relative path: ETag} as last copied
BUSY = ".busy"  # in a model folder being trained into: its local files are the newest
RECHECK_S = 5.0  # a model folder is compared with the bucket at most this often per process
RECENT_S = 60.0  # what was used this recently is never evicted (another job may be reading it)
FETCH_THREADS = 8  # parallel downloads: many small images are latency-bound, not bandwidth-bound

_checked: dict[str, float] = {}
_checked_lock = threading.Lock()


def s3_mode() -> bool:
    return bool(settings.S3_BUCKET)


def _client():
    """boto3's client of the default storage's connection (clients, unlike resources, are thread-safe)."""
    return default_storage.connection.meta.client


def _scratch(name: str) -> Path:
    parts = [part for part in name.split("/") if part not in ("", ".", "..")]
    return Path(settings.SCRATCH_DIR).joinpath(*parts)


def _download(key: str, target: Path, missing_ok: bool = False) -> None:
    """Atomic: a reader never sees half a file, and two processes fetching the same key both succeed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    try:
        _client().download_file(settings.S3_BUCKET, key, str(part))
        os.replace(part, target)
    except Exception as exc:  # botocore's ClientError: botocore is only installed for bucket mode
        if not (missing_ok and getattr(exc, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey")):
            raise
    finally:
        part.unlink(missing_ok=True)


# --- media by storage name (images, thumbnails) ---------------------------------------------------

def media_paths(names: list[str], missing_ok: bool = False) -> list[Path]:
    """Local paths of stored files, in order; in bucket mode fetched into the scratch cache first
    (with `missing_ok`, an object the bucket lacks gives a path that does not exist)."""
    if not s3_mode():
        return [Path(default_storage.path(name)) for name in names]
    paths = [_scratch(f"media/{name}") for name in names]
    now, missing = time.time(), []
    for name, path in zip(names, paths):
        try:
            os.utime(path, (now, now))  # the LRU's "last used"
        except FileNotFoundError:  # not fetched yet, or evicted by another process a moment ago
            missing.append((name, path))
    if missing:
        with ThreadPoolExecutor(FETCH_THREADS) as pool:
            list(pool.map(lambda item: _download(item[0], item[1], missing_ok), missing))
        trim(keep=set(paths))
    return paths


def media_path(name: str) -> Path:
    return media_paths([name])[0]


# --- a training run's model folder ------------------------------------------------------------------

def artifact_name(run) -> str:
    """The run's model folder in the bucket."""
    return f"artifacts/{_run_folder(run)}"


def _run_folder(run) -> str:
    """project-N/run-M, or run-M-try-K for a run's later try: a try run again after its worker went
    silent writes its own folder, never one that the silent try may still be writing."""
    tried = f"-try-{run.attempt}" if run.attempt > 1 else ""
    return f"project-{run.project_id}/run-{run.pk}{tried}"


def artifact_workdir(run) -> Path:
    """Where a worker writes the run's model folder."""
    if not s3_mode():
        return Path(settings.ARTIFACTS_ROOT) / _run_folder(run)
    return _scratch(artifact_name(run))


def artifact_record(run) -> str:
    """What TrainingRun.artifact_dir holds: a local folder, or in bucket mode the bucket prefix."""
    return artifact_name(run) if s3_mode() else str(artifact_workdir(run))


def artifact_folder(run) -> Path | None:
    """A local folder holding the run's model files (mirrored from the bucket when they changed
    there), or None for a run that never wrote any."""
    if not run.artifact_dir:
        return None
    if not s3_mode():
        return Path(run.artifact_dir)
    return _mirror(run.artifact_dir)


def artifact_subfolder(run, name: str) -> Path | None:
    """A folder inside the run's model folder (export/, report/), or None for a run without one."""
    folder = artifact_folder(run)
    return folder / name if folder is not None else None


@contextmanager
def training_into(run):
    """The run's model folder while a worker writes it: marked busy, so that neither the LRU nor a
    mirror from the bucket touches files newer than the bucket's."""
    folder = artifact_workdir(run)
    folder.mkdir(parents=True, exist_ok=True)
    busy = folder / BUSY
    busy.touch()
    try:
        yield folder
    finally:
        busy.unlink(missing_ok=True)


def artifact_publish(run, subfolder: str = "", prune: bool = False) -> None:
    """Upload the run's local model folder (or one subfolder of it, e.g. "export") to the bucket.
    meta.json goes last: a reader that finds the new meta.json finds the files it names. With
    `prune`, the subfolder's objects that are no longer here (an old cached report) go too."""
    if not s3_mode():
        return
    folder, prefix = artifact_workdir(run), artifact_name(run)
    sent = []
    for path in files_to_send(folder / subfolder if subfolder else folder):
        sent.append(path.relative_to(folder).as_posix())
        send(path, f"{prefix}/{sent[-1]}")
    listing = _listing(prefix)
    gone = [rel for rel in listing if prune and subfolder and rel.startswith(f"{subfolder}/") and rel not in sent]
    for rel in gone:
        _client().delete_object(Bucket=settings.S3_BUCKET, Key=f"{prefix}/{rel}")
    # Only what was sent is known to match: another file changed in the bucket is fetched next time.
    _write_manifest(folder, {**_read_manifest(folder), **{rel: listing[rel] for rel in sent if rel in listing}})


def files_to_send(root: Path) -> list[Path]:
    """A local folder's files in the order they go to the bucket: meta.json last (a reader that
    finds the new meta.json finds the files it names); markers and half-written files left out."""
    return sorted((p for p in root.rglob("*") if p.is_file() and not _private(p)),
                  key=lambda p: (p.name == "meta.json", str(p)))


def send(path: Path, key: str) -> None:
    """A local file into the bucket (boto3 goes multipart for a large one)."""
    _client().upload_file(str(path), settings.S3_BUCKET, key)


def _private(path: Path) -> bool:
    return path.name in (MANIFEST, BUSY) or path.name.endswith((".part", ".partial"))


def _objects(prefix: str):
    """The bucket's listing entries (Key, Size, ETag, ...) of the keys starting with `prefix`."""
    for page in _client().get_paginator("list_objects_v2").paginate(Bucket=settings.S3_BUCKET, Prefix=prefix):
        yield from page.get("Contents", [])


def _listing(prefix: str) -> dict[str, str]:
    """{path relative to the prefix: ETag} of the objects under it."""
    return {item["Key"][len(prefix) + 1:]: item["ETag"] for item in _objects(f"{prefix}/")}


def object_sizes(prefix: str) -> dict[str, int]:
    """{key: bytes} of the objects whose keys start with `prefix` (e.g. "projects/")."""
    return {item["Key"]: item["Size"] for item in _objects(prefix)}


def media_sizes(prefix: str) -> dict[str, int]:
    """{storage name: bytes} of the media files whose names start with `prefix`, on the disk or in the bucket."""
    if s3_mode():
        return object_sizes(prefix)
    root = Path(settings.MEDIA_ROOT)
    folder = root / prefix
    files = [path for path in folder.rglob("*") if path.is_file()] if folder.is_dir() else []
    return {path.relative_to(root).as_posix(): path.stat().st_size for path in files}


def _write_manifest(folder: Path, etags: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f".{MANIFEST}.{uuid.uuid4().hex}.part"
    part.write_text(json.dumps(etags))
    os.replace(part, folder / MANIFEST)


def _read_manifest(folder: Path) -> dict:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


def _mirror(prefix: str) -> Path:
    folder = _scratch(prefix)
    if (folder / BUSY).exists():
        return folder  # trained into here right now: the local files are the newest there are
    with _checked_lock:
        fresh = time.monotonic() - _checked.get(prefix, float("-inf")) < RECHECK_S
    if fresh and folder.is_dir():
        return _used(folder)
    listing, known = _listing(prefix), _read_manifest(folder)
    stale = [rel for rel, etag in listing.items() if known.get(rel) != etag or not (folder / rel).is_file()]
    for rel in sorted(stale, key=lambda rel: rel == "meta.json"):  # meta.json last, as uploaded:
        _download(f"{prefix}/{rel}", folder / rel)  # a reader that sees the new meta finds its weights
    if stale or listing != known:
        _write_manifest(folder, listing)
    with _checked_lock:
        _checked[prefix] = time.monotonic()
    if stale:
        trim(keep={folder})
    return _used(folder)


def _used(folder: Path) -> Path:
    if folder.is_dir():
        now = time.time()
        os.utime(folder, (now, now))
    return folder


# --- sending stored files to the browser ----------------------------------------------------------

def presigned_url(key: str, filename: str = "", content_type: str | None = None) -> str:
    """A short-lived GET URL at the bucket's public address (S3_PUBLIC_URL), or "" when browsers
    are not meant to reach the bucket (then the web process streams: open_stream). Call it only
    after the ownership check: whoever holds the URL can read the object until it expires."""
    if not (s3_mode() and settings.S3_PUBLIC_URL):
        return ""
    params = {"Bucket": settings.S3_BUCKET, "Key": key}
    if filename:
        params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
    if content_type:
        params["ResponseContentType"] = content_type
    return _public_client().generate_presigned_url("get_object", Params=params, ExpiresIn=settings.S3_URL_EXPIRE_S)


def _public_client():
    """A client addressed at the public URL, for signing only (signing needs no connection)."""
    import boto3
    from botocore.config import Config

    options = settings.STORAGES["default"]["OPTIONS"]
    return boto3.session.Session().client(
        "s3", endpoint_url=settings.S3_PUBLIC_URL, region_name=settings.S3_REGION,
        aws_access_key_id=options["access_key"], aws_secret_access_key=options["secret_key"],
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))


def open_stream(key: str):
    """(a file-like object read in chunks straight from the bucket, its size in bytes): nothing is
    held whole in memory. FileNotFoundError when the object is gone."""
    try:
        reply = _client().get_object(Bucket=settings.S3_BUCKET, Key=key)
    except _client().exceptions.NoSuchKey:
        raise FileNotFoundError(key) from None
    return reply["Body"], reply["ContentLength"]


# --- removing -------------------------------------------------------------------------------------

def remove_folder(name: str) -> None:
    """A folder of the bucket (projects/7, artifacts/project-7) and this process's scratch copy."""
    shutil.rmtree(_scratch(name), ignore_errors=True)
    with _checked_lock:
        for prefix in [p for p in _checked if p == name or p.startswith(f"{name}/")]:
            del _checked[prefix]
    keys = [{"Key": f"{name}/{rel}"} for rel in _listing(name)]
    client = _client()
    for start in range(0, len(keys), 1000):  # the most one DeleteObjects request takes
        client.delete_objects(Bucket=settings.S3_BUCKET, Delete={"Objects": keys[start:start + 1000], "Quiet": True})


# --- uploads a job reads once (zip imports) ----------------------------------------------------------

def keep_upload(uploaded, folder: str) -> str:
    """Store an uploaded file for a background job, streamed in chunks: a local path, or in bucket
    mode a key under `folder`/ that the job fetches (fetch_upload) and removes (discard_upload)."""
    record, name = folder_record(folder), f"{uuid.uuid4().hex}{Path(uploaded.name).suffix.lower()}"
    store_file(record, name, uploaded)
    return f"{record}/{name}" if s3_mode() else str(Path(record) / name)


def fetch_upload(kept: str) -> Path:
    if not s3_mode():
        return Path(kept)
    target = _scratch(f"work/{kept}")
    if not target.exists():
        _download(kept, target)
    return target


def discard_upload(kept: str) -> None:
    if not kept:
        return
    if not s3_mode():
        Path(kept).unlink(missing_ok=True)
        return
    _scratch(f"work/{kept}").unlink(missing_ok=True)
    _client().delete_object(Bucket=settings.S3_BUCKET, Key=kept)


# --- a job's folder of files (a batch prediction's inputs, then its results) ---------------------------

def folder_record(name: str) -> str:
    """What a row records for a stored folder: a folder under MEDIA_ROOT, or in bucket mode the prefix."""
    return name if s3_mode() else str(Path(settings.MEDIA_ROOT) / name)


def storage_errors() -> tuple[type[Exception], ...]:
    """What a failed write to the disk or the bucket raises (botocore is only installed for buckets)."""
    if not s3_mode():
        return (OSError,)
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    return (OSError, Boto3Error, BotoCoreError, ClientError)


def in_bucket(record: str) -> bool:
    """Whether a recorded folder (or file in it) is in the bucket. A local path recorded before the
    app used the bucket for it (batches before bucket mode stored them) stays on the shared disk."""
    return s3_mode() and not Path(record).is_absolute()


def store_file(record: str, relative: str, uploaded) -> None:
    """An uploaded file into a stored folder, streamed in chunks (never whole in memory)."""
    if in_bucket(record):
        uploaded.seek(0)
        _client().upload_fileobj(uploaded, settings.S3_BUCKET, f"{record}/{relative}")
        return
    target = Path(record) / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        for chunk in uploaded.chunks():
            out.write(chunk)


def store_text(record: str, relative: str, text: str) -> None:
    if in_bucket(record):
        _client().put_object(Bucket=settings.S3_BUCKET, Key=f"{record}/{relative}", Body=text.encode())
        return
    target = Path(record) / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def job_workdir(record: str, attempt: int) -> Path:
    """Where a job reads and writes a stored folder: the folder itself, or in bucket mode a copy in
    the scratch work area (outside the LRU cache: a job may read it for hours), one per attempt so
    that a job run again never shares files with a silent earlier attempt on the same machine."""
    return _scratch(f"work/{record}/try-{attempt}") if in_bucket(record) else Path(record)


def fetch_folder(record: str, relative: str, workdir: Path) -> Path:
    """A subfolder of a stored folder (a batch's inputs) in the job's workdir, fetched in bucket mode."""
    if in_bucket(record):
        prefix = f"{record}/{relative}"
        with ThreadPoolExecutor(FETCH_THREADS) as pool:
            list(pool.map(lambda rel: _download(f"{prefix}/{rel}", workdir / relative / rel), _listing(prefix)))
    return workdir / relative


def publish_folder(workdir: Path, record: str, relatives: list[str]) -> None:
    """A job's results (files or folders of its workdir) into the bucket; nothing to do on the disk."""
    if not in_bucket(record):
        return
    for relative in relatives:
        root = workdir / relative
        for path in [root] if root.is_file() else files_to_send(root):
            send(path, f"{record}/{path.relative_to(workdir).as_posix()}")


def remove_stored(record: str, relative: str = "") -> None:
    """A stored folder (or one subfolder of it), whichever mode recorded it, with the work copies."""
    if not record:
        return
    name = f"{record}/{relative}" if relative else record
    if in_bucket(record):
        for copy in (f"work/{name}", f"media/{name}"):  # a job's copy; what pages fetched to show
            shutil.rmtree(_scratch(copy), ignore_errors=True)
        remove_folder(name)
    else:
        shutil.rmtree(name, ignore_errors=True)


def stored_paths(record: str, relatives: list[str]) -> list[Path]:
    """Local paths of files of a stored folder for reading (a batch's CSV and thumbnails); in bucket
    mode fetched into the scratch cache, and a file the bucket does not hold is a path that does
    not exist."""
    if not in_bucket(record):
        return [Path(record) / relative for relative in relatives]
    return media_paths([f"{record}/{relative}" for relative in relatives], missing_ok=True)


# --- what the scratch cache holds of deleted data ----------------------------------------------------

def scratch_contents() -> tuple[list[str], list[str], list[str]] | None:
    """(media names, model folders as artifact_dir records, batch folders as records) held in this
    process's scratch cache, for jobs.sweeps.scratch_sweep; None while a training here is
    reading its images (an image deleted meanwhile stays readable until the training ends)."""
    root = Path(settings.SCRATCH_DIR)
    if _busy_marks(root):
        return None
    cutoff = time.time() - RECENT_S  # a file fetched a moment ago may belong to a row being made
    media = [path.relative_to(root / "media").as_posix() for path in (root / "media" / "projects").rglob("*")
             if path.is_file() and not path.name.endswith(".part") and _used_before(path, cutoff)]
    models = [path.relative_to(root).as_posix() for path in (root / "artifacts").glob("project-*/run-*") if path.is_dir()]
    batches = [path.relative_to(root / "media").as_posix() for path in (root / "media" / "batches").glob("*") if path.is_dir()]
    return media, models, batches


def scratch_jobs() -> tuple[list[str], list[str], list[str]]:
    """What jobs hold in this process's scratch folder: model folders marked busy (as artifact_dir
    records), imports' fetched zips (as their keys) and batch predictions' work folders
    (batches/<id>/try-N). A worker that was killed leaves them behind: jobs.sweeps.scratch_sweep
    releases those of jobs no longer running."""
    root = Path(settings.SCRATCH_DIR)
    busy = [marker.parent.relative_to(root).as_posix() for marker in _busy_marks(root)]
    cutoff = time.time() - RECENT_S  # never what a job fetched a moment ago
    uploads = [path.relative_to(root / "work").as_posix() for path in (root / "work" / "imports").glob("*")
               if _used_before(path, cutoff)]
    tries = [path.relative_to(root / "work").as_posix() for path in (root / "work" / "batches").glob("*/try-*")
             if _used_before(path, cutoff)]
    return busy, uploads, tries


def _busy_marks(root: Path) -> list[Path]:
    """The marks of model folders being trained into in this scratch folder (training_into)."""
    return list((root / "artifacts").glob(f"project-*/run-*/{BUSY}"))


def _used_before(path: Path, cutoff: float) -> bool:
    try:
        return path.stat().st_mtime < cutoff
    except FileNotFoundError:  # the LRU (another process) removed it a moment ago
        return False


def scratch_release(busy: list[str], work: list[str]) -> None:
    """Unmark these model folders (the LRU may then evict them) and remove these work files."""
    for record in busy:
        (_scratch(record) / BUSY).unlink(missing_ok=True)
    for name in work:
        _remove(_scratch(f"work/{name}"))


def scratch_forget(names: list[str]) -> None:
    """Remove these from this process's scratch cache: media names, or folders as in scratch_contents."""
    root = Path(settings.SCRATCH_DIR)
    for name in names:
        _remove(_scratch(name) if name.startswith("artifacts/") else root / "media" / name)


def _remove(path: Path) -> None:
    """A file or a folder of the scratch folder, whichever it is (gone already is fine)."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# --- the scratch cache's bound ------------------------------------------------------------------------

def _entries() -> list[tuple[float, int, Path]]:
    """(last used, bytes, path) of each evictable unit: an image file, or a whole model folder."""
    root = Path(settings.SCRATCH_DIR)
    entries = []
    # A training in this scratch folder reads its images every epoch, for hours, long after it
    # fetched them: while one runs (a busy model folder), no image is evicted.
    training = bool(_busy_marks(root))
    for path in () if training else (root / "media").rglob("*"):
        if path.is_file() and not path.name.endswith(".part"):
            stat = path.stat()
            entries.append((stat.st_mtime, stat.st_size, path))
    for folder in (root / "artifacts").glob("project-*/run-*"):
        if folder.is_dir() and not (folder / BUSY).exists():
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            entries.append((folder.stat().st_mtime, size, folder))
    return entries


def trim(keep: set = frozenset()) -> int:
    """Remove the least recently used entries until the cache fits SCRATCH_CACHE_MB; returns bytes freed.
    What a job is using right now (`keep`, or anything used within RECENT_S) stays, even over the bound."""
    budget = settings.SCRATCH_CACHE_MB * 1024 * 1024
    try:
        entries = _entries()
    except OSError:  # another process removed something mid-walk: trim next time
        return 0
    total, freed = sum(size for _, size, _ in entries), 0
    cutoff = time.time() - RECENT_S
    for used, size, path in sorted(entries, key=lambda entry: entry[0]):
        if total - freed <= budget:
            break
        if path in keep or used > cutoff:
            continue
        _remove(path)
        freed += size
    if total - freed > budget:
        logger.warning("The scratch cache holds %d MB, over SCRATCH_CACHE_MB=%d: the files in use need more.",
                       (total - freed) // 2**20, settings.SCRATCH_CACHE_MB)
    return freed
