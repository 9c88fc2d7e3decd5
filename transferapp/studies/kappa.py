"""Agreement statistics on a reads table, in plain numpy (no Django): Cohen's and Fleiss' kappa,
specific agreement per class, and percentile bootstrap intervals that resample images.

A reads table is an int array `codes` of shape (images, raters): the class index each rater gave
each image, MISSING (-1) where that rater did not read it.

Why the bootstrap is fast: resampling m images with replacement only changes how many times each
*kind* of image (its row of labels, a "pattern") is drawn, and those counts follow a multinomial
law over the distinct patterns with their observed shares. Drawing the counts directly is the same
bootstrap, exactly, and costs resamples x patterns instead of resamples x images.
"""
import numpy as np

MISSING = -1
RESAMPLES = 2000
SEED = 20260  # fixed: the page shows the same interval on every visit
LEVEL = 0.95


def _patterns(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows and how many times each occurs."""
    return np.unique(rows, axis=0, return_counts=True)


def _weights(counts: np.ndarray, resamples: int, rng) -> np.ndarray:
    """(resamples + 1, patterns): row 0 is the data as observed, the others bootstrap draws."""
    n = int(counts.sum())
    draws = rng.multinomial(n, counts / n, size=resamples)
    return np.vstack([counts[None, :], draws]).astype(float)


def _interval(replicates: np.ndarray) -> list[float] | None:
    """The percentile interval of the defined replicates (a resample with no spread of classes has
    no kappa and is left out); None when too few are defined to trust it."""
    good = replicates[np.isfinite(replicates)]
    if good.size < 0.9 * replicates.size or good.size < 10:
        return None
    tail = (1 - LEVEL) / 2 * 100
    lo, hi = np.percentile(good, [tail, 100 - tail])
    return [float(lo), float(hi)]


# --- Cohen's kappa (two raters) ---------------------------------------------------------------------

def _cohen_from_tables(tables: np.ndarray) -> np.ndarray:
    """Cohen (1960) kappa of each (K, K) table in a (..., K, K) stack; NaN where chance agreement is 1
    (both raters gave one and the same class to every image: kappa is undefined)."""
    n = tables.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        observed = np.trace(tables, axis1=-2, axis2=-1) / n
        expected = (tables.sum(axis=-1) * tables.sum(axis=-2)).sum(axis=-1) / n ** 2
        kappa = (observed - expected) / (1 - expected)
    return np.where(np.isclose(expected, 1.0), np.nan, kappa)


def pair_table(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """The (k, k) table of two raters on the images both read: rater a's class in rows, b's in columns."""
    both = (a != MISSING) & (b != MISSING)
    return np.bincount(a[both] * k + b[both], minlength=k * k).reshape(k, k)


def cohen(a: np.ndarray, b: np.ndarray, k: int, *, resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """{"kappa", "interval", "n", "observed" (raw agreement), "problem"}: kappa is None with a
    sentence in "problem" when it cannot be computed."""
    table = pair_table(a, b, k)
    n = int(table.sum())
    if n < 2:
        return {"kappa": None, "interval": None, "n": n, "observed": None,
                "problem": "fewer than 2 images read by both"}
    kappa = float(_cohen_from_tables(table.astype(float)))
    observed = float(np.trace(table) / n)
    if not np.isfinite(kappa):
        return {"kappa": None, "interval": None, "n": n, "observed": observed,
                "problem": "both gave every image the same one class, so agreement by chance is 100% and kappa is undefined"}
    cells = table.ravel()
    kept = np.flatnonzero(cells)
    rng = np.random.default_rng(seed)
    weights = _weights(cells[kept], resamples, rng)[1:]
    full = np.zeros((resamples, k * k))
    full[:, kept] = weights
    replicates = _cohen_from_tables(full.reshape(resamples, k, k))
    return {"kappa": kappa, "interval": _interval(replicates), "n": n, "observed": observed, "problem": ""}


# --- Fleiss' kappa (all raters) ----------------------------------------------------------------------

def category_counts(codes: np.ndarray, k: int) -> np.ndarray:
    """(images, k): how many raters put each image in each class."""
    counts = np.zeros((codes.shape[0], k), dtype=np.int64)
    for column in codes.T:
        read = column != MISSING
        np.add.at(counts, (np.flatnonzero(read), column[read]), 1)
    return counts


def _fleiss_from_weights(weights: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Fleiss (1971) kappa for each row of pattern weights; counts: (patterns, k), every pattern
    with the same number of raters r. NaN where every rating is one class."""
    r = counts.sum(axis=1)[0]
    agreement = ((counts ** 2).sum(axis=1) - r) / (r * (r - 1))  # P_i of each pattern
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_bar = weights @ agreement / total
        shares = weights @ counts / (total * r)[:, None]
        p_e = (shares ** 2).sum(axis=1)
        kappa = (p_bar - p_e) / (1 - p_e)
    return np.where(np.isclose(p_e, 1.0), np.nan, kappa)


def fleiss(counts: np.ndarray, *, resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """Fleiss' kappa of (images, k) category counts, every image rated by the same number (>= 2) of raters."""
    n = counts.shape[0]
    if n < 2:
        return {"kappa": None, "interval": None, "n": n, "problem": "fewer than 2 images were read by every reader"}
    patterns, seen = _patterns(counts)
    weights = _weights(seen, resamples, np.random.default_rng(seed))
    values = _fleiss_from_weights(weights, patterns)
    if not np.isfinite(values[0]):
        return {"kappa": None, "interval": None, "n": n,
                "problem": "every reader gave every image the same one class, so kappa is undefined"}
    return {"kappa": float(values[0]), "interval": _interval(values[1:]), "n": n, "problem": ""}


# --- per class ---------------------------------------------------------------------------------------

def specific_agreement(codes: np.ndarray, k: int) -> list[dict]:
    """Specific agreement per class (Fleiss 1975; Cicchetti & Feinstein 1990; generalised to any
    number of raters per image by Uebersax, "Statistical methods for rater agreement"):
    SA_j = sum_i n_ij (n_ij - 1) / sum_i n_ij (n_i - 1), over images with 2+ reads: of the pairs of
    reads in which one reader said class j, the share where the other said j too. For two raters it is
    2 n_jj / (n_j. + n_.j), the positive agreement. None for a class no reader used."""
    counts = category_counts(codes, k)
    per_image = counts.sum(axis=1)
    counts = counts[per_image >= 2]
    per_image = per_image[per_image >= 2]
    agreeing = (counts * (counts - 1)).sum(axis=0)
    possible = (counts * (per_image[:, None] - 1)).sum(axis=0)
    return [{"agreement": float(agreeing[j] / possible[j]) if possible[j] else None, "reads": int(counts[:, j].sum())}
            for j in range(k)]


# --- majority labels and accuracy --------------------------------------------------------------------

def majority(codes: np.ndarray, k: int) -> np.ndarray:
    """The class most raters gave each image; MISSING where no rater read it or the top classes tie
    (a tie has no majority, so those images are left out of accuracies rather than broken at random)."""
    counts = category_counts(codes, k)
    top = counts.max(axis=1)
    winners = (counts == top[:, None]).sum(axis=1)
    return np.where((top > 0) & (winners == 1), counts.argmax(axis=1), MISSING)


def accuracy(answers: np.ndarray, truth: np.ndarray, *, resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """Share of images where `answers` equals `truth`, over images where both are known, with a
    percentile bootstrap interval (resampling images: a binomial draw of the hits)."""
    both = (answers != MISSING) & (truth != MISSING)
    n, hits = int(both.sum()), int((answers[both] == truth[both]).sum())
    if n == 0:
        return {"accuracy": None, "interval": None, "n": 0, "hits": 0}
    draws = np.random.default_rng(seed).binomial(n, hits / n, size=resamples) / n
    return {"accuracy": hits / n, "interval": _interval(draws), "n": n, "hits": hits}


# --- model against readers, compared with readers against each other ---------------------------------

def kappa_gap(codes: np.ndarray, model: np.ndarray, k: int, *, resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """The model's mean Cohen kappa against the readers minus the readers' mean pairwise kappa, on the
    images every reader and the model answered, with a paired bootstrap interval (the same resampled
    images feed both means, so their correlation is kept). Overlapping separate intervals would not
    show the two are equal; this interval of the difference is what the sentence rests on."""
    both = np.all(codes != MISSING, axis=1) & (model != MISSING)
    rows = np.column_stack([codes[both], model[both]])
    n, raters = rows.shape
    if n < 2:
        return {"difference": None, "interval": None, "n": n, "problem": "fewer than 2 images were read by every reader and the model"}
    patterns, seen = _patterns(rows)
    weights = _weights(seen, resamples, np.random.default_rng(seed))

    def mean_kappa(pairs):
        tables = np.stack([_tables(weights, patterns[:, i], patterns[:, j], k) for i, j in pairs], axis=1)
        return _cohen_from_tables(tables).mean(axis=1)

    readers = raters - 1
    among = mean_kappa([(i, j) for i in range(readers) for j in range(i + 1, readers)])
    against = mean_kappa([(i, readers) for i in range(readers)])
    gap = against - among
    if not np.isfinite(gap[0]):
        return {"difference": None, "interval": None, "n": n, "problem": "a kappa is undefined on these images"}
    return {"difference": float(gap[0]), "interval": _interval(gap[1:]), "n": n, "problem": "",
            "model_mean": float(against[0]), "readers_mean": float(among[0])}


def _tables(weights: np.ndarray, a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """(resamples, k, k) tables of two raters under each row of pattern weights."""
    onehot = np.zeros((a.size, k * k))
    onehot[np.arange(a.size), a * k + b] = 1.0
    return (weights @ onehot).reshape(-1, k, k)
