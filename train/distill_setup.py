"""What a distillation run is made of: the student's tokenizer, the student, the layer loss.

Split from ``kdserve.train.distill`` so the recipe there reads as the loop it is.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from kdserve.core.errors import ConfigError

if TYPE_CHECKING:
    from kdserve.train.distill import DistillConfig

log = logging.getLogger("kdserve.train")


def teacher_problem_type(folder: str) -> str:
    """ "single_label" or "multi_label": a bundle's manifest says; a Hugging Face checkpoint says in
    its config's ``problem_type`` (``kdserve train teacher`` records multi-label there)."""
    import json
    from pathlib import Path

    from kdserve.train.checkpoint import HF_PROBLEM_TYPES

    path = Path(folder)
    if (path / "manifest.json").is_file():
        from kdserve.core.bundle import read_manifest

        return read_manifest(path).problem_type
    config_path = path / "config.json"
    hf = json.loads(config_path.read_text()).get("problem_type") if config_path.is_file() else None
    return "multi_label" if hf == HF_PROBLEM_TYPES["multi_label"] else "single_label"


def check_teacher_problem_type(teachers: list[str], problem_type: str) -> None:
    """A softmax teacher's logits are not per-category scores (and the other way round): refuse
    to distil across problem types before the teacher labels anything."""
    from kdserve.core.errors import DataError

    for teacher in teachers:
        kind = teacher_problem_type(teacher)
        if kind != problem_type:
            raise DataError(
                f"teacher {teacher} is {kind} but the data is {problem_type}: train the teacher with "
                f"--problem-type {problem_type}"
            )


def build_tokenizer(config: DistillConfig, texts: list[str]) -> Any:
    """Word-level for BiLSTM/TextCNN (the paper's setup, GloVe is word-level); the teacher's
    WordPiece for the Transformer, whose embeddings and layers are copied from the teacher."""
    from kdserve.train.student_tokenizers import extend_word_vocab, teacher_wordpiece, train_word_tokenizer

    if config.student == "transformer":
        from kdserve.train.checkpoint import DEFAULT_TEACHER

        return teacher_wordpiece(config.primary_teacher or DEFAULT_TEACHER)
    tokenizer = train_word_tokenizer(texts, vocab_size=config.vocab_size)
    if config.vector_vocab:
        from kdserve.train.glove import glove_words

        tokenizer, added = extend_word_vocab(tokenizer, glove_words(config.vector_vocab))
        log.info(
            "vocabulary: %d words from the training texts + %d of GloVe's %d most frequent",
            tokenizer.get_vocab_size() - added,
            added,
            config.vector_vocab,
        )
    return tokenizer


def build_student_for(config: DistillConfig, tokenizer: Any, num_classes: int) -> tuple[Any, Any]:
    from kdserve.train.students import (
        BiLSTMConfig,
        BiLSTMStudent,
        TextCNNConfig,
        TextCNNStudent,
        TransformerStudent,
        TransformerStudentConfig,
        init_embeddings,
    )

    vocab = tokenizer.get_vocab_size()
    if config.student == "transformer":
        if config.init_from_teacher:
            from kdserve.train.checkpoint import DEFAULT_TEACHER

            model = TransformerStudent.from_teacher(
                config.primary_teacher or DEFAULT_TEACHER, config.student_layers, num_classes
            )
            return model, model.config
        options = {"num_layers": config.student_layers, **config.student_options}
        student_config = TransformerStudentConfig(vocab_size=vocab, num_classes=num_classes, **options)
        return TransformerStudent(student_config), student_config
    words = [tokenizer.id_to_token(i) for i in range(vocab)]
    vectors: Any = None
    if config.glove:
        from kdserve.train.glove import load_glove

        vectors, hits = load_glove(words, seed=config.seed)
        log.info("GloVe: %d of %d vocabulary words found", hits, vocab)
    elif config.teacher_embeddings:
        from kdserve.train.checkpoint import DEFAULT_TEACHER
        from kdserve.train.teacher_vectors import teacher_word_vectors

        vectors, hits = teacher_word_vectors(config.primary_teacher or DEFAULT_TEACHER, words, seed=config.seed)
        log.info(
            "teacher embeddings (%d-d): %d of %d vocabulary words spelled by the teacher's pieces",
            vectors.shape[1],
            hits,
            vocab,
        )
    if vectors is not None and config.static_channel:
        import numpy as np

        vectors = np.concatenate([vectors, vectors], axis=1)  # [V, 2E]: tuned half, fixed half
    shape = {"embedding_dim": vectors.shape[1] if vectors is not None else 300, **config.student_options}
    if vectors is not None and shape["embedding_dim"] != vectors.shape[1]:
        raise ConfigError(
            f"embedding_dim {shape['embedding_dim']} does not match the {vectors.shape[1]}-d word vectors"
        )
    if config.student == "bilstm":
        cnn_or_lstm: Any = BiLSTMConfig(vocab_size=vocab, num_classes=num_classes, **shape)
        model = BiLSTMStudent(cnn_or_lstm)
    else:
        cnn_or_lstm = TextCNNConfig(vocab_size=vocab, num_classes=num_classes, **shape)
        model = TextCNNStudent(cnn_or_lstm)
    if vectors is not None:
        init_embeddings(model, vectors)
    return model, cnn_or_lstm


class FixedColumns:
    """Holds columns ``start:`` of an embedding table [V, E] at their initial values in training.

    Their gradient is zeroed (so gradient clipping sees only the tuned columns) and the values are
    put back after every optimizer step, which also undoes AdamW's decoupled weight decay: that
    shrinks a parameter whatever its gradient.
    """

    def __init__(self, embedding: Any, start: int) -> None:
        import torch

        width = embedding.weight.shape[1]
        if not 0 < start < width:
            raise ConfigError(f"fixed columns must start inside the {width}-wide table, got {start}")
        self.weight = embedding.weight
        self.start = start
        self.values = embedding.weight.detach()[:, start:].clone()
        keep = torch.ones(width, dtype=embedding.weight.dtype, device=embedding.weight.device)
        keep[start:] = 0.0
        if embedding.weight.requires_grad:  # a frozen table has no gradient to mask
            embedding.weight.register_hook(lambda grad: grad * keep)

    def restore(self) -> None:
        import torch

        with torch.no_grad():
            self.weight[:, self.start :].copy_(self.values)


def intermediate_layer_loss(config: DistillConfig, student: Any, device: Any) -> Any:
    """TinyBERT/PKD terms: hidden-state MSE (+ attention MSE) against the teacher, run online."""
    import torch

    from kdserve.train.checkpoint import load_classifier
    from kdserve.train.losses import HiddenStateLoss, attention_loss, uniform_layer_map

    teacher, _ = load_classifier(config.primary_teacher or "")
    teacher.config._attn_implementation = "eager"  # attention maps are needed
    teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    layer_map = uniform_layer_map(config.student_layers, teacher.config.num_hidden_layers)
    hidden = HiddenStateLoss(student.config.hidden_size, teacher.config.hidden_size, layer_map).to(device)

    class LayerLoss(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = hidden

        def forward(self, input_ids: Any, mask: Any, states: Any, attentions: Any) -> Any:
            with torch.no_grad():
                t = teacher(input_ids=input_ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
            loss = self.hidden(states, t.hidden_states, mask)
            if student.config.num_heads == teacher.config.num_attention_heads:
                loss = loss + attention_loss(attentions, t.attentions, layer_map, mask)
            return loss

    return LayerLoss()
