"""Stage 2: fine-tuning the network (frozen or every-layer), with its schedule, EMA and early stopping."""
from __future__ import annotations

import copy
import math
import time

import torch
from torch import nn

from . import loop, payoff, state
from .config import TrainConfig
from .data import Sample, eval_transform, load_rgb, train_transform
from .head import class_weights
from .phases import PLAN_MARGIN, planned_epochs, replan_after_epoch, retrain_estimate_s
from .zoo import Backbone, Classifier, frozen_runner, precision, trains_in_mixed_precision

PATIENCE = 4  # stage-2 epochs that improve neither validation accuracy nor loss before stopping


def finetune(model: Classifier, backbone: Backbone, train, val, y_val, run: state._Run, device, *, top: int,
             quick_val_probs=None) -> dict | None:
    """Train body stages `top` on + head, scoring each epoch on validation; returns the best epoch
    ({state, row, val_probs, epoch_s, ...}) or None when not one epoch fitted in the time budget.
    With `quick_val_probs`, stops as soon as the payoff is clearly absent (payoff.py)."""
    run.phases.start("finetune", "Fine-tuning", None)  # priced by its first batches (_Trainer.priced_epoch_fits)
    trainer = _Trainer(model, backbone, train, run=run, device=device, stage="finetune", top=top,
                       progress_span=(run.head_end, run.finetune_end))
    val_acts = _MirroredBatches(trainer.frozen, val, trainer.prep, run.scoring_batch, run)
    if top > 0:  # computed once (see _MirroredBatches)
        val_acts = list(val_acts)
    best, best_loss, stale = None, math.inf, 0
    epoch, losses, stopped_why = 0, [], ""
    while epoch < trainer.shown_epochs:  # the pricing may shorten the plan to what the budget allows
        epoch += 1
        stats = trainer.epoch(epoch)
        if stats is None:
            break  # time budget ran out mid-epoch (or the first epoch could not finish): keep the best finished epoch
        trainer.ema.swap()  # score (and keep) the averaged weights; swap back to keep training the raw ones
        scored_at = time.perf_counter()
        val_probs = loop.evaluate(model, val_acts, start=trainer.top)
        # Re-planned at most once an epoch, from the whole epoch and its scoring, and only when the
        # epochs still planned no longer fit: the plan moves only when it must, and says why.
        why = trainer.replan(trainer.epoch_seconds[-1] + time.perf_counter() - scored_at, epoch)
        row = state.history_row("finetune", epoch, stats["probs"], stats["labels"], val_probs, y_val, stats["loss"])
        run.epoch_done(row, trainer.fraction(epoch), f"Fine-tuning epoch {epoch}/{trainer.shown_epochs}: "
                                                     f"validation accuracy {row['val_accuracy']:.0%}"
                                                     + (f" ({why})" if why else ""),
                       total_epochs=trainer.shown_epochs)
        # Patience counts epochs that improved neither validation accuracy nor loss: on a small
        # validation set accuracy plateaus long before the model stops getting better.
        improved = row["val_loss"] < best_loss
        best_loss = min(best_loss, row["val_loss"])
        if best is None or state.better(row, best["row"]):
            best, improved = {"state": copy.deepcopy(model.state_dict()), "row": row, "val_probs": val_probs}, True
        stale = 0 if improved else stale + 1
        trainer.ema.swap()
        losses.append(row["val_loss"])
        if quick_val_probs is not None:
            stopped_why = payoff.payoff_absent(epoch=epoch, planned=trainer.shown_epochs, quick_probs=quick_val_probs,
                                               tuned_probs=val_probs, y=y_val, val_losses=losses)
        if stopped_why or stale >= PATIENCE or time.perf_counter() > run.deadline:
            break
    epochs_done = len(trainer.epoch_seconds)
    run.phases.finish("finetune", trainer.skip_note or stopped_why or (
        f"{epochs_done} epochs" if epochs_done else "Fine-tuning did not finish an epoch within the time budget."),
        skipped=bool(trainer.skip_note), stopped_early=bool(trainer.skip_note or stopped_why))
    run.later_s = 0.0  # the retrain, if it runs, is priced afresh from the epochs validation chose
    if best is not None:  # the retrain reuses the frozen stages' runner (their weights never change) and the plan
        best.update(epoch_s=trainer.mean_epoch_s, frozen=trainer.frozen, top=top, planned_epochs=trainer.shown_epochs,
                    stopped_why=stopped_why)
    return best


def finetune_fixed(model: Classifier, backbone: Backbone, samples, epochs: int, run: state._Run, *, device,
                   validated: dict) -> dict | None:
    """The `validated` run's recipe (depth, learning-rate plan, frozen runner) for a fixed number of
    epochs with no validation (the retrain on all images); returns the averaged weights, or None
    when the time budget ran out first."""
    trainer = _Trainer(model, backbone, samples, run=run, device=device, stage="refit", top=validated["top"],
                       progress_span=(run.finetune_end, 1.0), shown_epochs=epochs, frozen=validated["frozen"],
                       planned_epochs=validated["planned_epochs"])
    for epoch in range(1, epochs + 1):
        if trainer.epoch(epoch) is None:
            return None
        # Re-priced after every epoch at the pace measured now: stop as soon as it cannot finish,
        # rather than train on until the deadline and throw it all away.
        if trainer.mean_epoch_s * (epochs - epoch) > run.phases.left_s():
            return None
    trainer.ema.swap()
    return {"state": copy.deepcopy(model.state_dict())}


class _Trainer:
    """One stage-2 training of body stages `top` on: the frozen/trained split, optimiser, schedule,
    EMA and augmentation. The schedule spans the planned epochs (config.epochs, or fewer when the
    pace measured shows that no more fit in the budget); a shorter fixed-length retrain gets the same
    plan, so it follows the very learning-rate path its validated twin took up to the same epoch."""

    def __init__(self, model, backbone, samples, *, run, device, stage, top, progress_span, shown_epochs=None,
                 frozen=None, planned_epochs=None):
        config = run.config
        self.model, self.samples, self.run, self.device, self.stage = model, samples, run, device, stage
        self.top = top
        model.to(device=device, memory_format=torch.channels_last)
        groups = freeze_body(model, top, config.layer_lr_decay)
        model.fp32_from, model.flip_tta = self.top, not config.no_mirroring
        model.mixed_trained = trains_in_mixed_precision(device)
        # fp16 gradients underflow without loss scaling; with bf16 or float32 the scaler does nothing.
        self.scaler = torch.amp.GradScaler(device.type, enabled=model.mixed_trained and precision(device) == "fp16")
        self.prep = backbone.preprocessing
        # The frozen stages only ever run forward: the fastest inference engine here runs them.
        crop = self.prep["crop"]
        self.span, self.shown_epochs = progress_span, shown_epochs or config.epochs
        self.frozen = frozen or frozen_runner(model.body[:top], device, (3, crop, crop), len(samples) * self.shown_epochs)
        self.steps_per_epoch = math.ceil(len(samples) / config.batch_size)
        self.opt, self.sched = _optimizer(groups, config, (planned_epochs or config.epochs) * self.steps_per_epoch)
        labels = state.labels(samples)
        self.weights = torch.as_tensor(class_weights(labels, model.head.out_features), dtype=torch.float32).to(device)
        self.transform = train_transform(self.prep, config.augmentation, mirror=not config.no_mirroring)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.ema = _Ema([p for g in groups for p in g["params"]])
        self.epoch_seconds: list[float] = []
        self.skip_note = ""  # set when the pricing showed that not one epoch fits in the budget
        self.priced = stage != "finetune"  # a retrain's plan is its validated twin's

    def priced_epoch_fits(self, batch_s: float, batches_done: int) -> bool:
        """A batch prices the epoch, plans how many fit, and prices the phase (every epoch at that
        pace); fine-tuning whose first epoch cannot finish in the time left stops here, a batch or
        two in, not at the deadline."""
        epoch_s = batch_s * self.steps_per_epoch
        still_to_run_s = batch_s * (self.steps_per_epoch - batches_done)
        if self.stage == "finetune" and still_to_run_s > self.run.phases.left_s():
            self.skip_note = (f"Fine-tuning skipped: one epoch would need ~{epoch_s:.0f} s, "
                              f"{self.run.phases.left_s() + epoch_s - still_to_run_s:.0f} s were left in the time budget.")
            self.run.phases.estimate(self.stage, epoch_s * self.shown_epochs)
            return False
        if self.stage == "finetune":
            self.plan_epochs(epoch_s, self.run.phases.left_s() + epoch_s - still_to_run_s, done=0,
                             spare=1.1 * PLAN_MARGIN)
        self.priced = True
        self.run.phases.estimate(self.stage, epoch_s * self.shown_epochs)
        return True

    def plan_epochs(self, epoch_s: float, left_s: float, done: int, spare: float = 1.1) -> None:
        """As many epochs as fit in the budget, at most config.epochs: the learning rate then decays to
        its end inside the budget instead of being cut off at its height. Planned once from a batch's
        pace (10% spare for scoring validation images, and PLAN_MARGIN: the pace of a batch or two on
        a busy machine is optimistic), then only when a whole epoch shows the plan cannot finish
        (replan). A plan only ever shrinks: growing it once the decay has begun would raise the
        learning rate again, and move the progress bar back."""
        config = self.run.config
        n_all = len(self.samples) + self.run.n_val
        retrain = config.refit and config.refit_finetuned  # it runs as many epochs again, on every image
        cost = epoch_s * (1 + n_all / len(self.samples) if retrain else 1)
        self.shown_epochs = planned_epochs(planned=self.shown_epochs, done=done, epoch_s=cost, left_s=left_s,
                                           margin=spare)
        self.sched.plan(self.shown_epochs * self.steps_per_epoch)
        if retrain:
            self.run.later_s = retrain_estimate_s(epoch_s, len(self.samples), n_all, self.shown_epochs)

    def replan(self, epoch_s: float, done: int) -> str:
        """After a whole epoch (its scoring included): the plan shortened when it can no longer finish,
        and why in words; "" when it stands."""
        config = self.run.config
        n_all = len(self.samples) + self.run.n_val
        retrain = config.refit and config.refit_finetuned
        cost = epoch_s * (1 + n_all / len(self.samples) if retrain else 1)
        self.shown_epochs, why = replan_after_epoch(planned=self.shown_epochs, done=done, epoch_s=cost,
                                                    left_s=self.run.phases.left_s())
        if why:
            self.sched.plan(self.shown_epochs * self.steps_per_epoch)
            self.run.phases.replan(self.stage, self.run.phases.spent(self.stage) + epoch_s * (self.shown_epochs - done))
            if retrain:
                self.run.later_s = retrain_estimate_s(epoch_s, len(self.samples), n_all, self.shown_epochs)
        return why

    @property
    def mean_epoch_s(self) -> float:
        return sum(self.epoch_seconds) / max(1, len(self.epoch_seconds))

    def fraction(self, epochs_done: float) -> float:
        lo, hi = self.span
        return lo + (hi - lo) * min(1.0, epochs_done / self.shown_epochs)

    def message(self, epoch: int) -> str:
        if self.stage == "refit":
            return f"Retraining on all {len(self.samples)} images: epoch {epoch}/{self.shown_epochs}"
        if not self.priced:  # no plan to show before a batch or two have measured the pace
            return f"Fine-tuning epoch {epoch}: measuring the pace to plan the epochs"
        return f"Fine-tuning epoch {epoch}/{self.shown_epochs}"

    def epoch(self, epoch: int) -> dict | None:
        """One epoch in a fresh random order; None when the time budget ran out (or the pricing
        showed that not one epoch fits)."""
        t0 = time.perf_counter()
        order = torch.randperm(len(self.samples), generator=self.generator).tolist()
        loader = _FrozenBatches(self, [self.samples[i] for i in order])
        _regularise(self.model, self.top, True)
        try:
            stats = loop.train_one_epoch(self.model, self.opt, loader, start=self.top, scheduler=self.sched,
                                    scaler=self.scaler, ema=self.ema,
                                    class_weights=self.weights, on_batch=lambda seen, batch_s: self.batch_done(
                                        epoch, seen, batch_s))
        finally:
            _regularise(self.model, self.top, False)
        if stats is None or loader.out_of_time:
            return None
        self.epoch_seconds.append(time.perf_counter() - t0)
        return stats

    def batch_done(self, epoch: int, seen: int, batch_s: float) -> bool:
        """Progress after each batch; the first epoch's second batch (its only one, in a one-batch
        epoch) also prices the phase (False: stop). Not the very first: it also pays one-off costs
        (kernel selection, memory), and it overpriced fine-tuning every layer five-fold."""
        size = self.run.config.batch_size
        prices = epoch == 1 and (size < seen <= 2 * size or size >= len(self.samples))
        if prices and not self.priced_epoch_fits(batch_s, batches_done=math.ceil(seen / size)):
            return False
        done = epoch - 1 + seen / len(self.samples)
        self.run.report(self.fraction(done), self.stage, self.message(epoch), epoch,
                        self.shown_epochs if self.priced else 0)
        return True


class _FrozenBatches:
    """The training loader: (frozen body activations, labels) per batch of augmented images. The
    frozen stages are part of the input pipeline here: they never train, so they run without
    gradients in the fastest engine available. Stops early, setting out_of_time, at the deadline."""

    def __init__(self, trainer: "_Trainer", samples: list[Sample]):
        self.t, self.samples, self.out_of_time = trainer, samples, False

    def __iter__(self):
        t, bs = self.t, self.t.run.config.batch_size
        for start in range(0, len(self.samples), bs):
            t.run.check_stop()
            if time.perf_counter() > t.run.deadline:
                self.out_of_time = True
                return
            batch = self.samples[start:start + bs]
            with torch.no_grad():
                acts = _activations(t.frozen, load_batch(batch, t.transform, t.prep)).to(t.device)
            yield acts, torch.tensor([s.label for s in batch], device=t.device)


def _optimizer(groups: list[dict], config: TrainConfig, total_steps: int):
    """AdamW on the parameter groups (each with its own learning rate), with a short warm-up then
    cosine decay to zero over `total_steps`."""
    for g in groups:
        g["lr"] = config.lr * g.pop("lr_scale")
    opt = torch.optim.AdamW(groups, lr=config.lr, weight_decay=0.05)
    return opt, _WarmupCosine(opt, total_steps)


class _WarmupCosine(torch.optim.lr_scheduler.LambdaLR):
    """Each group's learning rate rises from 1/25 of its peak over the first 15% of the steps, then
    follows a cosine to zero at the last. `plan` sets the schedule's length once the measured pace has shown
    how many epochs fit in the budget."""

    WARMUP, START = 0.15, 1 / 25

    def __init__(self, optimizer, total_steps: int):
        self.total_steps = max(1, total_steps)
        super().__init__(optimizer, self._factor)

    def plan(self, total_steps: int) -> None:
        self.total_steps = max(1, total_steps)

    def _factor(self, step: int) -> float:
        warmup = max(1, int(self.WARMUP * self.total_steps))
        if step < warmup:
            return self.START + (1 - self.START) * step / warmup
        progress = min(1.0, (step - warmup) / max(1, self.total_steps - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))


class _Ema:
    """Exponential moving average of the trained weights. With a validation set of a hundred
    images, single epochs swing by several points; the average is steadier and generalises better."""

    def __init__(self, params: list[nn.Parameter], decay: float = 0.9):
        self.params, self.decay = params, decay
        self.shadow = [p.detach().clone() for p in params]

    @torch.no_grad()
    def update(self) -> None:
        for s, p in zip(self.shadow, self.params):
            s.lerp_(p.detach(), 1 - self.decay)

    @torch.no_grad()
    def swap(self) -> None:
        for s, p in zip(self.shadow, self.params):
            tmp = p.detach().clone()
            p.copy_(s)
            s.copy_(tmp)


def _regularise(model: Classifier, top: int, active: bool) -> None:
    """Stochastic depth (in the trained stages) and head dropout: on while training, off for scoring."""
    for stage in model.body[top:]:
        for m in stage.modules():
            if type(m).__name__ == "DropPath":
                m.train(active)
    model.dropout.train(active)


def freeze_body(model: Classifier, top: int, layer_lr_decay: float) -> list[dict]:
    """Freeze body stages before `top`; the optimiser groups for the rest, each stage's learning rate
    `layer_lr_decay` times the one above it (discriminative learning rates: the early layers hold
    the most general features), the head's as the last stage's. The scales average 1 over the
    trained stages, so config.lr stays the mean rate whatever the depth: decay redistributes it
    (every layer of EfficientNet-Lite0: the top stage at 1.76 lr, the stem at 0.48 lr)."""
    # BatchNorm stays in eval mode everywhere: batches of a few dozen images would wreck its statistics.
    model.eval()
    last = len(model.body) - 1
    trained = range(top, last + 1)
    mean = sum(layer_lr_decay ** (last - i) for i in trained) / len(trained)
    groups = [{"params": list(model.head.parameters()), "lr_scale": 1 / mean}]
    for i, stage in enumerate(model.body):
        for p in stage.parameters():
            p.requires_grad_(i >= top)
        if i >= top:
            groups.append({"params": list(stage.parameters()), "lr_scale": layer_lr_decay ** (last - i) / mean})
    return groups


def load_batch(samples, transform, prep) -> torch.Tensor:
    return torch.stack([transform(load_rgb(s.path)) for s in samples])


class _MirroredBatches:
    """evaluate()'s loader: the frozen body's output for the validation images and their mirrors,
    batch by batch. finetune() keeps them in memory (`list(...)`) when stages are frozen, computed
    once; with nothing frozen they would be the images themselves (1.2 MB each, with their mirrors),
    so they are read again at each pass."""

    def __init__(self, frozen, samples, prep, batch_size, run):
        self.frozen, self.samples, self.prep, self.batch_size, self.run = frozen, samples, prep, batch_size, run

    def __iter__(self):
        transform = eval_transform(self.prep)
        with torch.inference_mode():
            for start in range(0, len(self.samples), self.batch_size):
                self.run.check_stop()
                x = load_batch(self.samples[start:start + self.batch_size], transform, self.prep)
                yield _activations(self.frozen, x), _activations(self.frozen, torch.flip(x, dims=[3]))


def _activations(frozen, x) -> torch.Tensor:
    return frozen(x).contiguous(memory_format=torch.channels_last)
