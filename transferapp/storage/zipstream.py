"""A zip archive written while it is sent: only one block of one file is in memory at a time.

zipfile writes to a stream that cannot seek by putting each member's sizes after its data (a
"data descriptor"), which every unzip tool reads.
"""
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

BLOCK_BYTES = 1 << 20


class _Pending(io.RawIOBase):
    """Collects what zipfile writes until the response takes it."""

    def __init__(self):
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data, self.chunks = b"".join(self.chunks), []
        return data


def zip_chunks(files: list[tuple[Path, str]]) -> Iterator[bytes]:
    """The zip of (path on disk, name in the archive) pairs, as a sequence of byte chunks."""
    pending = _Pending()
    with zipfile.ZipFile(pending, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, arcname in files:
            info = zipfile.ZipInfo.from_file(path, arcname)
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as source, archive.open(info, "w") as member:
                for block in iter(lambda: source.read(BLOCK_BYTES), b""):
                    member.write(block)
                    yield from _nonempty(pending.take())
    yield from _nonempty(pending.take())


def _nonempty(data: bytes) -> Iterator[bytes]:
    if data:
        yield data
