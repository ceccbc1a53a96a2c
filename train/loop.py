"""The one training loop every recipe runs (the teacher fine-tune, each distillation).

A recipe sets up its model, optimizer, scheduler and data, then hands the loop three functions:
how to draw an epoch's batches, the loss of one batch (its *step*), and how to score the dev set.
The loop owns everything between: epochs, iterating the batches, backward, gradient clipping, the
optimizer and scheduler steps, the evenly spaced dev passes, keeping the best weights by
``metric_for_best``, the per-epoch history, logging and the progress bar. Per-step extras that
act on the weights (an exponential moving average, embedding columns held fixed) are hooks run
right after each optimizer step, so a recipe never copies the loop to add one.

The order of operations is part of the contract, so that moving a recipe onto the loop moved none
of its figures: the batches are drawn (consuming the recipe's RNG) at the start of each epoch,
before any step; hooks run between the optimizer and the scheduler step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch

from kdserve.core.errors import ConfigError, DataError
from kdserve.train.common import progress_kwargs

log = logging.getLogger("kdserve.train")

#: Weights of the old value and the new batch's in the displayed and recorded training loss (an
#: exponential moving average over roughly the last 50 steps): a display statistic, not a training
#: knob, so not a config field. Two literals because 1 - 0.98 is 0.020000000000000018 in floats,
#: which would move every recorded ``train_loss`` in its last digit against earlier runs.
LOSS_KEEP, LOSS_NEW = 0.98, 0.02

#: ``epoch -> index batches``: called once at each epoch's start (it may draw from the recipe's RNG).
BatchPlan = Callable[[int], Sequence[Sequence[int]]]
#: ``(batch indices, epoch) -> scalar loss`` of one training batch, with the graph still attached.
StepFn = Callable[[Sequence[int], int], torch.Tensor]


class DevMetrics(Protocol):
    """What a dev pass returns (``kdserve.core.metrics`` scores fit)."""

    accuracy: float
    macro_f1: float

    def to_dict(self) -> dict[str, Any]: ...


#: ``() -> (metrics, extra)``: one dev pass; ``extra`` holds more numbers to record (or None).
EvaluateFn = Callable[[], tuple[DevMetrics, dict[str, float] | None]]


def eval_points(num_batches: int, per_epoch: int) -> set[int]:
    """Batch counts (1-based) after which an epoch of ``num_batches`` batches is evaluated.

    ``per_epoch`` evenly spaced points, the last at the epoch's end; fewer when the epoch has
    fewer batches than points.
    """
    return {max(1, round(num_batches * k / per_epoch)) for k in range(1, per_epoch + 1)}


class DevPasses:
    """The dev-set passes of a run: records each, keeps the best by one metric.

    ``save`` is called whenever a pass beats every earlier one, so the folder always holds the
    best pass's weights; ``log_each`` logs every pass (runs with more than one per epoch).
    """

    def __init__(self, metric: str, save: Callable[[], None], log_each: bool) -> None:
        self.metric = metric
        self.save = save
        self.log_each = log_each
        self.evaluations: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None

    def record(self, epoch: int, at: float, metrics: Any, extra: dict[str, float] | None = None) -> None:
        """One pass ``at`` epochs into training (``epoch`` is the 1-based epoch it falls in).

        ``extra``: more numbers for this pass's entry (kept, never used to pick the best).
        """
        at = round(at, 4)
        self.evaluations.append(
            {
                "at": at,
                "validation_accuracy": metrics.accuracy,
                "validation_macro_f1": metrics.macro_f1,
                **(extra or {}),
            }
        )
        if self.log_each:
            log.info(
                "at epoch %.2f: validation accuracy %.2f%%, macro-F1 %.2f%%%s",
                at,
                metrics.accuracy * 100,
                metrics.macro_f1 * 100,
                "".join(f", {k} {v:.4f}" for k, v in (extra or {}).items()),
            )
        score = getattr(metrics, self.metric)
        if self.best is None or score > self.best["score"]:
            self.best = {"score": score, "epoch": epoch, "at": at, "metrics": metrics.to_dict()}
            self.save()


@dataclass(frozen=True)
class LoopConfig:
    """The knobs the loop reads; each recipe fills them from its own config."""

    epochs: int
    #: gradients are clipped to this global L2 norm before every optimizer step
    max_grad_norm: float
    #: dev passes per epoch, evenly spaced, the last at the epoch's end
    evals_per_epoch: int = 1
    #: which dev metric picks the weights that are saved
    metric_for_best: Literal["accuracy", "macro_f1"] = "accuracy"
    #: progress-bar label, e.g. "teacher" or "bilstm"
    name: str = "train"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.evals_per_epoch < 1 or not self.max_grad_norm > 0:
            raise ConfigError(f"need epochs >= 1, evals_per_epoch >= 1 and max_grad_norm > 0, got {self}")


@dataclass
class LoopResult:
    """What a run leaves behind besides the saved weights."""

    #: one entry per epoch: loss, speed, learning rate and the epoch-end dev scores
    history: list[dict[str, Any]] = field(default_factory=list)
    #: one entry per dev pass (``DevPasses.evaluations``)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    #: the best pass: score, epoch, at, metrics
    best: dict[str, Any] = field(default_factory=dict)
    #: training time, dev passes excluded
    train_seconds: float = 0.0


def run_training(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    batches: BatchPlan,
    step: StepFn,
    evaluate: EvaluateFn,
    save: Callable[[], None],
    config: LoopConfig,
    *,
    clip_params: Iterable[torch.nn.Parameter] | None = None,
    after_optimizer_step: Sequence[Callable[[], None]] = (),
    epoch_fields: Callable[[int], dict[str, Any]] | None = None,
) -> LoopResult:
    """Train ``model`` for ``config.epochs`` epochs; returns the history and the best dev pass.

    ``save`` is called whenever a dev pass beats every earlier one, so the output always holds
    the best weights. ``clip_params``: the parameters whose gradients are clipped (default: the
    model's trainable ones; a recipe with trainable loss modules passes those too).
    ``after_optimizer_step``: hooks run in order after each optimizer step, before the scheduler
    step (restore fixed columns first, then update a weight average, so the average never sees
    the unrestored weights). ``epoch_fields``: extra per-epoch history entries (e.g. alpha).
    """
    clipped = list(clip_params) if clip_params is not None else [p for p in model.parameters() if p.requires_grad]
    passes = DevPasses(config.metric_for_best, save, log_each=config.evals_per_epoch > 1)
    result = LoopResult(evaluations=passes.evaluations)

    for epoch in range(1, config.epochs + 1):
        extra_fields = epoch_fields(epoch) if epoch_fields is not None else {}
        model.train()
        plan = batches(epoch)
        if not plan:
            raise DataError(f"epoch {epoch} has no training batches: the training set is empty")
        points = eval_points(len(plan), config.evals_per_epoch)
        epoch_start, seen, running, eval_seconds = time.perf_counter(), 0, 0.0, 0.0
        metrics: DevMetrics | None = None
        bar = _progress(plan, f"{config.name} epoch {epoch}/{config.epochs}")
        for done, batch_idx in enumerate(bar, start=1):
            loss = step(batch_idx, epoch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(clipped, config.max_grad_norm)
            optimizer.step()
            for hook in after_optimizer_step:
                hook()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            seen += len(batch_idx)
            value = loss.item()
            running = value if done == 1 else LOSS_KEEP * running + LOSS_NEW * value
            rate = seen / max(time.perf_counter() - epoch_start - eval_seconds, 1e-9)
            bar.set_postfix(loss=f"{running:.4f}", ex_per_s=f"{rate:.0f}", refresh=False)
            if done in points:
                eval_start = time.perf_counter()
                metrics, extra = evaluate()
                passes.record(epoch, epoch - 1 + done / len(plan), metrics, extra)
                model.train()  # evaluation switched it to eval mode (dropout off)
                eval_seconds += time.perf_counter() - eval_start
        bar.close()
        assert metrics is not None  # eval_points always includes the epoch's last batch
        epoch_seconds = max(time.perf_counter() - epoch_start - eval_seconds, 1e-9)
        result.train_seconds += epoch_seconds
        result.history.append(
            {
                "epoch": epoch,
                **extra_fields,
                "train_loss": running,
                "epoch_seconds": epoch_seconds,
                "lr_at_end": scheduler.get_last_lr()[0],
                "train_examples_per_s": seen / epoch_seconds,
                "validation_accuracy": metrics.accuracy,
                "validation_macro_f1": metrics.macro_f1,
            }
        )
        log.info(
            "epoch %d: loss %.4f, validation accuracy %.2f%%, macro-F1 %.2f%% (%.0f s, %.0f examples/s)",
            epoch,
            running,
            metrics.accuracy * 100,
            metrics.macro_f1 * 100,
            epoch_seconds,
            seen / epoch_seconds,
        )

    assert passes.best is not None  # epochs >= 1 and every epoch ends with a pass
    result.best = passes.best
    return result


def _progress(plan: Sequence[Sequence[int]], desc: str) -> Any:
    """A tqdm bar over the batches: live on a terminal, throttled in logs (``progress_kwargs``)."""
    from tqdm.auto import tqdm

    return tqdm(plan, desc=desc, unit="batch", **progress_kwargs())
