"""Time the agreement figures (#26) on a large study: 5000 images x 5 readers + the model, 2000
bootstrap resamples (the page's settings). Pure numpy, no database.

    PYTHONPATH=. .venv/bin/python bench/agreement_bench.py
"""
import time

import numpy as np

from transferapp.studies import agreement


def _study(rng, n, readers, k, agree=0.75):
    truth = rng.integers(0, k, n)
    names = [f"class {j}" for j in range(k)]

    def rater():
        return [names[c] for c in np.where(rng.random(n) < agree, truth, rng.integers(0, k, n))]

    columns = [rater() for _ in range(readers)]
    return agreement.ReadsTable(image_ids=range(n), readers=[f"reader{i}" for i in range(readers)],
                                labels=[list(row) for row in zip(*columns)], model=rater(), adjudicated=[""] * n,
                                classes=names)


def main():
    rng = np.random.default_rng(0)
    for n, readers, k in ((5000, 5, 2), (5000, 5, 5), (5000, 5, 10), (500, 2, 3)):
        table = _study(rng, n, readers, k)
        agreement.compute(table)  # warm-up
        times = []
        for _ in range(5):
            start = time.perf_counter()
            figures = agreement.compute(table)
            times.append(time.perf_counter() - start)
        print(f"{n} images x {readers} readers + model, {k} classes: median {1000 * np.median(times):.0f} ms "
              f"(min {1000 * min(times):.0f}); Fleiss {figures['fleiss_kappa']:.3f}")


if __name__ == "__main__":
    main()
