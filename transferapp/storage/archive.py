"""Reading class folders out of a zip (or a directory tree) safely and one file at a time.

Nothing is ever extracted to a path taken from the archive: members are read into memory one at
a time and stored under content-hash names, so a "zip slip" member cannot write anywhere. Such
members are still reported, so that the user knows what was left out.
"""
import lzma
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

JUNK_NAMES = {".ds_store", "thumbs.db", "desktop.ini", "__macosx"}
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
INBOX_FOLDERS = {"unlabelled", "unlabeled", "inbox"}  # a top folder of images with no class yet (#24)
LABEL_FILE_SUFFIXES = (".csv", ".json")


UNSAFE_PATH = "The path points outside the archive (unsafe), so it was not imported."
DAMAGED = "The file is damaged inside the zip ({why}), so it was refused."
ENCRYPTED = "The file is encrypted (password-protected) inside the zip, so it was refused."
NOT_IN_CLASS = "The file is not inside a class folder."


class ArchiveRejected(Exception):
    """The whole archive is refused (too many files, too large unpacked, not a zip)."""


@dataclass
class Limits:
    max_files: int = 50_000
    max_total_bytes: int = 20 * 1024**3
    max_member_bytes: int = 50 * 1024**2
    max_ratio: float = 200.0  # images barely compress; a higher ratio is a zip bomb


@dataclass
class Entry:
    name: str  # the path as the user knows it
    label: str = ""  # class folder, "" when the file is not inside one
    split: str = ""  # "train" / "val" when the archive gave one, else ""
    skip: str = ""  # why it is skipped, "" when it should be imported
    junk: bool = False  # skipped quietly (system files), only counted
    note: str = ""  # said of a file imported all the same (no row in the labels file: in the Inbox)
    inbox: bool = False  # in an unlabelled/ (unlabeled/, inbox/) top folder: for the project's Inbox
    read: Callable[[], bytes] | None = None


class ZipSource:
    """`with ZipSource(path, limits) as source:` then len(source) and iterate its entries;
    members are read one at a time while the archive is open."""

    def __init__(self, path: Path, limits: Limits, *, loose: bool = False):
        # loose: the members are files to predict, not a training set, so folders are not classes.
        self.path, self.limits, self.loose = path, limits, loose

    def __enter__(self):
        try:
            self.archive = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError):
            raise ArchiveRejected("This file is not a zip archive we can read.") from None
        self.members = [m for m in self.archive.infolist() if not m.is_dir()]
        _check_archive(self.members, self.limits)
        self.root = _common_root([_decoded_name(m) for m in self.members])
        return self

    def __exit__(self, *exc):
        self.archive.close()

    def __len__(self):
        return len(self.members)

    def __iter__(self) -> Iterator[Entry]:
        for member in self.members:
            yield _zip_entry(self.archive, member, () if self.loose else self.root, self.limits, self.loose)

    def names(self) -> list[str]:
        return [_decoded_name(m) for m in self.members]

    def read_named(self, name: str, cap: int) -> bytes:
        """One member's bytes by its (decoded) name: a labels file found by find_labels_file."""
        member = next(m for m in self.members if _decoded_name(m) == name)
        return _read_capped(self.archive, member, cap)


def _check_archive(members, limits: Limits) -> None:
    if len(members) > limits.max_files:
        raise ArchiveRejected(f"The archive holds {len(members):,} files; the limit is {limits.max_files:,}.")
    total = sum(m.file_size for m in members)
    if total > limits.max_total_bytes:
        raise ArchiveRejected(
            f"The archive unpacks to {total / 1024**3:.1f} GB; the limit is {limits.max_total_bytes / 1024**3:.0f} GB."
        )


def _decoded_name(member: zipfile.ZipInfo) -> str:
    # Zips made on Windows without the UTF-8 flag store names in cp437; Python decodes them so.
    if member.flag_bits & 0x800:
        return member.filename
    try:
        return member.filename.encode("cp437").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return member.filename


def _zip_entry(archive, member, root: tuple, limits: Limits, loose: bool = False) -> Entry:
    name = _decoded_name(member)
    entry = classify_loose(name) if loose else classify(name, root)
    if entry.junk or (entry.skip and entry.skip != NOT_IN_CLASS):  # a loose file may still go to the Inbox
        return entry
    if member.flag_bits & 0x1:  # zipfile would raise RuntimeError: it asks for a password
        entry.skip = ENCRYPTED
    elif member.file_size > limits.max_member_bytes:
        entry.skip = f"The file unpacks to {member.file_size / 1024**2:.0f} MB; the limit is {limits.max_member_bytes / 1024**2:.0f} MB."
    elif member.compress_size and member.file_size / member.compress_size > limits.max_ratio:
        entry.skip = "The file is compressed suspiciously well (a possible zip bomb), so it was not unpacked."
    else:
        entry.read = lambda: _read_capped(archive, member, limits.max_member_bytes)
    return entry


def _read_capped(archive, member, cap: int) -> bytes:
    """The member's bytes; ValueError (this file refused, the rest of the zip still read) when it is
    damaged: a bad checksum, a header that under-states its size, broken or cut-short compressed
    data, a compression method Python cannot unpack."""
    try:
        with archive.open(member) as stream:
            data = stream.read(cap + 1)  # file_size in the header can lie: never read more than the cap
    except zipfile.BadZipFile:
        raise ValueError(DAMAGED.format(why="its bytes do not match the zip's record of them")) from None
    except (zlib.error, lzma.LZMAError, EOFError):
        raise ValueError(DAMAGED.format(why="its compressed data is broken or cut short")) from None
    except NotImplementedError:
        raise ValueError(DAMAGED.format(why="it is compressed with a method this server cannot unpack")) from None
    if len(data) > cap:
        raise ValueError("The file is larger than its header says.")
    return data


class DirectorySource:
    """The same interface over a folder on the server (for `manage.py import_images`)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def __enter__(self):
        self.files = sorted(p for p in self.root.rglob("*") if p.is_file())
        return self

    def __exit__(self, *exc):
        return None

    def __len__(self):
        return len(self.files)

    def __iter__(self) -> Iterator[Entry]:
        for path in self.files:
            entry = classify(path.relative_to(self.root).as_posix(), ())
            if not entry.junk and entry.skip in ("", NOT_IN_CLASS):  # a loose file may still go to the Inbox
                entry.read = path.read_bytes
            yield entry

    def names(self) -> list[str]:
        return [path.relative_to(self.root).as_posix() for path in self.files]

    def read_named(self, name: str, cap: int) -> bytes:
        path = self.root / name
        if path.stat().st_size > cap:
            raise ValueError(f"{name} is larger than {cap // 1024**2} MB.")
        return path.read_bytes()


def open_source(path: Path, limits: Limits):
    path = Path(path)
    if path.is_dir():
        return DirectorySource(path)
    return ZipSource(path, limits)


def classify(name: str, root: tuple) -> Entry:
    """Where a member belongs: [root/][split/]class/file; junk and unsafe paths are marked."""
    path = PurePosixPath(name.replace("\\", "/"))
    parts = path.parts
    if path.is_absolute() or ".." in parts:
        return Entry(name=name, skip=UNSAFE_PATH)
    if any(part.lower() in JUNK_NAMES or part.startswith(".") for part in parts):
        return Entry(name=name, junk=True)
    folders = list(parts[len(root) : -1])
    if folders and folders[0].lower() in INBOX_FOLDERS:
        return Entry(name=name, inbox=True)
    split = ""
    if folders and folders[0].lower() in SPLIT_NAMES:
        split = SPLIT_NAMES[folders.pop(0).lower()]
    if not folders:
        return Entry(name=name, split=split, skip=NOT_IN_CLASS)
    # Deeper folders (class/subfolder/x.jpg) still count as the top class folder.
    return Entry(name=name, label=folders[0].strip(), split=split)


def classify_loose(name: str) -> Entry:
    """A file of a batch to predict: its folders mean nothing; junk and unsafe paths are still set apart."""
    entry = classify(name, ())
    return entry if entry.junk or entry.skip == UNSAFE_PATH else Entry(name=name)


def _common_root(names: list[str]) -> tuple:
    """A single folder wrapping everything (flowers/daisy/..., flowers/roses/...) is not a class."""
    useful = [PurePosixPath(n).parts for n in names if not classify(n, ()).junk]
    if not useful or any(len(parts) < 3 for parts in useful):
        return ()
    first = useful[0][0]
    if first.lower() in SPLIT_NAMES or first.lower() in INBOX_FOLDERS or any(parts[0] != first for parts in useful):
        return ()
    return (first,)


def find_labels_file(names: list[str]) -> str | None:
    """The import's labels file (#24): a .csv or .json at the top (or in the one folder wrapping
    everything), the shallowest one; ArchiveRejected when two compete."""
    useful = [n for n in names if not classify(n, ()).junk and n.lower().endswith(LABEL_FILE_SUFFIXES)]
    by_depth = sorted((len(PurePosixPath(n).parts), n) for n in useful if len(PurePosixPath(n).parts) <= 2)
    if not by_depth:
        return None
    shallowest = [n for depth, n in by_depth if depth == by_depth[0][0]]
    if len(shallowest) > 1:
        raise ArchiveRejected(f"The import holds several label files ({', '.join(shallowest[:5])}): keep only one.")
    return shallowest[0]
