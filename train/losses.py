"""Knowledge-distillation losses: logit terms, their mixing weight (alpha), and layer terms.

Shapes: B = batch, C = classes, L = sequence length, H = hidden width, T = temperature.
Teacher tensors are targets and always detached, so a forgotten ``torch.no_grad()`` around the
teacher cannot turn distillation into co-training.

Layer numbering in every ``layer_map``: Transformer layers count from 1. HF hidden-state tuples
(``output_hidden_states=True``) hold the embedding output at index 0, so layer j is
``hidden_states[j]`` and layer 0 means the embeddings; HF ``attentions`` have no embedding entry,
so layer j is ``attentions[j - 1]`` and layer 0 is invalid there.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LayerMap = Sequence[tuple[int, int]]


def _check_logits(student_logits: Tensor, teacher_logits: Tensor) -> None:
    if student_logits.dim() != 2 or student_logits.shape != teacher_logits.shape:
        shapes = f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        raise ValueError(f"expected student and teacher logits of equal shape [B, C], got {shapes}")


def hard_loss(student_logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy against gold labels. student_logits [B, C], labels [B] (long) -> scalar."""
    return F.cross_entropy(student_logits, labels)


def soft_loss(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float, kind: Literal["kl", "ce"] = "kl"
) -> Tensor:
    """Hinton et al. (2015) soft-target loss. Logits [B, C] -> scalar.

    ``kl``: KL(softmax(t/T) || softmax(s/T)) summed over classes, averaged over the batch.
    ``ce``: -sum_c p_t log p_s averaged over the batch; it differs from ``kl`` only by the teacher's
    entropy, a constant, so both give identical gradients.
    Both are multiplied by T**2: softening divides the gradients by about T**2, and undoing that
    keeps the soft term's weight against the hard term meaningful when T changes.
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    _check_logits(student_logits, teacher_logits)
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    if kind == "kl":
        loss = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    elif kind == "ce":
        loss = -(log_p_t.exp() * log_p_s).sum(dim=-1).mean()
    else:
        raise ValueError(f"kind must be 'kl' or 'ce', got {kind!r}")
    return loss * temperature**2


def multi_label_hard_loss(student_logits: Tensor, targets: Tensor) -> Tensor:
    """Binary cross-entropy per category against 0/1 or soft targets in [0, 1] (annotator vote
    shares), averaged over batch and categories. Logits and targets [B, C] -> scalar."""
    if student_logits.dim() != 2 or targets.shape != student_logits.shape:
        raise ValueError(
            f"multi-label targets must match the logits [B, C], got {tuple(targets.shape)} for "
            f"{tuple(student_logits.shape)}"
        )
    return F.binary_cross_entropy_with_logits(student_logits, targets.to(student_logits.dtype))


def sigmoid_soft_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """The multi-label soft-target loss: per category, BCE of sigmoid(s / T) against the teacher's
    sigmoid(t / T), averaged over batch and categories, times T**2 (as ``soft_loss``: softening
    divides the gradients by about T**2). Each category is its own two-way softmax, so this is
    Hinton's loss applied per category. Logits [B, C] -> scalar."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    _check_logits(student_logits, teacher_logits)
    target = torch.sigmoid(teacher_logits.detach() / temperature)
    return F.binary_cross_entropy_with_logits(student_logits / temperature, target) * temperature**2


def logit_mse(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Tang et al. (2019) logit regression. Logits [B, C] -> scalar.

    Mean squared error between raw (unsoftened) logits, averaged over batch *and* classes,
    so its scale depends on C; no temperature is involved.
    """
    _check_logits(student_logits, teacher_logits)
    return F.mse_loss(student_logits, teacher_logits.detach())


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor | None,
    labels: Tensor | None,
    alpha: float,
    temperature: float,
    soft: Literal["kl", "ce", "mse", "bce"],
    *,
    has_label: Tensor | None = None,
    multi_label: bool = False,
) -> Tensor:
    """alpha * hard + (1 - alpha) * soft. Logits [B, C], labels [B] long, has_label [B] bool -> scalar.

    ``soft`` picks the soft term: ``soft_loss(kind="kl" | "ce")`` at ``temperature``, or
    ``logit_mse`` (``temperature`` is then unused).
    alpha == 1 returns exactly ``hard_loss`` and needs no teacher (``teacher_logits`` may be None);
    alpha == 0 returns exactly the soft term and needs no labels (``labels`` may be None, as for
    transfer-set examples without gold labels). Any other missing input raises ValueError.
    ``has_label`` marks the rows with gold labels when labelled originals and unlabelled augmented
    examples share a batch: the hard term is averaged over those rows only (the other rows'
    ``labels`` entries are ignored) and is 0 when there are none.
    ``multi_label``: ``labels`` are [B, C] float targets in [0, 1] (soft where the dataset has
    annotator vote shares) and the hard term is ``multi_label_hard_loss``; ``soft`` is ``mse``
    (per-category logit MSE) or ``bce`` (``sigmoid_soft_loss`` at ``temperature``).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if labels is None and alpha != 0.0:
        raise ValueError(f"labels=None (unlabelled transfer set) requires alpha == 0, got alpha={alpha}")
    if teacher_logits is None and alpha != 1.0:
        raise ValueError(f"teacher_logits=None requires alpha == 1 (pure cross-entropy), got alpha={alpha}")
    allowed = ("mse", "bce") if multi_label else ("kl", "ce", "mse")
    if soft not in allowed:
        kind = "multi-label" if multi_label else "single-label"
        raise ValueError(f"a {kind} soft loss must be one of {', '.join(allowed)}, got {soft!r}")
    hard_fn = multi_label_hard_loss if multi_label else hard_loss

    hard: Tensor | None = None
    if alpha != 0.0:
        assert labels is not None
        if has_label is None:
            hard = hard_fn(student_logits, labels)
        else:
            if has_label.dtype != torch.bool or has_label.shape != labels.shape[:1]:
                got = f"{has_label.dtype} {tuple(has_label.shape)}"
                raise ValueError(f"has_label must be a bool tensor shaped like labels, got {got}")
            rows = student_logits[has_label]
            # ``sum() * 0`` rather than a fresh zero: it stays on the graph, so backward() still works.
            hard = hard_fn(rows, labels[has_label]) if rows.shape[0] else student_logits.sum() * 0.0
        if alpha == 1.0:
            # Early return rather than ``1 * hard + 0 * soft``: exact equality with plain
            # cross-entropy, no teacher needed, and a NaN soft term cannot leak in via 0 * NaN.
            return hard

    assert teacher_logits is not None
    if soft == "mse":
        soft_term = logit_mse(student_logits, teacher_logits)
    elif soft == "bce":
        soft_term = sigmoid_soft_loss(student_logits, teacher_logits, temperature)
    else:
        soft_term = soft_loss(student_logits, teacher_logits, temperature, kind=soft)
    return soft_term if hard is None else alpha * hard + (1.0 - alpha) * soft_term


def _check_alpha(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def _check_epoch(epoch: int) -> int:
    epoch = operator.index(epoch)  # numpy ints pass, floats raise TypeError
    if epoch < 1:
        raise ValueError(f"epochs are 1-based, got epoch={epoch}")
    return epoch


class AlphaSchedule:
    """Weight of the hard (gold-label) term for a 1-based epoch."""

    def __call__(self, epoch: int) -> float:
        raise NotImplementedError


@dataclass(frozen=True)
class ConstantAlpha(AlphaSchedule):
    alpha: float

    def __post_init__(self) -> None:
        _check_alpha("alpha", self.alpha)

    def __call__(self, epoch: int) -> float:
        _check_epoch(epoch)
        return float(self.alpha)


@dataclass(frozen=True)
class EasyToHardAlpha(AlphaSchedule):
    """alpha_i = 0.8 - 0.1 (i - 1) for epochs 1..8, then 0: gold labels first, the teacher later."""

    def __call__(self, epoch: int) -> float:
        # Integer tenths divided once: 0.8 - 0.1 * k accumulates error (0.7000000000000001).
        return max(9 - _check_epoch(epoch), 0) / 10


@dataclass(frozen=True)
class LinearAlpha(AlphaSchedule):
    """Linear from ``start`` at epoch 1 to ``end`` at epoch ``epochs`` (``end`` from then on)."""

    start: float
    end: float
    epochs: int

    def __post_init__(self) -> None:
        _check_alpha("start", self.start)
        _check_alpha("end", self.end)
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be an int >= 1, got {self.epochs!r}")

    def __call__(self, epoch: int) -> float:
        epoch = _check_epoch(epoch)
        if epoch >= self.epochs:
            return float(self.end)
        frac = (epoch - 1) / (self.epochs - 1)
        value = self.start + (self.end - self.start) * frac
        # Rounding can step one ulp outside [start, end]; alpha must stay a valid weight.
        return min(max(value, min(self.start, self.end)), max(self.start, self.end))


_SPEC_HELP = "expected 'constant:ALPHA', 'easy-to-hard' or 'linear:START:END:EPOCHS'"


def make_alpha_schedule(spec: str) -> AlphaSchedule:
    """Parse "constant:0.5", "easy-to-hard" or "linear:0.9:0.0:5" into a schedule."""
    name, *args = spec.strip().split(":")
    name = name.strip().lower()
    try:
        if name == "constant" and len(args) == 1:
            return ConstantAlpha(float(args[0]))
        if name == "easy-to-hard" and not args:
            return EasyToHardAlpha()
        if name == "linear" and len(args) == 3:
            return LinearAlpha(float(args[0]), float(args[1]), int(args[2]))
    except ValueError as exc:
        raise ValueError(f"bad alpha schedule {spec!r}: {exc}") from None
    raise ValueError(f"bad alpha schedule {spec!r}: {_SPEC_HELP}")


def uniform_layer_map(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """PKD-skip map: student layer j <-> teacher layer j * (teacher_layers // student_layers).

    1-based layer numbers (see module docstring), e.g. (2, 6) -> [(1, 3), (2, 6)].
    """
    if student_layers < 1 or teacher_layers < student_layers:
        raise ValueError(f"need 1 <= student_layers <= teacher_layers, got {student_layers} {teacher_layers}")
    k = teacher_layers // student_layers
    return [(j, j * k) for j in range(1, student_layers + 1)]


def _check_layer_map(layer_map: LayerMap, first: int) -> tuple[tuple[int, int], ...]:
    pairs = tuple((int(s), int(t)) for s, t in layer_map)
    if not pairs or any(s < first or t < first for s, t in pairs):
        raise ValueError(f"layer_map must be non-empty with layer numbers >= {first}, got {list(pairs)}")
    return pairs


def _pick(states: Sequence[Tensor], index: int, who: str) -> Tensor:
    if index >= len(states):
        raise ValueError(f"layer_map needs {who}[{index}] but only {len(states)} entries were given")
    return states[index]


def _valid_tokens(attention_mask: Tensor | None, batch: int, length: int, device: torch.device) -> Tensor:
    if attention_mask is None:
        return torch.ones(batch, length, dtype=torch.bool, device=device)
    if attention_mask.shape != (batch, length):
        raise ValueError(f"attention_mask must be [{batch}, {length}], got {list(attention_mask.shape)}")
    return attention_mask.to(device) != 0


def _mse_or_zero(student: Tensor, teacher: Tensor) -> Tensor:
    # Callers pass selected rows: indexing, unlike multiplying by the mask, keeps NaN/inf in padding
    # out of the value and the gradient. An all-padding batch gives a zero still on the graph.
    return F.mse_loss(student, teacher) if student.numel() else student.sum() * 0.0


class HiddenStateLoss(nn.Module):
    """TinyBERT / PKD hidden-state distillation.

    forward(student_states: seq of [B, L, Hs], teacher_states: seq of [B, L, Ht], attention_mask:
    [B, L] with 1 for real tokens, or None) -> scalar: mean over ``layer_map`` pairs of the MSE
    (over real-token positions and Ht) between projected student and teacher states, indexed like
    HF ``hidden_states`` (0 = embeddings). When Hs != Ht, ``projection`` is a learned
    nn.Linear(Hs, Ht) (TinyBERT's W_h): give its parameters to the optimiser too.
    ``normalize=True`` is the PKD variant: MSE (mean over B and Ht) between L2-normalised [CLS]
    vectors (position 0), i.e. PKD's squared distance divided by Ht.
    """

    def __init__(self, student_hidden: int, teacher_hidden: int, layer_map: LayerMap, normalize: bool = False) -> None:
        super().__init__()
        self.student_hidden = student_hidden
        self.teacher_hidden = teacher_hidden
        self.layer_map = _check_layer_map(layer_map, first=0)
        self.normalize = normalize
        self.projection: nn.Module = (
            nn.Identity() if student_hidden == teacher_hidden else nn.Linear(student_hidden, teacher_hidden)
        )

    def forward(
        self,
        student_states: Sequence[Tensor],
        teacher_states: Sequence[Tensor],
        attention_mask: Tensor | None = None,
    ) -> Tensor:
        losses = []
        for s_layer, t_layer in self.layer_map:
            s = _pick(student_states, s_layer, "student_states")
            t = _pick(teacher_states, t_layer, "teacher_states").detach()
            widths = (s.shape[-1], t.shape[-1]) == (self.student_hidden, self.teacher_hidden)
            if not widths or s.dim() != 3 or s.shape[:2] != t.shape[:2]:
                want = f"[B, L, {self.student_hidden}] and [B, L, {self.teacher_hidden}]"
                got = f"{list(s.shape)} and {list(t.shape)}"
                raise ValueError(f"layers {s_layer}->{t_layer}: expected {want}, got {got}")
            if self.normalize:
                # [CLS] is never padding, so the mask is irrelevant here.
                s_cls = F.normalize(self.projection(s[:, 0]), dim=-1)
                losses.append(F.mse_loss(s_cls, F.normalize(t[:, 0], dim=-1)))
            else:
                valid = _valid_tokens(attention_mask, s.shape[0], s.shape[1], s.device)
                # Project after selecting real tokens: cheaper, and padding never touches the weights.
                losses.append(_mse_or_zero(self.projection(s[valid]), t[valid]))
        return torch.stack(losses).mean()


def attention_loss(
    student_attn: Sequence[Tensor],
    teacher_attn: Sequence[Tensor],
    layer_map: LayerMap,
    attention_mask: Tensor | None = None,
) -> Tensor:
    """TinyBERT attention distillation. Attentions: seqs of [B, heads, L, L]; mask [B, L] or None -> scalar.

    Inputs are HF ``output_attentions=True`` tuples, which hold post-softmax probabilities (not
    TinyBERT's pre-softmax scores); they are compared as given. Layer j is ``attn[j - 1]``.
    Returns the mean over ``layer_map`` pairs of the MSE over heads and (query, key) pairs where
    both positions are real tokens: padded query rows are arbitrary and padded keys carry ~0 mass.
    Student and teacher need the same head count (no projection is defined between heads).
    """
    pairs = _check_layer_map(layer_map, first=1)
    losses = []
    for s_layer, t_layer in pairs:
        s = _pick(student_attn, s_layer - 1, "student_attn")
        t = _pick(teacher_attn, t_layer - 1, "teacher_attn").detach()
        where = f"layers {s_layer}->{t_layer}"
        if s.dim() == t.dim() == 4 and s.shape[1] != t.shape[1]:
            raise ValueError(f"{where}: student has {s.shape[1]} heads, teacher has {t.shape[1]}")
        if s.dim() != 4 or s.shape != t.shape:
            raise ValueError(f"{where}: need equal [B, heads, L, L], got {list(s.shape)}, {list(t.shape)}")
        tokens = _valid_tokens(attention_mask, s.shape[0], s.shape[2], s.device)
        valid = (tokens[:, :, None] & tokens[:, None, :])[:, None].expand_as(s)
        losses.append(_mse_or_zero(s[valid], t[valid]))
    return torch.stack(losses).mean()
