"""Typed configs of the three students: validated in ``__post_init__``, JSON round trip, no torch.

Kept apart from ``kdserve.train.students`` (the modules) so a config can be read, checked and written
without importing torch; ``kdserve.train.students`` re-exports every name here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Self

from kdserve.core.errors import ConfigError

if TYPE_CHECKING:
    from transformers import BertConfig

PAD_ID = 0  # [PAD] is id 0 in both the word-level tokenizer and BERT's WordPiece
MAX_TRANSFORMER_LAYERS = 4
POOLINGS = ("max", "mean", "last")


def _check(owner: str, name: str, value: Any, low: float, high: float | None = None, integer: bool = True) -> None:
    """One-line ConfigError unless ``low <= value`` (``< high`` when given); ``integer`` also demands an int."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < low or (high is not None and value >= high):
        what = "an integer" if integer else "a number"
        bound = f">= {low}" if high is None else f"in [{low}, {high})"
        raise ConfigError(f"{owner}.{name} must be {what} {bound}, got {value!r}")


def _check_common(config: Any, ints: dict[str, int]) -> None:
    """Integer fields with their minimum, dropout in [0, 1) and the embedding freeze flag where present."""
    owner = type(config).__name__
    for name, low in ints.items():
        _check(owner, name, getattr(config, name), low)
    _check(owner, "dropout", config.dropout, 0.0, 1.0, integer=False)
    if not isinstance(getattr(config, "freeze_embeddings", False), bool):
        raise ConfigError(f"{owner}.freeze_embeddings must be true or false, got {config.freeze_embeddings!r}")


class _StudentConfig:
    """JSON round trip shared by the configs: ``to_dict`` gives plain JSON types."""

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))  # type: ignore[call-overload]  # tuples -> lists

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{cls.__name__} needs a mapping, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown field(s) {unknown}; known: {sorted(names)}")
        try:
            return cls(**data)
        except TypeError as exc:  # a required field is missing
            raise ConfigError(f"{cls.__name__}: {exc}") from None


@dataclass
class BiLSTMConfig(_StudentConfig):
    """Tang et al. 2019 defaults: 300-d embeddings (use 50 with GloVe 6B-50d), 300 units a direction, MLP 400."""

    vocab_size: int
    num_classes: int
    embedding_dim: int = 300
    hidden_size: int = 300
    classifier_hidden: int = 400
    dropout: float = 0.1  # 0.1-0.5 is the useful range; any value in [0, 1) is accepted
    pooling: str = "max"  # "max" | "mean" | "last"
    freeze_embeddings: bool = False

    def __post_init__(self) -> None:
        _check_common(
            self, {"vocab_size": 2, "num_classes": 2, "embedding_dim": 1, "hidden_size": 1, "classifier_hidden": 1}
        )
        if self.pooling not in POOLINGS:
            raise ConfigError(f"BiLSTMConfig.pooling must be one of {list(POOLINGS)}, got {self.pooling!r}")


@dataclass
class TextCNNConfig(_StudentConfig):
    """Kim 2014 defaults: 100 filters for each width 3, 4, 5, dropout 0.5."""

    vocab_size: int
    num_classes: int
    embedding_dim: int = 300
    num_filters: int = 100
    widths: tuple[int, ...] = (3, 4, 5)
    dropout: float = 0.5
    freeze_embeddings: bool = False

    def __post_init__(self) -> None:
        _check_common(self, {"vocab_size": 2, "num_classes": 2, "embedding_dim": 1, "num_filters": 1})
        if isinstance(self.widths, (str, bytes)) or not isinstance(self.widths, Sequence) or not self.widths:
            raise ConfigError(f"TextCNNConfig.widths must be a non-empty list of integers, got {self.widths!r}")
        for width in self.widths:
            _check("TextCNNConfig", "widths", width, 1)
        self.widths = tuple(self.widths)  # JSON gives a list; a tuple keeps configs comparable


@dataclass
class TransformerStudentConfig(_StudentConfig):
    """A small BERT; defaults are all-MiniLM-L6-v2's width (384, 12 heads, 1536) with 2 layers.

    ``teacher_layers`` (0-based teacher encoder layers copied into student layers 0..n-1) is
    recorded by ``TransformerStudent.from_teacher``; None for a randomly initialised student.
    """

    vocab_size: int
    num_classes: int
    num_layers: int = 2
    hidden_size: int = 384
    num_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    dropout: float = 0.1
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    teacher_layers: list[int] | None = None

    def __post_init__(self) -> None:
        owner = type(self).__name__
        _check(owner, "num_layers", self.num_layers, 1, MAX_TRANSFORMER_LAYERS + 1)
        _check_common(
            self,
            {
                "vocab_size": 2,
                "num_classes": 2,
                "hidden_size": 1,
                "num_heads": 1,
                "intermediate_size": 1,
                "max_position_embeddings": 1,
                "type_vocab_size": 1,
            },
        )
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"{owner}.hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if not isinstance(self.hidden_act, str):
            raise ConfigError(f"{owner}.hidden_act must be an activation name, got {self.hidden_act!r}")
        for name in ("layer_norm_eps", "initializer_range"):
            _check(owner, name, getattr(self, name), 1e-30, integer=False)
        if self.teacher_layers is not None:
            if not isinstance(self.teacher_layers, (list, tuple)) or len(self.teacher_layers) != self.num_layers:
                raise ConfigError(
                    f"{owner}.teacher_layers must list {self.num_layers} indices, got {self.teacher_layers!r}"
                )
            for index in self.teacher_layers:
                _check(owner, "teacher_layers", index, 0)
            self.teacher_layers = list(self.teacher_layers)

    def to_bert_config(self) -> BertConfig:
        from transformers import BertConfig

        # Eager attention: forward_with_states needs attention maps (SDPA cannot return them)
        # and the eager graph exports to ONNX with no fused-kernel surprises.
        return BertConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            max_position_embeddings=self.max_position_embeddings,
            type_vocab_size=self.type_vocab_size,
            hidden_act=self.hidden_act,
            layer_norm_eps=self.layer_norm_eps,
            hidden_dropout_prob=self.dropout,
            attention_probs_dropout_prob=self.dropout,
            initializer_range=self.initializer_range,
            pad_token_id=PAD_ID,
            attn_implementation="eager",
        )
