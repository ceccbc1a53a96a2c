"""Three small student classifiers for distillation, with JSON-able configs and safetensors I/O.

Every student is a plain ``nn.Module`` with the same call signature,
``forward(input_ids: LongTensor[B, L], attention_mask: LongTensor[B, L]) -> FloatTensor[B, C]``
(logits), so training, ONNX export and serving treat them alike. Inputs are right-padded
(``attention_mask`` is 1 for the first n_b positions of row b and 0 after), as
``kdserve.train.common.pad_batch`` and the server produce them; under that contract each student's
logits for a text do not depend on how much padding its batch adds (tested to 1e-5).

* ``bilstm`` - Tang et al. 2019: one BiLSTM layer, masked pooling, ReLU MLP.
* ``transformer`` - a 1-4 layer BERT (``transformers.BertModel``), optionally cut from the teacher.
* ``textcnn`` - Kim 2014: convolutions of widths 3/4/5, masked max-over-time, linear.

A saved student is a folder with ``model.safetensors`` (never pickle) and
``student_config.json`` = {"kind": ..., "config": {...}}.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdserve.core.errors import ConfigError, KdserveError
from kdserve.train.checkpoint import resolve_model_source
from kdserve.train.student_configs import (
    MAX_TRANSFORMER_LAYERS,
    PAD_ID,
    POOLINGS,
    BiLSTMConfig,
    TextCNNConfig,
    TransformerStudentConfig,
    _check,
    _StudentConfig,
)

__all__ = [
    "MAX_TRANSFORMER_LAYERS",
    "PAD_ID",
    "POOLINGS",
    "STUDENT_KINDS",
    "BiLSTMConfig",
    "BiLSTMStudent",
    "StudentError",
    "TextCNNConfig",
    "TextCNNStudent",
    "TransformerStudent",
    "TransformerStudentConfig",
    "build_student",
    "count_parameters",
    "init_embeddings",
    "load_student",
    "save_student",
    "select_teacher_layers",
]

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "student_config.json"
LAYER_SELECTIONS = ("uniform", "first")


class StudentError(KdserveError):
    """A saved student folder is missing a file or does not match its config."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _positions(attention_mask: Tensor) -> Tensor:
    """[B, L] long: 0, 1, ..., L-1 in every row. A cumsum, not arange, so ONNX keeps L dynamic."""
    return torch.cumsum(torch.ones_like(attention_mask, dtype=torch.long), dim=1) - 1


def init_embeddings(model: nn.Module, matrix: Tensor | np.ndarray, freeze: bool | None = None) -> None:
    """Copy ``matrix`` [V, E] (e.g. from ``kdserve.train.glove.load_glove``) into ``model.embedding``.

    Row ``PAD_ID`` is set to zeros, as ``nn.Embedding(padding_idx=0)`` keeps it. With
    ``freeze`` given, the embedding's ``requires_grad`` and the config's ``freeze_embeddings``
    are set to match, so a saved and reloaded student stays frozen.
    """
    embedding = getattr(model, "embedding", None)
    if not isinstance(embedding, nn.Embedding):
        raise ConfigError(f"{type(model).__name__} has no word-embedding table to initialise")
    weights = torch.as_tensor(np.asarray(matrix) if not isinstance(matrix, Tensor) else matrix)
    if tuple(weights.shape) != tuple(embedding.weight.shape):
        raise ConfigError(f"embedding matrix is {list(weights.shape)}, the model needs {list(embedding.weight.shape)}")
    with torch.no_grad():
        embedding.weight.copy_(weights.to(embedding.weight.dtype))
        embedding.weight[PAD_ID].zero_()
    if freeze is not None:
        embedding.weight.requires_grad_(not freeze)
        model.config.freeze_embeddings = bool(freeze)  # type: ignore[union-attr]


class BiLSTMStudent(nn.Module):
    """Embedding -> BiLSTM (1 layer) -> masked pooling over time -> Linear-ReLU-Linear.

    The backward direction is a second unidirectional LSTM run on each sequence reversed
    *within its own length* (a gather with indices computed from the mask), then reversed
    back. A plain bidirectional ``nn.LSTM`` on right-padded input would read the padding
    first in its backward pass, so padding would change the logits; ``pack_padded_sequence``
    fixes that but exports to ONNX poorly. Gathers and two LSTMs export with dynamic axes.
    """

    kind: ClassVar[str] = "bilstm"

    def __init__(self, config: BiLSTMConfig, embedding_init: Tensor | np.ndarray | None = None) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=PAD_ID)
        self.lstm_forward = nn.LSTM(config.embedding_dim, config.hidden_size, batch_first=True)
        self.lstm_backward = nn.LSTM(config.embedding_dim, config.hidden_size, batch_first=True)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Sequential(
            nn.Linear(2 * config.hidden_size, config.classifier_hidden),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.classifier_hidden, config.num_classes),
        )
        if embedding_init is not None:
            init_embeddings(self, embedding_init)
        self.embedding.weight.requires_grad_(not config.freeze_embeddings)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """input_ids, attention_mask: LongTensor [B, L] (right-padded) -> logits FloatTensor [B, C]."""
        positions = _positions(attention_mask)  # [B, L]
        lengths = attention_mask.sum(dim=1, keepdim=True)  # [B, 1]
        # Position t of a row of length n maps to n-1-t inside the text and to itself in the
        # padding; the map is its own inverse, so the same gather also undoes the reversal.
        reverse = torch.where(positions < lengths, lengths - 1 - positions, positions)  # [B, L]
        embedded = self.dropout(self.embedding(input_ids))  # [B, L, E]
        forward_states, _ = self.lstm_forward(embedded)  # [B, L, H]
        index = reverse.unsqueeze(-1)  # [B, L, 1]
        reversed_input = torch.gather(embedded, 1, index.expand(-1, -1, embedded.size(-1)))
        backward_reversed, _ = self.lstm_backward(reversed_input)  # [B, L, H], step 0 = last word
        backward_states = torch.gather(backward_reversed, 1, index.expand(-1, -1, backward_reversed.size(-1)))
        states = torch.cat([forward_states, backward_states], dim=-1)  # [B, L, 2H]
        return self.classifier(self.dropout(self._pool(states, attention_mask, positions, lengths)))

    def _pool(self, states: Tensor, attention_mask: Tensor, positions: Tensor, lengths: Tensor) -> Tensor:
        """states [B, L, 2H] -> [B, 2H], padding ignored; an all-padding row pools position 0."""
        valid = (attention_mask != 0) | (positions == 0)  # [B, L]; never an empty row (max of nothing = -inf)
        if self.config.pooling == "max":
            return states.masked_fill(~valid.unsqueeze(-1), float("-inf")).amax(dim=1)
        if self.config.pooling == "mean":
            weights = valid.unsqueeze(-1).to(states.dtype)
            return (states * weights).sum(dim=1) / weights.sum(dim=1)
        # "last": the forward LSTM's state at the last word and the backward LSTM's final state,
        # which after un-reversing sits at position 0.
        hidden = self.config.hidden_size
        last = (lengths - 1).clamp(min=0).unsqueeze(-1).expand(-1, 1, hidden)  # [B, 1, H]
        forward_last = torch.gather(states[:, :, :hidden], 1, last).squeeze(1)
        return torch.cat([forward_last, states[:, 0, hidden:]], dim=-1)


class TextCNNStudent(nn.Module):
    """Embedding -> Conv1d per width -> ReLU -> masked max over time -> concat -> dropout -> Linear.

    A width-w filter only keeps windows that lie inside the text: start t <= n - w. A text
    shorter than the widest filter has no such window, so each text is treated as padded with
    zero vectors to at least max(widths) and keeps window t = 0 then (t <= max(n - w, 0)).
    Padded positions are zeroed after the embedding lookup (whatever id they hold) and the
    input is always right-padded by max(widths) - 1 zeros, a constant, so the ONNX graph has
    no data-dependent padding; the window mask makes the extra columns irrelevant.
    """

    kind: ClassVar[str] = "textcnn"

    def __init__(self, config: TextCNNConfig, embedding_init: Tensor | np.ndarray | None = None) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=PAD_ID)
        self.convs = nn.ModuleList(nn.Conv1d(config.embedding_dim, config.num_filters, w) for w in config.widths)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.num_filters * len(config.widths), config.num_classes)
        if embedding_init is not None:
            init_embeddings(self, embedding_init)
        self.embedding.weight.requires_grad_(not config.freeze_embeddings)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """input_ids, attention_mask: LongTensor [B, L] (right-padded) -> logits FloatTensor [B, C]."""
        widest = max(self.config.widths)
        embedded = self.embedding(input_ids) * attention_mask.unsqueeze(-1).to(self.embedding.weight.dtype)
        embedded = F.pad(embedded, (0, 0, 0, widest - 1))  # [B, L + W - 1, E]
        features = embedded.transpose(1, 2)  # [B, E, L + W - 1]
        lengths = attention_mask.sum(dim=1, keepdim=True)  # [B, 1]
        pooled = []
        for conv in self.convs:
            width = conv.kernel_size[0]
            activations = F.relu(conv(features))  # [B, F, L + W - width]
            starts = _positions(activations[:, 0, :])  # [B, T]
            valid = starts <= (lengths - width).clamp(min=0)  # [B, T], window 0 always valid
            pooled.append(activations.masked_fill(~valid.unsqueeze(1), float("-inf")).amax(dim=2))  # [B, F]
        return self.classifier(self.dropout(torch.cat(pooled, dim=1)))  # [B, C]


def select_teacher_layers(teacher_layers: int, num_layers: int, selection: str | Sequence[int]) -> list[int]:
    """0-based teacher encoder layers to copy into student layers 0..num_layers-1.

    "uniform" is PKD-skip, every k-th layer with k = teacher_layers // num_layers, the same
    map as ``kdserve.train.losses.uniform_layer_map`` so intermediate-layer losses pair each student
    layer with the layer it was copied from: (6, 2) -> [2, 5]. "first" -> [0, 1, ...].
    """
    _check("layer selection", "num_layers", num_layers, 1)
    if num_layers > teacher_layers:
        raise ConfigError(f"a {num_layers}-layer student cannot be cut from a {teacher_layers}-layer teacher")
    if selection == "uniform":
        k = teacher_layers // num_layers
        return [j * k - 1 for j in range(1, num_layers + 1)]
    if selection == "first":
        return list(range(num_layers))
    if isinstance(selection, str) or not isinstance(selection, Sequence):
        raise ConfigError(
            f"layer_selection must be {' | '.join(LAYER_SELECTIONS)} or a list of layer indices, got {selection!r}"
        )
    picked = list(selection)
    if len(picked) != num_layers or any(
        isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < teacher_layers for i in picked
    ):
        raise ConfigError(f"layer_selection {picked} must list {num_layers} indices in [0, {teacher_layers})")
    return picked


class TransformerStudent(nn.Module):
    """``BertModel`` (no pooler) -> [CLS] state (position 0) -> dropout -> Linear. Token types are all 0."""

    kind: ClassVar[str] = "transformer"

    def __init__(self, config: TransformerStudentConfig) -> None:
        super().__init__()
        from transformers import BertModel

        self.config = config
        self.bert = BertModel(config.to_bert_config(), add_pooling_layer=False)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_classes)
        # BERT's own head initialisation, so a from-scratch student matches HF classifiers.
        nn.init.normal_(self.classifier.weight, std=config.initializer_range)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """input_ids, attention_mask: LongTensor [B, L] -> logits FloatTensor [B, C]."""
        return self.forward_with_states(input_ids, attention_mask, states=False)[0]

    def forward_with_states(
        self, input_ids: Tensor, attention_mask: Tensor, states: bool = True
    ) -> tuple[Tensor, tuple[Tensor, ...], tuple[Tensor, ...]]:
        """For intermediate-layer distillation: (logits [B, C], hidden_states, attentions).

        hidden_states: num_layers + 1 tensors [B, L, H], index 0 = embedding output, i = layer i
        (1-based, as in HF); attentions: num_layers tensors [B, heads, L, L] (post-softmax).
        With ``states=False`` both tuples are empty (plain ``forward``). Token types are all 0.
        """
        output = self.bert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=torch.zeros_like(input_ids),
            output_hidden_states=states,
            output_attentions=states,
        )
        logits = self.classifier(self.dropout(output.last_hidden_state[:, 0]))
        return logits, tuple(output.hidden_states or ()), tuple(output.attentions or ())

    @classmethod
    def from_teacher(
        cls,
        teacher: str | Path | nn.Module,
        num_layers: int,
        num_classes: int,
        layer_selection: str | Sequence[int] = "uniform",
        dropout: float = 0.1,
    ) -> TransformerStudent:
        """A student of the teacher's width whose embeddings and layers are copies of the teacher's.

        ``teacher``: a folder, hub id or ``DEFAULT_TEACHER``, or a loaded HF BERT model (a
        ``*ForSequenceClassification`` is reduced to its base model via ``base_model_prefix``).
        Student layer j gets teacher layer ``select_teacher_layers(...)[j]``, recorded in
        ``config.teacher_layers``. The classifier is new (random); the teacher is not changed.
        """
        base = _teacher_base(teacher)
        tc = base.config
        if (
            getattr(tc, "model_type", None) != "bert"
            or getattr(tc, "position_embedding_type", "absolute") != "absolute"
        ):
            raise ConfigError(
                f"from_teacher needs a BERT teacher with absolute positions, got "
                f"{getattr(tc, 'model_type', type(base).__name__)!r}"
            )
        indices = select_teacher_layers(tc.num_hidden_layers, num_layers, layer_selection)
        config = TransformerStudentConfig(
            vocab_size=tc.vocab_size,
            num_classes=num_classes,
            num_layers=num_layers,
            hidden_size=tc.hidden_size,
            num_heads=tc.num_attention_heads,
            intermediate_size=tc.intermediate_size,
            max_position_embeddings=tc.max_position_embeddings,
            type_vocab_size=tc.type_vocab_size,
            dropout=dropout,
            hidden_act=tc.hidden_act,
            layer_norm_eps=tc.layer_norm_eps,
            initializer_range=tc.initializer_range,
            teacher_layers=indices,
        )
        student = cls(config)
        # load_state_dict copies values, so the student shares no storage with the teacher.
        student.bert.embeddings.load_state_dict(base.embeddings.state_dict(), strict=True)
        for j, i in enumerate(indices):
            student.bert.encoder.layer[j].load_state_dict(base.encoder.layer[i].state_dict(), strict=True)
        return student


def _teacher_base(teacher: str | Path | nn.Module) -> nn.Module:
    """The bare BERT encoder (embeddings + encoder.layer) of a teacher model or folder."""
    if isinstance(teacher, (str, Path)):
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        source = resolve_model_source(str(teacher))
        if source.startswith((".", "/")) and not Path(source).exists():
            raise ConfigError(f"teacher folder not found: {source}")
        previous = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # "unused classifier weights" is expected from a classifier folder
        try:
            teacher = AutoModel.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load teacher {source!r}: {_first_line(exc)}") from None
        finally:
            hf_logging.set_verbosity(previous)
    prefix = getattr(teacher, "base_model_prefix", "")
    base = getattr(teacher, prefix, teacher) if prefix else teacher
    if not (
        hasattr(base, "embeddings") and hasattr(getattr(base, "encoder", None), "layer") and hasattr(base, "config")
    ):
        raise ConfigError(f"{type(teacher).__name__} is not a BERT-style model (embeddings + encoder.layer)")
    return base


STUDENT_KINDS: dict[str, tuple[type[_StudentConfig], type[nn.Module]]] = {
    "bilstm": (BiLSTMConfig, BiLSTMStudent),
    "transformer": (TransformerStudentConfig, TransformerStudent),
    "textcnn": (TextCNNConfig, TextCNNStudent),
}


def _kind_classes(kind: str) -> tuple[type[_StudentConfig], type[nn.Module]]:
    if not isinstance(kind, str) or kind not in STUDENT_KINDS:
        raise ConfigError(f"unknown student kind {kind!r}: expected one of {sorted(STUDENT_KINDS)}")
    return STUDENT_KINDS[kind]


def build_student(kind: str, config_dict: Mapping[str, Any] | _StudentConfig) -> nn.Module:
    """A freshly initialised student (seed with ``torch.manual_seed`` first for reproducibility)."""
    config_cls, model_cls = _kind_classes(kind)
    config = config_dict if isinstance(config_dict, config_cls) else config_cls.from_dict(config_dict)  # type: ignore[arg-type]
    return model_cls(config)  # type: ignore[call-arg]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors once); ``trainable_only`` skips frozen ones."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def save_student(model: nn.Module, config: _StudentConfig, folder: str | Path) -> Path:
    """Write ``model.safetensors`` and ``student_config.json`` into ``folder``; returns the folder."""
    from safetensors.torch import save_model

    kind = next((k for k, (cfg, _) in STUDENT_KINDS.items() if type(config) is cfg), None)
    if kind is None:
        raise ConfigError(f"{type(config).__name__} is not a student config")
    if not isinstance(model, STUDENT_KINDS[kind][1]):
        raise ConfigError(f"a {type(model).__name__} cannot be saved with a {type(config).__name__}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # save_model drops duplicate names of shared tensors, which plain save_file refuses.
    save_model(model, str(folder / WEIGHTS_FILE), metadata={"kind": kind, "format": "pt"})
    (folder / CONFIG_FILE).write_text(json.dumps({"kind": kind, "config": config.to_dict()}, indent=2) + "\n")
    return folder


def load_student(folder: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, _StudentConfig]:
    """Rebuild a saved student and load its weights (strict: every tensor must match). Returned in eval mode."""
    from safetensors.torch import load_model

    folder = Path(folder)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise StudentError(f"{folder} is not a student folder: no {name}")
    try:
        saved = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StudentError(f"{folder / CONFIG_FILE}: unreadable JSON ({exc})") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict) or "kind" not in saved:
        raise StudentError(f'{folder / CONFIG_FILE} must hold {{"kind": ..., "config": {{...}}}}')
    config_cls, model_cls = _kind_classes(saved["kind"])
    config = config_cls.from_dict(saved["config"])
    model = model_cls(config)  # type: ignore[call-arg]
    try:
        load_model(model, str(folder / WEIGHTS_FILE), strict=True, device=str(device))
    except (RuntimeError, OSError) as exc:
        raise StudentError(f"{folder / WEIGHTS_FILE} does not fit its config: {_first_line(exc)}") from None
    return model.to(device).eval(), config
