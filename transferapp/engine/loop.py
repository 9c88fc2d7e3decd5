"""One epoch of training and one evaluation pass (torchvision references' train_one_epoch / evaluate)."""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F


def evaluate(model, loader, *, start=0) -> np.ndarray:
    """Probabilities for `loader`'s (activations, mirrored activations) batches, the model run from
    body stage `start` on (validation's frozen activations are computed once): the same numbers
    Classifier.predict_proba gives on the images."""
    with torch.inference_mode():
        probs = []
        for a, a_flip in loader:
            p = torch.softmax(model(a, start=start), -1)
            if model.flip_tta:
                p = (p + torch.softmax(model(a_flip, start=start), -1)) / 2
            probs.append(p.cpu())
        return torch.cat(probs).numpy()


def train_one_epoch(model, optimizer, loader, *, start, scheduler, scaler, ema, class_weights, on_batch) -> dict | None:
    """One pass over `loader` ((activations, labels) batches) training the model from body stage
    `start` on, with label smoothing and class-balanced weights; the scheduler steps per batch and
    the EMA follows. on_batch(images seen, seconds this batch took) returning False stops the epoch
    (None)."""
    losses, probs, labels, seen = [], [], [], 0
    batch_t0 = time.perf_counter()
    for acts, y in loader:
        logits = model(acts, start=start)
        loss = F.cross_entropy(logits, y, weight=class_weights, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()  # a disabled scaler (CPU, bf16) passes straight through
        scaler.step(optimizer)
        scaler.update()
        ema.update()
        if scheduler.last_epoch + 1 < scheduler.total_steps:
            scheduler.step()
        losses.append(loss.item() * len(y))
        probs.append(torch.softmax(logits.detach().float(), -1).cpu())
        labels.append(y.cpu())
        seen += len(y)
        if not on_batch(seen, time.perf_counter() - batch_t0):
            return None
        batch_t0 = time.perf_counter()
    if not seen:
        return None
    return {"loss": sum(losses) / seen, "probs": torch.cat(probs).numpy(), "labels": torch.cat(labels).numpy()}
