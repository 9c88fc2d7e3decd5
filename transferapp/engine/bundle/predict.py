"""Predict with this exported model: Pillow, numpy and onnxruntime only (no PyTorch, no server).

    python predict.py photo1.jpg photo2.png      # one JSON object per image, as the app's API answers
    python predict.py --selftest                 # recompute samples/ and compare with the app's numbers

The preprocessing below reproduces the app's own (decode, upright, transparency onto white, resize
of the shorter side with the model's interpolation, centre crop); model.onnx does the rest
(uint8 NCHW pixels in, normalisation, mirror averaging when the model uses it, softmax out, and the
features the network saw). "Don't know" as the app says it: `abstained` when the prediction set at
the exported risk level holds 2+ labels, or when the image is unlike the training images
(`unfamiliar`: its features are farther from their nearest training images in novelty_bank.npy
than the threshold in config.json); `top` is then only the closest class.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

HERE = Path(__file__).resolve().parent
TOLERANCE = 1e-4  # largest difference in any probability the self-test accepts


def load_config():
    return json.loads((HERE / "config.json").read_text()), json.loads((HERE / "labels.json").read_text())


def to_rgb(img):
    img = ImageOps.exif_transpose(img)
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "P", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def preprocess(path, prep):
    """The app's eval transform (torchvision Resize + CenterCrop on a PIL image), with Pillow only."""
    with Image.open(path) as opened:
        opened.load()
        img = to_rgb(opened)
    resample = Image.BICUBIC if prep.get("interpolation") == "bicubic" else Image.BILINEAR
    width, height = img.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = prep["resize"], int(prep["resize"] * long / short)
    size = (new_short, new_long) if width <= height else (new_long, new_short)
    if size != (width, height):
        img = img.resize(size, resample)
    crop = prep["crop"]
    left, top = int(round((img.width - crop) / 2.0)), int(round((img.height - crop) / 2.0))
    img = img.crop((left, top, left + crop, top + crop))
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)  # HWC -> CHW


def describe(name, probs, labels, config, unfamiliar=False):
    order = np.argsort(-probs, kind="stable")
    ranked = [{"label": labels[i], "probability": float(probs[i])} for i in order]
    prediction_set, abstained = prediction_set_for(ranked, config.get("thresholds"))
    if unfamiliar:  # unlike the training images: no class is offered, as the app answers
        prediction_set, abstained = [], True
    return {"file": name, "model": config["model"], "top": ranked[0], "predictions": ranked,
            "prediction_set": prediction_set, "abstained": abstained, "unfamiliar": bool(unfamiliar)}


def load_novelty(config):
    """(bank, k, threshold) of the app's novelty rule, or None for a bundle without one."""
    rule = config.get("novelty")
    if not rule:
        return None
    bank = np.load(HERE / rule["bank"], allow_pickle=False).astype(np.float32)
    return bank, int(rule["k"]), float(rule["threshold"])


def novelty_of(features, rule):
    """(unfamiliar, distance) per image: the mean cosine distance of its normalised features to the
    k nearest bank rows (the bank is normalised), as the app computes it."""
    bank, k, threshold = rule
    query = features.astype(np.float32)
    query = query / np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-8)
    k = max(1, min(k, bank.shape[0]))
    nearest = -np.sort(-(query @ bank.T), axis=1)[:, :k]
    distance = (1.0 - nearest).mean(1)
    return distance > threshold, distance


def prediction_set_for(ranked, thresholds):
    """The labels the model cannot rule out at the exported risk level (1 - p <= q, as the app's
    conformal sets), never empty; without calibration, the top label alone."""
    if thresholds and "q" in thresholds:
        chosen = [r["label"] for r in ranked if 1.0 - r["probability"] <= thresholds["q"] + 1e-12] or [ranked[0]["label"]]
        return chosen, len(chosen) != 1
    return [ranked[0]["label"]], False


def predict(paths, session, config, labels, batch_size=16):
    results, rule = [], load_novelty(config)
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        batch = np.stack([preprocess(p, config["preprocessing"]) for p in chunk])
        probs, features = session.run(["probabilities", "features"], {"pixels": batch})
        unfamiliar = novelty_of(features, rule)[0] if rule is not None else [False] * len(chunk)
        results += [describe(Path(p).name, row, labels, config, bool(u)) for p, row, u in zip(chunk, probs, unfamiliar)]
    return results


def selftest(session, config, labels) -> int:
    expected = json.loads((HERE / "samples.json").read_text())
    paths = [str(HERE / "samples" / row["file"]) for row in expected]
    got = predict(paths, session, config, labels)
    worst, wrong, answers = 0.0, [], []
    for row, result in zip(expected, got):
        mine = {p["label"]: p["probability"] for p in result["predictions"]}
        worst = max([worst] + [abs(mine[label] - p) for label, p in row["probabilities"].items()])
        if result["top"]["label"] != row["top"]:
            wrong.append(row["file"])
        # "Don't know" as the app said it (samples.json of older bundles did not record it).
        if "abstained" in row and any(result[key] != row[key] for key in ("abstained", "unfamiliar", "prediction_set")):
            answers.append(row["file"])
    ok = not wrong and not answers and worst <= TOLERANCE
    print(json.dumps({"selftest": "passed" if ok else "FAILED", "images": len(expected),
                      "unfamiliar_images": sum(bool(row.get("unfamiliar")) for row in expected),
                      "max_abs_difference": worst, "different_top_label": wrong, "different_answer": answers}))
    return 0 if ok else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="*")
    parser.add_argument("--selftest", action="store_true", help="check this bundle against the app's own predictions")
    args = parser.parse_args(argv)
    config, labels = load_config()
    options = ort.SessionOptions()
    session = ort.InferenceSession(str(HERE / "model.onnx"), options, providers=["CPUExecutionProvider"])
    if args.selftest:
        return selftest(session, config, labels)
    if not args.images:
        parser.error("name one or more image files (or --selftest)")
    for result in predict(args.images, session, config, labels):
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
