"""The shared training loop on tiny real torch models with hand-checkable numbers."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from kdserve.core.errors import ConfigError, DataError  # noqa: E402
from kdserve.core.metrics import Metrics, compute_metrics  # noqa: E402
from kdserve.train.loop import LoopConfig, eval_points, run_training  # noqa: E402

LABELS = ("neg", "pos")


def scalar_model(init: float = 0.0) -> torch.nn.Module:
    """One weight w; the recipes below define losses on it directly."""
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(init)
    return model


def scripted_scores(accuracies: Sequence[float]) -> Any:
    """An evaluate function whose k-th pass scores ``accuracies[k]`` (real Metrics on 10 dev rows)."""
    calls = iter(accuracies)

    def evaluate() -> tuple[Metrics, dict[str, float] | None]:
        right = round(next(calls) * 10)
        truth = [1] * 10
        return compute_metrics(truth, [1] * right + [0] * (10 - right), LABELS), None

    return evaluate


def constant_lr(optimizer: torch.optim.Optimizer) -> Any:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def fixed_batches(num: int, size: int = 2) -> Any:
    return lambda epoch: [list(range(b * size, (b + 1) * size)) for b in range(num)]


@pytest.mark.parametrize(
    ("num_batches", "per_epoch", "expected"),
    [
        (100, 1, {100}),
        (100, 4, {25, 50, 75, 100}),
        (10, 3, {3, 7, 10}),
        (2, 5, {1, 2}),  # more passes than batches: one pass per batch at most
        (1, 3, {1}),
    ],
)
def test_eval_points_are_evenly_spaced_and_end_the_epoch(num_batches: int, per_epoch: int, expected: set[int]) -> None:
    assert eval_points(num_batches, per_epoch) == expected


def test_losses_steps_and_history_are_exact() -> None:
    # loss (w - 1)^2 from w = 0, SGD at lr_k = 0.25 (1 - k / 10) after k steps: the error w - 1
    # shrinks by 1 - 2 lr_k = 0.5 + k / 20 a step, so before step k it is -(0.5)(0.55)...(0.5 + (k-1) / 20)
    model = scalar_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.25)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / 10)
    seen_batches: list[tuple[list[int], int]] = []

    def step(batch: Sequence[int], epoch: int) -> torch.Tensor:
        seen_batches.append((list(batch), epoch))
        return (model.weight.sum() - 1.0) ** 2

    result = run_training(
        model,
        optimizer,
        scheduler,
        fixed_batches(3),
        step,
        scripted_scores([0.5, 0.7]),
        lambda: None,
        LoopConfig(epochs=2, max_grad_norm=100.0, name="toy"),
        epoch_fields=lambda epoch: {"alpha": epoch / 10},
    )
    assert seen_batches == [([0, 1], 1), ([2, 3], 1), ([4, 5], 1), ([0, 1], 2), ([2, 3], 2), ([4, 5], 2)]
    errors = [1.0]
    for k in range(6):
        errors.append(errors[-1] * (0.5 + k / 20))
    assert model.weight.item() == pytest.approx(1 - errors[6], abs=1e-7)
    losses = [e**2 for e in errors[:6]]
    first = losses[0]
    for value in losses[1:3]:
        first = 0.98 * first + 0.02 * value
    second = losses[3]
    for value in losses[4:]:
        second = 0.98 * second + 0.02 * value
    history = result.history
    assert [h["epoch"] for h in history] == [1, 2]
    assert [h["alpha"] for h in history] == [0.1, 0.2]
    assert [h["train_loss"] for h in history] == pytest.approx([first, second], abs=1e-7)
    assert [h["lr_at_end"] for h in history] == pytest.approx([0.25 * 0.7, 0.25 * 0.4], abs=1e-12)
    assert [h["validation_accuracy"] for h in history] == [0.5, 0.7]
    assert set(history[0]) == {
        "epoch",
        "alpha",
        "train_loss",
        "epoch_seconds",
        "lr_at_end",
        "train_examples_per_s",
        "validation_accuracy",
        "validation_macro_f1",
    }
    assert all(h["epoch_seconds"] > 0 and h["train_examples_per_s"] > 0 for h in history)
    assert result.train_seconds == pytest.approx(sum(h["epoch_seconds"] for h in history))
    assert [e["at"] for e in result.evaluations] == [1.0, 2.0]


def test_dev_passes_fall_at_evenly_spaced_steps() -> None:
    model = scalar_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    steps = 0
    passes_at: list[int] = []

    def step(batch: Sequence[int], epoch: int) -> torch.Tensor:
        nonlocal steps
        steps += 1
        return model.weight.sum() * 0.0

    scores = scripted_scores([0.1] * 6)

    def evaluate() -> Any:
        passes_at.append(steps)
        return scores()

    result = run_training(
        model,
        optimizer,
        constant_lr(optimizer),
        fixed_batches(10),
        step,
        evaluate,
        lambda: None,
        LoopConfig(epochs=2, max_grad_norm=1.0, evals_per_epoch=3),
    )
    assert passes_at == [3, 7, 10, 13, 17, 20]
    assert [e["at"] for e in result.evaluations] == [0.3, 0.7, 1.0, 1.3, 1.7, 2.0]
    assert len(result.history) == 2


def test_the_best_pass_is_saved_and_kept() -> None:
    # w moves by exactly 1 per step; the save hook snapshots it, so the saved value says which pass won
    model = scalar_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    saved: list[float] = []
    result = run_training(
        model,
        optimizer,
        constant_lr(optimizer),
        fixed_batches(4),
        lambda batch, epoch: -model.weight.sum(),
        scripted_scores([0.4, 0.8, 0.6, 0.8, 0.3, 0.2]),
        lambda: saved.append(model.weight.item()),
        LoopConfig(epochs=3, max_grad_norm=10.0, evals_per_epoch=2),
    )
    assert saved == [2.0, 4.0]  # passes 1 and 2 each beat every earlier one; a tie (pass 4) does not save
    assert result.best["epoch"] == 1 and result.best["at"] == 1.0 and result.best["score"] == 0.8
    assert result.best["metrics"]["accuracy"] == 0.8
    assert [e["validation_accuracy"] for e in result.evaluations] == [0.4, 0.8, 0.6, 0.8, 0.3, 0.2]


def test_macro_f1_can_pick_the_best_pass() -> None:
    model = scalar_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    truth = [0, 0, 0, 0, 1]
    predictions = iter([[1, 1, 1, 1, 1], [0, 0, 0, 0, 0], [0, 0, 0, 1, 1]])  # acc 0.2, 0.8, 0.8

    def evaluate() -> Any:
        return compute_metrics(truth, next(predictions), LABELS), None

    result = run_training(
        model,
        optimizer,
        constant_lr(optimizer),
        fixed_batches(1),
        lambda batch, epoch: model.weight.sum() * 0.0,
        evaluate,
        lambda: None,
        LoopConfig(epochs=3, max_grad_norm=1.0, metric_for_best="macro_f1"),
    )
    assert result.best["epoch"] == 3  # same accuracy as epoch 2, but it finds the positive class


def test_gradients_are_clipped_to_the_configured_norm() -> None:
    # loss 1000 * (w1 + w2): gradient (1000, 1000); clipped to norm 0.5, SGD lr 1 moves w by 0.5 in L2
    model = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    run_training(
        model,
        optimizer,
        constant_lr(optimizer),
        fixed_batches(1),
        lambda batch, epoch: 1000.0 * model.weight.sum(),
        scripted_scores([0.5]),
        lambda: None,
        LoopConfig(epochs=1, max_grad_norm=0.5),
    )
    step = -0.5 / 2**0.5
    assert model.weight.detach().flatten().tolist() == pytest.approx([step, step], abs=1e-6)


def test_clip_params_include_extra_trainable_modules() -> None:
    # a loss-side parameter (like the intermediate-layer projections) shares the clipping budget
    model = scalar_model()
    extra = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([*model.parameters(), extra], lr=1.0)
    run_training(
        model,
        optimizer,
        constant_lr(optimizer),
        fixed_batches(1),
        lambda batch, epoch: 3.0 * model.weight.sum() + 4.0 * extra.sum(),  # gradient norm 5
        scripted_scores([0.5]),
        lambda: None,
        LoopConfig(epochs=1, max_grad_norm=1.0),
        clip_params=[*model.parameters(), extra],
    )
    assert model.weight.item() == pytest.approx(-0.6, abs=1e-6)
    assert extra.item() == pytest.approx(-0.8, abs=1e-6)


def test_hooks_run_after_each_optimizer_step_before_the_scheduler() -> None:
    model = scalar_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    calls: list[tuple[str, float, float]] = []

    def restore() -> None:  # like FixedColumns: undo the step's change to a held-fixed weight
        calls.append(("restore", model.weight.item(), scheduler.get_last_lr()[0]))
        with torch.no_grad():
            model.weight.fill_(0.0)

    def average() -> None:  # like the EMA: must see the restored weights
        calls.append(("average", model.weight.item(), scheduler.get_last_lr()[0]))

    run_training(
        model,
        optimizer,
        scheduler,
        fixed_batches(2),
        lambda batch, epoch: -model.weight.sum(),
        scripted_scores([0.5]),
        lambda: None,
        LoopConfig(epochs=1, max_grad_norm=10.0),
        after_optimizer_step=[restore, average],
    )
    # step 1 at lr 1 moves w to 1, step 2 at lr 1/2 to 0.5; restore undoes each; average sees 0
    assert calls == [("restore", 1.0, 1.0), ("average", 0.0, 1.0), ("restore", 0.5, 0.5), ("average", 0.0, 0.5)]


def test_training_mode_is_back_after_each_dev_pass() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(1, 1), torch.nn.Dropout(0.5))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    modes: list[bool] = []
    scores = scripted_scores([0.5] * 4)

    def step(batch: Sequence[int], epoch: int) -> torch.Tensor:
        modes.append(model.training)
        return model(torch.ones(1, 1)).sum()

    def evaluate() -> Any:
        model.eval()  # as every real evaluation does
        return scores()

    run_training(
        model,
        optimizer,
        constant_lr(optimizer),
        fixed_batches(4),
        step,
        evaluate,
        lambda: None,
        LoopConfig(epochs=1, max_grad_norm=1.0, evals_per_epoch=4),
    )
    assert modes == [True] * 4


def test_batches_are_drawn_at_each_epoch_start_from_the_recipes_rng() -> None:
    # the RNG order the recipes' pinned losses rely on: one draw per epoch, before its first step
    rng = random.Random(3)
    events: list[str] = []

    def plan(epoch: int) -> list[list[int]]:
        events.append(f"draw {epoch}")
        order = list(range(4))
        rng.shuffle(order)
        return [order[:2], order[2:]]

    def step(batch: Sequence[int], epoch: int) -> torch.Tensor:
        events.append(f"step {epoch} {list(batch)}")
        return model.weight.sum() * 0.0

    model = scalar_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    run_training(
        model,
        optimizer,
        constant_lr(optimizer),
        plan,
        step,
        scripted_scores([0.5, 0.5]),
        lambda: None,
        LoopConfig(epochs=2, max_grad_norm=1.0),
    )
    reference = random.Random(3)
    first, second = list(range(4)), list(range(4))
    reference.shuffle(first)
    reference.shuffle(second)
    assert events == [
        "draw 1",
        f"step 1 {first[:2]}",
        f"step 1 {first[2:]}",
        "draw 2",
        f"step 2 {second[:2]}",
        f"step 2 {second[2:]}",
    ]


def test_an_empty_epoch_is_a_clear_error() -> None:
    model = scalar_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(DataError, match="no training batches"):
        run_training(
            model,
            optimizer,
            constant_lr(optimizer),
            lambda epoch: [],
            lambda batch, epoch: model.weight.sum(),
            scripted_scores([0.5]),
            lambda: None,
            LoopConfig(epochs=1, max_grad_norm=1.0),
        )


@pytest.mark.parametrize(
    "knobs",
    [
        {"epochs": 0, "max_grad_norm": 1.0},
        {"epochs": 1, "max_grad_norm": 0.0},
        {"epochs": 1, "max_grad_norm": 1.0, "evals_per_epoch": 0},
    ],
)
def test_loop_config_refuses_bad_knobs(knobs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="need epochs >= 1"):
        LoopConfig(**knobs)


def test_the_recorded_loss_average_is_bit_exact_with_earlier_runs() -> None:
    # 0.98 * 0 + 0.02 * 1 must be 0.02 exactly: weighting by 1 - 0.98 would give 0.020000000000000018
    model = scalar_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    values = iter([0.0, 1.0])
    result = run_training(
        model,
        optimizer,
        constant_lr(optimizer),
        fixed_batches(2),
        lambda batch, epoch: model.weight.sum() * 0.0 + next(values),
        scripted_scores([0.5]),
        lambda: None,
        LoopConfig(epochs=1, max_grad_norm=1.0),
    )
    assert result.history[0]["train_loss"] == 0.02
