"""Peak memory and time of decoding one image through the web path's check (intake.check_image):
the 16-bit PNG "memory bomb" of issue 30 (6300x6300, a gradient that compresses to ~100 KB), and
an ordinary 12-bit X-ray in a 16-bit PNG for comparison. Each case runs in a fresh process, so its
peak RSS (ru_maxrss) is its own.

    PYTHONPATH=. .venv/bin/python bench/decode_memory.py
"""
import io
import json
import os
import resource
import subprocess
import sys
import time

CASES = {"bomb-16bit-6300": (6300, 6300, 65535), "largest-16bit-allowed-5477": (5477, 5477, 65535),
         "xray-12bit-3000x2500": (3000, 2500, 4095),
         "photo-8bit-rgb-40mp": (7300, 5470, 255)}


def _png(width: int, height: int, high: int) -> bytes:
    import numpy as np
    from PIL import Image
    ramp = (np.arange(width, dtype=np.float64) * high / (width - 1)).astype(np.uint16)
    array = np.broadcast_to(ramp, (height, width))
    if high == 255:
        image = Image.fromarray(np.ascontiguousarray(np.stack([array.astype(np.uint8)] * 3, axis=-1)), "RGB")
    else:
        image = Image.fromarray(np.ascontiguousarray(array))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _one(case: str, path: str) -> dict:
    import tempfile
    os.environ.setdefault("LOCAL_MODE", "1")
    os.environ.setdefault("DATA_DIR", tempfile.mkdtemp(prefix="decode-bench-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "transferapp.settings")
    import django
    django.setup()
    from django.conf import settings

    from transferapp.library import intake
    with open(path, "rb") as f:
        data = f.read()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    try:
        intake.check_image(data, max_bytes=10**9, max_pixels=settings.MAX_IMAGE_PIXELS)
        outcome = "accepted"
    except intake.ImageRejected as exc:
        outcome = f"refused: {exc}"
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"case": case, "file_kb": round(len(data) / 1024), "seconds": round(seconds, 2),
            "peak_rss_increase_mb": round((after - before) / 1024), "outcome": outcome[:120]}


if __name__ == "__main__":
    if len(sys.argv) > 1:
        print(json.dumps(_one(sys.argv[1], sys.argv[2])))
    else:  # the files are made here, so that making them does not count in the decoding process's peak
        import tempfile
        folder = tempfile.mkdtemp(prefix="decode-bench-files-")
        for case, size in CASES.items():
            path = os.path.join(folder, case + ".png")
            with open(path, "wb") as f:
                f.write(_png(*size))
            print(subprocess.run([sys.executable, __file__, case, path], capture_output=True, text=True, check=True).stdout.strip())
