"""Agreement statistics on a reads table, in plain numpy (no Django): Cohen's and Fleiss' kappa,
specific agreement per class, and percentile bootstrap intervals that resample images.

A reads table is an int array `codes` of shape (images, raters): the class index each rater gave
each image, MISSING (-1) where that rater did not read it.

Why the bootstrap is fast: resampling images with replacement only changes how many times each
*kind* of image (its row of labels, a "pattern") is drawn. `Resampled` draws those counts once for
the whole table (a multinomial over the distinct patterns when they are few, else image draws
counted per pattern: the same bootstrap either way), and every figure is then a weighted sum over
patterns, one matrix product for all resamples. All the figures of a study come from the same
resampled images, and a pair's kappa needs only its agreeing share and each rater's class shares.
"""
import numpy as np

MISSING = -1
RESAMPLES = 2000
SEED = 20260  # fixed: the page shows the same interval on every visit
LEVEL = 0.95
MULTINOMIAL_UP_TO = 200  # patterns; above, images are drawn (see _weights)
CHUNK = 250  # resamples drawn at once when drawing images: bounds the memory to CHUNK x images


def _patterns(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows and how many times each occurs."""
    return np.unique(rows, axis=0, return_counts=True)


def _weights(counts: np.ndarray, resamples: int, rng) -> np.ndarray:
    """(resamples + 1, patterns) float32 (it holds every count exactly): row 0 is the data as
    observed, the others bootstrap draws. With few patterns the counts are drawn as one multinomial
    each; with many (numpy's multinomial walks every pattern in turn) the images themselves are drawn
    and counted per pattern, which is the same bootstrap."""
    n, patterns = int(counts.sum()), counts.size
    weights = np.empty((resamples + 1, patterns), dtype=np.float32)
    weights[0] = counts
    if patterns <= MULTINOMIAL_UP_TO:
        weights[1:] = rng.multinomial(n, counts / n, size=resamples)
        return weights
    pattern_of_image = np.repeat(np.arange(patterns), counts)
    for start in range(0, resamples, CHUNK):
        rows = min(CHUNK, resamples - start)
        picked = pattern_of_image[rng.integers(0, n, size=(rows, n))] + patterns * np.arange(rows)[:, None]
        weights[1 + start:1 + start + rows] = np.bincount(picked.ravel(), minlength=rows * patterns).reshape(rows, patterns)
    return weights


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


def _kappa(observed: np.ndarray, expected: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(np.isclose(expected, 1.0), np.nan, (observed - expected) / (1 - expected))


def pair_table(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """The (k, k) table of two raters on the images both read: rater a's class in rows, b's in columns."""
    both = (a != MISSING) & (b != MISSING)
    return np.bincount(a[both] * k + b[both], minlength=k * k).reshape(k, k)


class Resampled:
    """A reads table (images, raters) and one shared bootstrap of its images (row 0: as observed).
    Every sum the pair kappas and the model comparison need is taken in one matrix product over the
    resamples (the weights are read from memory once, which is what costs), in __init__."""

    def __init__(self, codes: np.ndarray, k: int, *, resamples: int = RESAMPLES, seed: int = SEED):
        self.codes, self.k = codes, k
        self.patterns, seen = _patterns(codes) if len(codes) else (codes, np.zeros(0, dtype=np.int64))
        self.weights = (_weights(seen, resamples, np.random.default_rng(seed)) if seen.size
                        else np.zeros((resamples + 1, 0), dtype=np.float32))
        self._at: dict = {}
        blocks: list[np.ndarray] = []
        raters = list(range(codes.shape[1]))
        every = (np.all(self.patterns != MISSING, axis=1) if len(self.patterns) else np.zeros(0, bool))
        for i, j in _pairs_of(raters):
            both = (self.patterns[:, i] != MISSING) & (self.patterns[:, j] != MISSING)
            self._add(blocks, ("pair", i, j), np.column_stack([both, both & (self.patterns[:, i] == self.patterns[:, j]),
                                                              every & (self.patterns[:, i] == self.patterns[:, j])]))
            for rater in (i, j):
                self._add(blocks, ("shares", rater, both.tobytes()), self._onehot(rater, both))
        self._add(blocks, ("every",), every[:, None])
        for rater in raters:
            self._add(blocks, ("shares", rater, every.tobytes()), self._onehot(rater, every))
        columns = np.hstack(blocks).astype(np.float32) if blocks else np.zeros((len(self.patterns), 0), np.float32)
        self._sums = (self.weights @ columns).astype(np.float64)

    def _add(self, blocks: list, key, block: np.ndarray) -> None:
        if key not in self._at:
            start = sum(b.shape[1] for b in blocks)
            self._at[key] = slice(start, start + block.shape[1])
            blocks.append(block)

    def _summed(self, *key) -> np.ndarray:
        return self._sums[:, self._at[key]]

    def _onehot(self, rater: int, mask: np.ndarray) -> np.ndarray:
        return np.eye(self.k + 1)[self.patterns[:, rater], :self.k] * mask[:, None]  # MISSING (-1) hits the dropped column

    def _shares(self, rater: int, mask: np.ndarray, total: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self._summed("shares", rater, mask.tobytes()) / total[:, None]

    def pair_replicates(self, i: int, j: int) -> np.ndarray:
        """Cohen's kappa of raters i and j in each resample, on the images both read there."""
        i, j = min(i, j), max(i, j)
        both = (self.patterns[:, i] != MISSING) & (self.patterns[:, j] != MISSING)
        sums = self._summed("pair", i, j)
        with np.errstate(invalid="ignore", divide="ignore"):
            observed = sums[:, 1] / sums[:, 0]
        expected = (self._shares(i, both, sums[:, 0]) * self._shares(j, both, sums[:, 0])).sum(axis=1)
        return _kappa(observed, expected)

    def cohen(self, i: int, j: int) -> dict:
        """{"kappa", "interval", "n", "observed" (raw agreement), "problem"}: kappa is None with a
        sentence in "problem" when it cannot be computed. The value itself is from the integer table
        (exact); the interval from the shared resamples."""
        table = pair_table(self.codes[:, i], self.codes[:, j], self.k)
        n = int(table.sum())
        if n < 2:
            return {"kappa": None, "interval": None, "n": n, "observed": None,
                    "problem": "fewer than 2 images read by both"}
        kappa = float(_cohen_from_tables(table.astype(float)))
        observed = float(np.trace(table) / n)
        if not np.isfinite(kappa):
            return {"kappa": None, "interval": None, "n": n, "observed": observed,
                    "problem": "both gave every image the same one class, so agreement by chance is 100% and kappa is undefined"}
        return {"kappa": kappa, "interval": _interval(self.pair_replicates(i, j)[1:]), "n": n, "observed": observed,
                "problem": ""}

    def fleiss(self, raters: list[int]) -> dict:
        """Fleiss' kappa of the given raters on the images every one of them read."""
        every = np.all(self.patterns[:, raters] != MISSING, axis=1) if len(self.patterns) else np.zeros(0, bool)
        n = int(np.all(self.codes[:, raters] != MISSING, axis=1).sum()) if len(self.codes) else 0
        if n < 2:
            return {"kappa": None, "interval": None, "n": n, "problem": "fewer than 2 images were read by every reader"}
        counts = category_counts(self.patterns[:, raters], self.k) * every[:, None]
        r = len(raters)
        columns = np.column_stack([every, ((counts ** 2).sum(axis=1) - r) / (r * (r - 1)) * every, counts])
        sums = (self.weights @ columns.astype(np.float32)).astype(np.float64)
        sums[0] = self.weights[0].astype(np.float64) @ columns  # the value itself in full precision
        with np.errstate(invalid="ignore", divide="ignore"):
            shares = sums[:, 2:] / (sums[:, :1] * r)
            values = _kappa(sums[:, 1] / sums[:, 0], (shares ** 2).sum(axis=1))
        if not np.isfinite(values[0]):
            return {"kappa": None, "interval": None, "n": n,
                    "problem": "every reader gave every image the same one class, so kappa is undefined"}
        return {"kappa": float(values[0]), "interval": _interval(values[1:]), "n": n, "problem": ""}

    def kappa_gap(self) -> dict:
        """The model (the last column) against the readers (the others): its mean Cohen kappa against
        them minus their mean pairwise kappa, on the images every reader and the model answered, with
        a paired bootstrap interval (the same resampled images feed both means, so their correlation
        is kept). Overlapping separate intervals would not show the two are equal; this interval of the
        difference is what the sentence rests on."""
        model = self.codes.shape[1] - 1
        n = int(np.all(self.codes != MISSING, axis=1).sum()) if len(self.codes) else 0
        if n < 2 or model < 2:
            return {"difference": None, "interval": None, "n": n,
                    "problem": "fewer than 2 images were read by every reader and the model"}
        every = np.all(self.patterns != MISSING, axis=1)
        total = self._summed("every")[:, 0]

        def kappa(i, j):
            with np.errstate(invalid="ignore", divide="ignore"):
                observed = self._summed("pair", i, j)[:, 2] / total
            return _kappa(observed, (self._shares(i, every, total) * self._shares(j, every, total)).sum(axis=1))

        among = np.mean([kappa(i, j) for i, j in _pairs_of(list(range(model)))], axis=0)
        against = np.mean([kappa(r, model) for r in range(model)], axis=0)
        gap = against - among
        if not np.isfinite(gap[0]):
            return {"difference": None, "interval": None, "n": n, "problem": "a kappa is undefined on these images"}
        return {"difference": float(gap[0]), "interval": _interval(gap[1:]), "n": n, "problem": "",
                "model_mean": float(against[0]), "readers_mean": float(among[0])}


def _pairs_of(raters: list[int]) -> list[tuple[int, int]]:
    return [(a, b) for x, a in enumerate(raters) for b in raters[x + 1:]]


def cohen(a: np.ndarray, b: np.ndarray, k: int, *, resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """Cohen's kappa of two raters with its interval (see Resampled.cohen)."""
    return Resampled(np.column_stack([a, b]), k, resamples=resamples, seed=seed).cohen(0, 1)


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
    return _kappa(p_bar, p_e)


def fleiss(counts: np.ndarray, *, resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """Fleiss' kappa of (images, k) category counts, every image rated by the same number (>= 2) of
    raters (the layout of Fleiss' paper)."""
    n = counts.shape[0]
    if n < 2:
        return {"kappa": None, "interval": None, "n": n, "problem": "fewer than 2 images were read by every reader"}
    patterns, seen = _patterns(counts)
    values = _fleiss_from_weights(_weights(seen, resamples, np.random.default_rng(seed)).astype(np.float64), patterns)
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
