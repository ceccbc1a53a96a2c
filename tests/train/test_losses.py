"""Exact-value tests for train/losses.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from kdserve.train.losses import (
    ConstantAlpha,
    EasyToHardAlpha,
    HiddenStateLoss,
    LinearAlpha,
    attention_loss,
    distillation_loss,
    hard_loss,
    logit_mse,
    make_alpha_schedule,
    soft_loss,
    uniform_layer_map,
)

S = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
T_ = torch.tensor([[3.0, 2.0, 1.0]], dtype=torch.float64)

# Computed once with the math module: p_t, p_s are each other's reverse, so
# KL(p_t || p_s) at T=2 is (e^1.5 - e^0.5) / (e^1.5 + e + e^0.5).
KL_T2_UNSCALED = 0.32015666782980645
KL_T2_SCALED = 1.2806266713192258  # 4 * the above
CE_T2_SCALED = 5.361392018226551  # 4 * -sum p_t log p_s
KL_T1 = 1.150420765208883


def manual_kl(s: torch.Tensor, t: torch.Tensor, temp: float) -> torch.Tensor:
    p_t = torch.softmax(t / temp, dim=-1)
    p_s = torch.softmax(s / temp, dim=-1)
    return (p_t * (p_t.log() - p_s.log())).sum(-1).mean()


def batch(seed: int = 0, b: int = 5, c: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, c, generator=g, dtype=torch.float64)
    t = torch.randn(b, c, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, c, (b,), generator=g)
    return s, t, y


# --- soft / hard / mse -------------------------------------------------------------------


def test_closed_form_literal_is_right() -> None:
    e = math.exp
    assert KL_T2_UNSCALED == pytest.approx((e(1.5) - e(0.5)) / (e(1.5) + e(1) + e(0.5)), abs=1e-15)


def test_soft_kl_is_t_squared_times_manual_kl() -> None:
    got = soft_loss(S, T_, temperature=2.0)
    assert_close(got, 4 * manual_kl(S, T_, 2.0))
    assert got.item() == pytest.approx(KL_T2_SCALED, abs=1e-12)
    assert soft_loss(S, T_, temperature=1.0).item() == pytest.approx(KL_T1, abs=1e-12)


def test_soft_ce_literal_and_equals_kl_plus_teacher_entropy() -> None:
    got = soft_loss(S, T_, temperature=2.0, kind="ce")
    assert got.item() == pytest.approx(CE_T2_SCALED, abs=1e-12)
    p_t = torch.softmax(T_ / 2, -1)
    entropy = -(p_t * p_t.log()).sum()
    assert_close(got, soft_loss(S, T_, 2.0, kind="kl") + 4 * entropy)


def test_soft_kl_batchmean_over_rows() -> None:
    s, t, _ = batch()
    per_row = torch.stack([manual_kl(s[i : i + 1], t[i : i + 1], 3.0) for i in range(5)])
    assert_close(soft_loss(s, t, 3.0), 9 * per_row.mean())


def test_soft_zero_for_identical_logits() -> None:
    s, _, _ = batch()
    assert soft_loss(s, s.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("temp", [0.0, -1.0, float("nan"), float("inf")])
def test_soft_rejects_bad_temperature(temp: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        soft_loss(S, T_, temp)


def test_soft_rejects_bad_kind_and_shapes() -> None:
    with pytest.raises(ValueError, match="kind"):
        soft_loss(S, T_, 1.0, kind="js")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        soft_loss(S, T_[:, :2], 1.0)


def test_soft_gradient_finite_nonzero_and_same_for_kl_and_ce() -> None:
    s, t, _ = batch()
    grads = []
    for kind in ("kl", "ce"):
        x = s.clone().requires_grad_(True)
        soft_loss(x, t, 2.0, kind=kind).backward()
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        grads.append(x.grad)
    assert_close(grads[0], grads[1])
    # Gradient is T * (p_s - p_t) / B: T**2 scaling times the 1/T of the softened logits.
    expected = 2.0 * (torch.softmax(s / 2, -1) - torch.softmax(t / 2, -1)) / s.shape[0]
    assert_close(grads[0], expected)


def test_soft_does_not_backprop_into_teacher() -> None:
    s, t, _ = batch()
    t = t.requires_grad_(True)
    soft_loss(s.requires_grad_(True), t, 2.0).backward()
    assert t.grad is None


def test_hard_loss_literal() -> None:
    # log(e + e^2 + e^3) - 3, by hand.
    got = hard_loss(S, torch.tensor([2]))
    assert got.item() == pytest.approx(0.40760596444438013, abs=1e-12)


def test_logit_mse_literal() -> None:
    s = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert logit_mse(s, torch.zeros(2, 2)).item() == 7.5
    assert_close(logit_mse(S, T_), torch.tensor(8 / 3, dtype=torch.float64))


# --- distillation_loss --------------------------------------------------------------------


@pytest.mark.parametrize("soft", ["kl", "ce", "mse"])
def test_alpha_one_is_exactly_cross_entropy(soft: str) -> None:
    s, t, y = batch()
    expected = F.cross_entropy(s, y)
    assert torch.equal(distillation_loss(s, t, y, 1.0, 2.0, soft), expected)  # type: ignore[arg-type]
    assert torch.equal(distillation_loss(s, None, y, 1.0, 2.0, soft), expected)  # type: ignore[arg-type]


def test_alpha_zero_is_exactly_soft_term() -> None:
    s, t, y = batch()
    assert torch.equal(distillation_loss(s, t, y, 0.0, 3.0, "kl"), soft_loss(s, t, 3.0, "kl"))
    assert torch.equal(distillation_loss(s, t, None, 0.0, 3.0, "ce"), soft_loss(s, t, 3.0, "ce"))
    assert torch.equal(distillation_loss(s, t, None, 0.0, 3.0, "mse"), logit_mse(s, t))


@pytest.mark.parametrize("soft", ["kl", "ce", "mse"])
def test_mixed_alpha_is_convex_combination(soft: str) -> None:
    s, t, y = batch()
    term = logit_mse(s, t) if soft == "mse" else soft_loss(s, t, 2.0, soft)  # type: ignore[arg-type]
    expected = 0.3 * F.cross_entropy(s, y) + 0.7 * term
    assert_close(distillation_loss(s, t, y, 0.3, 2.0, soft), expected)  # type: ignore[arg-type]


def test_mixed_alpha_literal() -> None:
    y = torch.tensor([2])
    got = distillation_loss(S, T_, y, 0.5, 2.0, "kl")
    assert got.item() == pytest.approx(0.5 * 0.40760596444438013 + 0.5 * KL_T2_SCALED, abs=1e-12)


def test_has_label_masks_hard_term() -> None:
    s, t, y = batch(b=6)
    mask = torch.tensor([True, False, True, False, False, True])
    garbage = y.clone()
    garbage[~mask] = -7  # unlabelled rows carry junk labels that must be ignored
    hard = F.cross_entropy(s[mask], y[mask])
    got = distillation_loss(s, t, garbage, 0.4, 2.0, "kl", has_label=mask)
    assert_close(got, 0.4 * hard + 0.6 * soft_loss(s, t, 2.0))
    # Only labelled rows count, so it differs from averaging over the whole batch.
    assert not torch.allclose(hard, F.cross_entropy(s, y))
    assert_close(distillation_loss(s, None, garbage, 1.0, 2.0, "kl", has_label=mask), hard)


def test_has_label_all_true_matches_unmasked() -> None:
    s, t, y = batch()
    mask = torch.ones(5, dtype=torch.bool)
    assert_close(distillation_loss(s, t, y, 0.5, 2.0, "ce", has_label=mask), distillation_loss(s, t, y, 0.5, 2.0, "ce"))


def test_has_label_none_labelled_gives_zero_hard_term_and_backprops() -> None:
    s, t, y = batch()
    s.requires_grad_(True)
    mask = torch.zeros(5, dtype=torch.bool)
    got = distillation_loss(s, t, y, 0.25, 2.0, "kl", has_label=mask)
    assert_close(got, 0.75 * soft_loss(s, t, 2.0))
    only_hard = distillation_loss(s, None, y, 1.0, 2.0, "kl", has_label=mask)
    assert only_hard.item() == 0.0
    only_hard.backward()
    assert s.grad is not None and torch.equal(s.grad, torch.zeros_like(s))


def test_has_label_validation() -> None:
    s, t, y = batch()
    with pytest.raises(ValueError, match="has_label"):
        distillation_loss(s, t, y, 0.5, 2.0, "kl", has_label=torch.ones(5))
    with pytest.raises(ValueError, match="has_label"):
        distillation_loss(s, t, y, 0.5, 2.0, "kl", has_label=torch.ones(4, dtype=torch.bool))


@pytest.mark.parametrize("alpha", [-0.1, 1.1, float("nan")])
def test_alpha_out_of_range(alpha: float) -> None:
    s, t, y = batch()
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(s, t, y, alpha, 2.0, "kl")


def test_missing_inputs_rules() -> None:
    s, t, y = batch()
    with pytest.raises(ValueError, match="labels=None"):
        distillation_loss(s, t, None, 0.5, 2.0, "kl")
    with pytest.raises(ValueError, match="teacher_logits=None"):
        distillation_loss(s, None, y, 0.5, 2.0, "kl")
    with pytest.raises(ValueError, match="teacher_logits=None"):
        distillation_loss(s, None, None, 0.0, 2.0, "kl")
    with pytest.raises(ValueError, match="soft"):
        distillation_loss(s, t, y, 0.5, 2.0, "l1")  # type: ignore[arg-type]


# --- alpha schedules ------------------------------------------------------------------------


def test_easy_to_hard_exact() -> None:
    sched = EasyToHardAlpha()
    got = [sched(i) for i in range(1, 11)]
    assert got == pytest.approx([0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0, 0.0], abs=1e-12)
    assert got[:8] == [0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]  # bit-exact, no 0.7000000000000001
    assert sched(100) == 0.0


def test_constant_alpha() -> None:
    assert [ConstantAlpha(0.5)(i) for i in (1, 2, 50)] == [0.5, 0.5, 0.5]


def test_linear_alpha_endpoints_and_after() -> None:
    sched = LinearAlpha(0.9, 0.0, 5)
    assert sched(1) == 0.9
    assert sched(5) == 0.0
    assert sched(9) == 0.0
    assert sched(3) == pytest.approx(0.45, abs=1e-12)
    assert [LinearAlpha(0.2, 0.6, 3)(i) for i in (1, 2, 3, 4)] == pytest.approx([0.2, 0.4, 0.6, 0.6], abs=1e-12)
    assert LinearAlpha(0.3, 0.7, 1)(1) == 0.7


def test_schedules_are_frozen() -> None:
    with pytest.raises(AttributeError):
        ConstantAlpha(0.5).alpha = 0.1  # type: ignore[misc]


@pytest.mark.parametrize(
    "make",
    [
        lambda: ConstantAlpha(1.5),
        lambda: ConstantAlpha(-0.1),
        lambda: LinearAlpha(0.9, 1.2, 5),
        lambda: LinearAlpha(0.9, 0.0, 0),
    ],
)
def test_schedule_validation(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize("sched", [ConstantAlpha(0.5), EasyToHardAlpha(), LinearAlpha(0.9, 0.0, 5)])
def test_epoch_must_be_one_based(sched) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="1-based"):
        sched(0)


def test_parser_builds_schedules() -> None:
    assert make_alpha_schedule("constant:0.5") == ConstantAlpha(0.5)
    assert make_alpha_schedule("easy-to-hard") == EasyToHardAlpha()
    assert make_alpha_schedule("linear:0.9:0.0:5") == LinearAlpha(0.9, 0.0, 5)
    assert make_alpha_schedule(" Easy-To-Hard ") == EasyToHardAlpha()


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "constant",
        "constant:",
        "constant:abc",
        "constant:1.5",
        "constant:0.5:1",
        "easy-to-hard:3",
        "linear:0.9:0.0",
        "linear:0.9:0.0:5.5",
        "linear:0.9:0.0:0",
        "cosine:0.5",
    ],
)
def test_parser_errors_are_one_line(spec: str) -> None:
    with pytest.raises(ValueError) as info:
        make_alpha_schedule(spec)
    message = str(info.value)
    assert "\n" not in message and "alpha schedule" in message


# --- layer maps, hidden states, attentions ------------------------------------------------------


@pytest.mark.parametrize(
    ("student", "teacher", "expected"),
    [
        (2, 6, [(1, 3), (2, 6)]),
        (3, 12, [(1, 4), (2, 8), (3, 12)]),
        (4, 12, [(1, 3), (2, 6), (3, 9), (4, 12)]),
        (6, 6, [(j, j) for j in range(1, 7)]),
        (4, 6, [(1, 1), (2, 2), (3, 3), (4, 4)]),
        (1, 12, [(1, 12)]),
    ],
)
def test_uniform_layer_map(student: int, teacher: int, expected: list[tuple[int, int]]) -> None:
    assert uniform_layer_map(student, teacher) == expected


@pytest.mark.parametrize(("student", "teacher"), [(0, 6), (7, 6), (-1, 3)])
def test_uniform_layer_map_errors(student: int, teacher: int) -> None:
    with pytest.raises(ValueError):
        uniform_layer_map(student, teacher)


def states(n: int, b: int, length: int, h: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, length, h, generator=g) for _ in range(n)]


MASK = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])


def test_hidden_zero_when_identical_and_same_width() -> None:
    loss = HiddenStateLoss(8, 8, [(0, 0), (1, 2), (2, 4)])
    teacher = states(5, 2, 5, 8, 0)
    student = [teacher[0], teacher[2], teacher[4]]
    assert isinstance(loss.projection, torch.nn.Identity)
    assert list(loss.parameters()) == []
    assert loss(student, teacher, MASK).item() == 0.0
    assert loss(student, teacher, None).item() == 0.0


def test_hidden_value_matches_manual_masked_mse() -> None:
    loss = HiddenStateLoss(4, 4, [(1, 1), (2, 3)])
    s, t = states(3, 2, 5, 4, 1), states(4, 2, 5, 4, 2)
    valid = MASK.bool()
    expected = (F.mse_loss(s[1][valid], t[1][valid]) + F.mse_loss(s[2][valid], t[3][valid])) / 2
    assert_close(loss(s, t, MASK), expected)
    full = (F.mse_loss(s[1], t[1]) + F.mse_loss(s[2], t[3])) / 2
    assert_close(loss(s, t, None), full)


def test_hidden_projection_shape_and_gradients() -> None:
    loss = HiddenStateLoss(4, 6, uniform_layer_map(2, 4))
    assert isinstance(loss.projection, torch.nn.Linear)
    assert loss.projection.weight.shape == (6, 4)
    s = [x.requires_grad_(True) for x in states(3, 2, 5, 4, 3)]
    t = states(5, 2, 5, 6, 4)
    out = loss(s, t, MASK)
    out.backward()
    assert torch.isfinite(out) and out.item() > 0
    assert loss.projection.weight.grad is not None and loss.projection.weight.grad.abs().sum() > 0
    assert s[2].grad is not None and s[2].grad.abs().sum() > 0
    # Padded positions get exactly zero gradient.
    assert torch.equal(s[2].grad[0, 3:], torch.zeros(2, 4))


def test_hidden_padding_does_not_change_loss() -> None:
    loss = HiddenStateLoss(4, 6, [(1, 2), (2, 4)])
    s, t = states(3, 2, 5, 4, 5), states(5, 2, 5, 6, 6)
    before = loss(s, t, MASK)
    s2 = [x.clone() for x in s]
    t2 = [x.clone() for x in t]
    for x in s2 + t2:
        x[0, 3:] = 1e3
    t2[2][0, 4] = float("nan")
    assert torch.equal(loss(s2, t2, MASK), before)
    assert not torch.equal(loss(s2, t2, None), before)


def test_hidden_pkd_normalized_cls() -> None:
    loss = HiddenStateLoss(4, 4, [(1, 2)], normalize=True)
    s, t = states(2, 2, 5, 4, 7), states(3, 2, 5, 4, 8)
    expected = F.mse_loss(F.normalize(s[1][:, 0], dim=-1), F.normalize(t[2][:, 0], dim=-1))
    assert_close(loss(s, t, MASK), expected)
    # Only [CLS] direction matters: rescaling or changing other positions leaves it unchanged.
    s2 = [x.clone() for x in s]
    s2[1][:, 0] *= 5.0
    s2[1][:, 1:] = 0.0
    assert_close(loss(s2, t, MASK), expected)
    same = [x.clone() for x in t]
    assert loss([same[0], same[2] * 3.0], t, None).item() == pytest.approx(0.0, abs=1e-12)


def test_hidden_shape_errors() -> None:
    loss = HiddenStateLoss(4, 6, [(1, 4)])
    with pytest.raises(ValueError, match="teacher_states"):
        loss(states(2, 2, 5, 4, 0), states(3, 2, 5, 6, 0), MASK)
    with pytest.raises(ValueError, match="expected"):
        loss(states(2, 2, 5, 6, 0), states(5, 2, 5, 6, 0), MASK)
    with pytest.raises(ValueError):
        HiddenStateLoss(4, 4, [])


def attn(n: int, b: int, heads: int, length: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.softmax(torch.randn(b, heads, length, length, generator=g), -1) for _ in range(n)]


def test_attention_zero_on_identical() -> None:
    a = attn(4, 2, 3, 5, 0)
    assert attention_loss(a, a, [(1, 1), (2, 2), (3, 3), (4, 4)], MASK).item() == 0.0
    student = [a[1], a[3]]  # layer j is attn[j - 1]
    assert attention_loss(student, a, uniform_layer_map(2, 4), MASK).item() == 0.0


def test_attention_head_mismatch_raises() -> None:
    with pytest.raises(ValueError, match=r"2 heads.*4"):
        attention_loss(attn(1, 2, 2, 5, 0), attn(1, 2, 4, 5, 1), [(1, 1)], MASK)


def test_attention_layer_zero_invalid() -> None:
    a = attn(2, 2, 2, 5, 0)
    with pytest.raises(ValueError, match=">= 1"):
        attention_loss(a, a, [(0, 1)], MASK)


def test_attention_value_and_padding_excluded() -> None:
    s, t = attn(2, 2, 3, 5, 1), attn(2, 2, 3, 5, 2)
    pairs = [(1, 1), (2, 2)]
    valid = (MASK.bool()[:, :, None] & MASK.bool()[:, None, :])[:, None].expand(2, 3, 5, 5)
    expected = sum(F.mse_loss(s[i][valid], t[i][valid]) for i in range(2)) / 2
    got = attention_loss(s, t, pairs, MASK)
    assert_close(got, expected)
    # Perturb padded query rows and padded key columns of example 0 in both inputs.
    s2, t2 = [x.clone() for x in s], [x.clone() for x in t]
    for x in s2 + t2:
        x[0, :, 3:, :] = 7.0
        x[0, :, :, 3:] = -7.0
    assert torch.equal(attention_loss(s2, t2, pairs, MASK), got)
    assert not torch.equal(attention_loss(s2, t2, pairs, None), got)
    assert_close(attention_loss(s, t, pairs, None), sum(F.mse_loss(s[i], t[i]) for i in range(2)) / 2)


def test_attention_gradient_flows_to_student_only() -> None:
    s = [x.requires_grad_(True) for x in attn(1, 2, 2, 5, 3)]
    t = [x.requires_grad_(True) for x in attn(1, 2, 2, 5, 4)]
    attention_loss(s, t, [(1, 1)], MASK).backward()
    assert s[0].grad is not None and s[0].grad.abs().sum() > 0
    assert t[0].grad is None
