"""The reference the engine must beat, re-measured on this machine (DESIGN.md, "What good looks like"):
plain timm + scikit-learn on the bundled EfficientNet-Lite0 weights, fp32, 224 px centre crop,
no feature cache, no channels-last.

    .venv/bin/python bench/reference.py DATA_DIR --method linear_probe|finetune

DATA_DIR holds train/ and val/ class folders. Prints one JSON line: {"method", "accuracy", "seconds"}.
- linear_probe: features of every image, then LogisticRegression(max_iter=1000) on train/, scored on val/.
- finetune: all layers, AdamW 3e-4, random resized crop + flip, batch 16, 5 epochs; the best val/
  accuracy over the epochs (as the reference reports it) and the seconds for all of it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from transferapp.engine.zoo import _lite0_weights_path, _load_by_key_order  # noqa: E402  (weights only)

MEAN = STD = (0.5, 0.5, 0.5)
EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


class Folder(Dataset):
    def __init__(self, root: Path, classes: list[str], transform):
        self.items = [(p, i) for i, c in enumerate(classes) for p in sorted((root / c).iterdir())
                      if p.suffix.lower() in EXTENSIONS]
        self.transform = transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        with Image.open(path) as im:
            return self.transform(im.convert("RGB")), label


def lite0(num_classes: int) -> torch.nn.Module:
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    _load_by_key_order(net, torch.load(_lite0_weights_path(), map_location="cpu", weights_only=True))
    net.reset_classifier(num_classes)
    return net


def eval_transform():
    return T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224),
                      T.ToTensor(), T.Normalize(MEAN, STD)])


def features(net, loader) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    with torch.inference_mode():
        for x, y in loader:
            xs.append(net(x).numpy())
            ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def linear_probe(data: Path, classes: list[str]) -> float:
    from sklearn.linear_model import LogisticRegression
    net = lite0(0).eval()
    train = DataLoader(Folder(data / "train", classes, eval_transform()), batch_size=32)
    val = DataLoader(Folder(data / "val", classes, eval_transform()), batch_size=32)
    x_train, y_train = features(net, train)
    x_val, y_val = features(net, val)
    clf = LogisticRegression(max_iter=1000).fit(x_train, y_train)
    return float((clf.predict(x_val) == y_val).mean())


def finetune(data: Path, classes: list[str], epochs: int = 5) -> float:
    torch.manual_seed(0)
    augment = T.Compose([T.RandomResizedCrop(224, interpolation=T.InterpolationMode.BICUBIC),
                         T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    train = DataLoader(Folder(data / "train", classes, augment), batch_size=16, shuffle=True)
    val = DataLoader(Folder(data / "val", classes, eval_transform()), batch_size=32)
    net = lite0(len(classes))
    opt = torch.optim.AdamW(net.parameters(), lr=3e-4)
    best = 0.0
    for _ in range(epochs):
        net.train()
        for x, y in train:
            loss = torch.nn.functional.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        logits, labels = features(net, val)
        best = max(best, float((logits.argmax(1) == labels).mean()))
    return best


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("data_dir")
    p.add_argument("--method", required=True, choices=["linear_probe", "finetune"])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = Path(args.data_dir)
    classes = sorted(d.name for d in (data / "train").iterdir() if d.is_dir())
    started = time.perf_counter()
    accuracy = (linear_probe if args.method == "linear_probe" else finetune)(data, classes)
    print(json.dumps({"method": args.method, "accuracy": round(accuracy, 4),
                      "seconds": round(time.perf_counter() - started, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
