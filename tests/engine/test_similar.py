"""Similar cases (issue 24, item 6): the engine ranks its bank of training features by cosine
similarity and knows which training image each row is."""
import numpy as np

from transferapp.engine import calibrate as cal
from transferapp.engine.predict import Trust


def test_most_similar_ranks_bank_rows_by_cosine_similarity_and_never_passes_one():
    rng = np.random.default_rng(0)
    bank = cal.normalise(rng.normal(size=(50, 16))).astype(np.float16)
    query = np.asarray(bank[[7, 30]], dtype=np.float32) * 3  # copies of two rows, not normalised
    rows, sims = cal.most_similar(cal.normalise(query), np.asarray(bank, dtype=np.float32), 5)
    assert rows[:, 0].tolist() == [7, 30] and np.all(sims <= 1.0) and np.all(sims[:, 0] > 0.999)
    assert np.all(np.diff(sims, axis=1) <= 0)
    expected = np.sort(cal.normalise(query) @ np.asarray(bank, dtype=np.float32).T, axis=1)[:, ::-1][:, :5]
    assert np.allclose(sims, np.clip(expected, -1, 1), atol=1e-6)
    rows, sims = cal.most_similar(cal.normalise(query), np.asarray(bank[:3], dtype=np.float32), 10)  # k past the bank
    assert rows.shape == (2, 3) and sorted(rows[1].tolist()) == [0, 1, 2]


def test_the_calibration_keeps_which_image_and_label_each_bank_row_is():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 20)
    features = rng.normal(size=(40, 8)) + labels[:, None] * 2.0
    keys = [str(100 + i) for i in range(40)]
    _, arrays = cal.calibrate(dev_features=features, dev_labels=labels, dev_keys=keys, oof_features=features, C=1.0,
                              n_classes=2, finetuned=False, temperature=1.0, val_probs=None, val_labels=np.zeros(0),
                              eval_probs=None, eval_labels=np.zeros(0))
    assert arrays["bank_keys"].tolist() == keys and arrays["bank_labels"].tolist() == labels.tolist()
    trust = Trust({}, arrays)
    ((key, label, similarity), *_), = trust.similar(features[[25]], 3)
    assert (key, label) == ("125", 1) and similarity > 0.999
    rows = cal.bank_rows(np.repeat([0, 1], 3000), limit=cal.MAX_BANK)  # a larger project keeps a sample
    assert len(rows) == cal.MAX_BANK and np.all(np.diff(rows) > 0)


def test_a_bank_without_keys_gives_no_similar_cases():
    arrays = {"scores": np.zeros(3), "bank": cal.normalise(np.eye(4)).astype(np.float16)}
    assert Trust({}, arrays).similar(np.eye(4)[:2], 3) == [[], []]
    assert Trust({}, {**arrays, "bank_keys": np.array(["1", "2"])}).bank_keys is None  # rows it does not match
