"""The bucket mode's scratch cache (transferapp/storage/blobs.py): bounded, but never under a running training."""
import os
import time

from transferapp.storage import blobs


def test_no_image_is_evicted_while_a_training_in_this_scratch_folder_may_still_read_it(settings, tmp_path):
    settings.SCRATCH_DIR, settings.SCRATCH_CACHE_MB = tmp_path, 0  # every byte is over the bound
    image = tmp_path / "media" / "projects" / "1" / "images" / "a.png"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"x" * 1000)
    long_ago = time.time() - 3600  # fetched an hour ago: the epoch loop reads it again and again
    os.utime(image, (long_ago, long_ago))
    busy = tmp_path / "artifacts" / "project-1" / "run-7" / blobs.BUSY
    busy.parent.mkdir(parents=True)
    busy.touch()
    assert blobs.trim() == 0 and image.exists()
    busy.unlink()  # the training ended
    assert blobs.trim() >= 1000 and not image.exists()
