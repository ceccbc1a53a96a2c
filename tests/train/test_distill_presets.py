"""Presets hold the best measured recipe per student, and flags still override them."""

from __future__ import annotations

from kdserve.cli import build_parser
from kdserve.core.data import DatasetSpec
from kdserve.core.options import option_values
from kdserve.train.distill import DistillConfig


def _config(*flags: str) -> DistillConfig:
    args = build_parser().parse_args(["distill", "--teacher", "t", "--data", "d.csv", "--output", "o", *flags])
    return DistillConfig.from_preset(**option_values(DistillConfig, args))


def test_the_full_bilstm_preset_is_the_best_measured_recipe() -> None:
    c = _config("--student", "bilstm", "--preset", "full")
    recipe = (c.epochs, c.lr_schedule, c.ema_decay, c.static_channel, c.vector_vocab)
    assert recipe == (3, "linear", 0.9995, True, 100_000)
    assert (c.n_iter, c.max_length, c.evals_per_epoch, c.glove) == (10, 128, 4, True)


def test_flags_override_the_recipe_and_other_students_and_presets_keep_theirs() -> None:
    flags = ("--no-static-channel", "--vector-vocab", "0", "--epochs", "6")
    c = _config("--student", "bilstm", "--preset", "full", *flags)
    assert (c.static_channel, c.vector_vocab, c.epochs, c.ema_decay) == (False, 0, 6, 0.9995)
    quick = _config("--student", "bilstm", "--preset", "quick")
    assert (quick.static_channel, quick.vector_vocab, quick.ema_decay, quick.epochs) == (False, 0, 0.0, 3)
    textcnn = DistillConfig.from_preset("full", "textcnn", teacher="t", data=DatasetSpec("d.csv"), output_dir="o")
    assert (textcnn.static_channel, textcnn.vector_vocab, textcnn.epochs) == (False, 0, 6)
    # the teacher's word vectors replace GloVe: the GloVe input recipe goes with it
    temb = _config("--student", "bilstm", "--preset", "full", "--teacher-embeddings")
    assert (temb.glove, temb.static_channel, temb.vector_vocab) == (False, False, 0)
