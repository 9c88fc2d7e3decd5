"""The project map's layout time (#24 item 7): 20,000 synthetic backbone-like feature vectors
(1280-d, non-negative, clustered like pooled EfficientNet features) through the app's own layout
(PCA to 50, openTSNE with FFT gradients, 2 jobs). Prints one JSON object; exits 1 past the limit.

    PYTHONPATH=. .venv/bin/python bench/map_bench.py [--n 20000] [--dims 1280] [--limit 60]
"""
import argparse
import json
import os
import sys
import time

import numpy as np

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "transferapp.settings")
os.environ.setdefault("LOCAL_MODE", "1")


def synthetic_features(n: int, dims: int, clusters: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clustered, non-negative (post-ReLU pooling), each cluster a sparse-ish centre plus noise."""
    rng = np.random.default_rng(seed)
    centres = rng.gamma(0.6, 1.0, size=(clusters, dims)).astype(np.float32)
    labels = rng.integers(0, clusters, size=n)
    noise = rng.gamma(0.6, 0.6, size=(n, dims)).astype(np.float32)
    return np.maximum(centres[labels] * rng.uniform(0.6, 1.4, size=(n, 1)).astype(np.float32) + noise - 0.3, 0), labels


def neighbour_agreement(xy: np.ndarray, labels: np.ndarray, k: int = 10, sample: int = 2000) -> float:
    """Share of each sampled point's k nearest map neighbours in its own cluster (layout quality)."""
    from sklearn.neighbors import NearestNeighbors

    rows = np.random.default_rng(1).choice(len(xy), size=min(sample, len(xy)), replace=False)
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(xy).kneighbors(xy[rows])
    return float((labels[idx[:, 1:]] == labels[rows, None]).mean())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--dims", type=int, default=1280)
    parser.add_argument("--limit", type=float, default=60.0)
    args = parser.parse_args()
    import django

    django.setup()
    from transferapp.labelling.project_map import layout

    features, labels = synthetic_features(args.n, args.dims)
    start = time.perf_counter()
    xy = layout(features)
    seconds = time.perf_counter() - start
    result = {"n": args.n, "dims": args.dims, "seconds": round(seconds, 1), "limit_s": args.limit,
              "cores": os.cpu_count(), "method": "PCA-50 + openTSNE (FFT, n_jobs=2)",
              "neighbour_agreement_k10": round(neighbour_agreement(xy, labels), 3)}
    print(json.dumps(result))
    return 0 if seconds <= args.limit else 1


if __name__ == "__main__":
    sys.exit(main())
