"""Tokenizers for the students, built and saved with the Hugging Face ``tokenizers`` library.

The server tokenizes with ``tokenizers`` alone (no transformers or torch at serving time),
so every student ships a ``tokenizer.json`` and training encodes with that same object:
whatever ids a student was trained on are exactly the ids it is served with.

Two kinds:

* ``train_word_tokenizer`` - a word-level vocabulary for the BiLSTM and TextCNN students
  (Tang et al. 2019 and Kim 2014 work on words, and GloVe is a word-level vocabulary).
* ``teacher_wordpiece`` - the teacher's own WordPiece tokenizer, for the Transformer student
  that starts from the teacher's weights.

Padding and truncation are the caller's: none is stored in a tokenizer built or loaded here,
so a ``tokenizer.json`` never silently pads every text to a fixed width at serving time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from tokenizers.trainers import WordLevelTrainer

from kdserve.core.errors import ConfigError, KdserveError
from kdserve.train.checkpoint import resolve_model_source

TOKENIZER_FILE = "tokenizer.json"
PAD_TOKEN, UNK_TOKEN, MASK_TOKEN = "[PAD]", "[UNK]", "[MASK]"
#: Fixed ids of the word-level specials: [PAD] = 0 matches the students' ``padding_idx=0``;
#: [MASK] gets a real id so text augmentation's masked words map to a learned vector, not [UNK].
WORD_SPECIALS = (PAD_TOKEN, UNK_TOKEN, MASK_TOKEN)
#: Scripts written without spaces between words, split one character a token: Hiragana and
#: Katakana, CJK Unified Ideographs (Extension A, the basic block, Compatibility, Extension B) and
#: Hangul syllables. ``Whitespace`` alone keeps a whole Chinese clause as one "word" (``\w+``), so
#: a 30-character post became 3 tokens, nearly all [UNK] at serving time; single characters are
#: what bert-base-chinese's WordPiece uses too.
CJK_CHARACTERS = "[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002a6df]"


def word_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """CJK characters isolated, then ``Whitespace``; text without CJK splits exactly as before."""
    return pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(CJK_CHARACTERS), behavior="isolated"), pre_tokenizers.Whitespace()]
    )


class TokenizerError(KdserveError):
    """A tokenizer file is missing or unreadable."""


def train_word_tokenizer(
    texts: Iterable[str], vocab_size: int = 30000, min_frequency: int = 1, lowercase: bool = True
) -> Tokenizer:
    """Train a WordLevel tokenizer on ``texts``: [PAD] = 0, [UNK] = 1, [MASK] = 2, then words by frequency.

    ``vocab_size`` counts the three specials. Normalizer: NFKC (folds compatibility forms such
    as full-width letters and ligatures, so they share the ordinary word's id) then, with
    ``lowercase``, Lowercase - GloVe 6B is lower-cased, so lower-casing maximises GloVe hits.
    Pre-tokenizer: ``Whitespace`` (regex ``\\w+|[^\\w\\s]+``), which also splits punctuation off
    words: "good." and "good" share an id and "!" becomes its own token, which matches how
    GloVe was tokenized and keeps the vocabulary small; before it, each CJK character is split off
    as a token of its own (``CJK_CHARACTERS``). The specials are added tokens, so a
    literal "[MASK]" in a text maps to id 2 before normalization touches it. No post-processor:
    word-level students take no [CLS]/[SEP].
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= len(WORD_SPECIALS):
        raise ConfigError(f"vocab_size must be an integer > {len(WORD_SPECIALS)}, got {vocab_size!r}")
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 1:
        raise ConfigError(f"min_frequency must be a positive integer, got {min_frequency!r}")
    tokenizer = Tokenizer(WordLevel(unk_token=UNK_TOKEN))
    steps: list[normalizers.Normalizer] = [normalizers.NFKC()]
    if lowercase:
        steps.append(normalizers.Lowercase())
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = word_pre_tokenizer()
    trainer = WordLevelTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(WORD_SPECIALS), show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    # The trainer puts specials first in the order given; check rather than trust it.
    for expected, token in enumerate(WORD_SPECIALS):
        if tokenizer.token_to_id(token) != expected:
            raise KdserveError(f"word tokenizer put {token} at id {tokenizer.token_to_id(token)}, expected {expected}")
    return tokenizer


def extend_word_vocab(tokenizer: Tokenizer, words: Iterable[str]) -> tuple[Tokenizer, int]:
    """A copy of word-level ``tokenizer`` that also knows ``words``, appended after its existing ids.

    Existing ids do not move, so vectors and logits cached for the original vocabulary stay valid.
    A word is added only when the tokenizer could ever produce it: normalizing it changes nothing
    and the pre-tokenizer keeps it whole (GloVe lists "Paris" lower-cased, which is fine, but also
    entries like "u.s." or "can't" that ``Whitespace`` splits, which could never be looked up).
    Returns (tokenizer, number of words added).
    """
    data = json.loads(tokenizer.to_str())
    if data.get("model", {}).get("type") != "WordLevel":
        raise ConfigError("only a word-level tokenizer can take extra words")
    vocab: dict[str, int] = data["model"]["vocab"]
    next_id = max(vocab.values(), default=-1) + 1
    normalizer, pre_tokenizer = tokenizer.normalizer, tokenizer.pre_tokenizer
    added = 0
    for word in words:
        if word in vocab or (normalizer is not None and normalizer.normalize_str(word) != word):
            continue
        if pre_tokenizer is not None and [piece for piece, _ in pre_tokenizer.pre_tokenize_str(word)] != [word]:
            continue
        vocab[word] = next_id
        next_id += 1
        added += 1
    return Tokenizer.from_str(json.dumps(data)), added


def teacher_wordpiece(teacher_folder: str | Path) -> Tokenizer:
    """The teacher's ``tokenizer.json`` (WordPiece for BERT/MiniLM), padding and truncation cleared.

    The Transformer student built by ``TransformerStudent.from_teacher`` copies the teacher's
    word-embedding matrix, whose row i is the vector of the teacher's WordPiece token i; it
    must therefore see exactly the teacher's ids, or every copied embedding would belong to a
    different token. Sharing the tokenizer also lets distillation feed one batch of ids to
    teacher and student alike. ``teacher_folder`` may be ``DEFAULT_TEACHER``.
    """
    folder = Path(resolve_model_source(str(teacher_folder)))
    tokenizer = load_tokenizer(folder)
    # Sentence-transformers checkpoints store Fixed(128) padding; the caller decides instead.
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def encode_batch(tokenizer: Tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of each text, truncated to ``max_length`` ids including special tokens, unpadded.

    Special tokens are whatever the tokenizer's post-processor adds: [CLS] ... [SEP] for the
    teacher's WordPiece, none for the word-level tokenizer; truncation keeps room for them,
    exactly as ``transformers`` tokenizers do with ``truncation=True``. The tokenizer's own
    padding/truncation settings are restored afterwards, so a shared tokenizer is not altered.
    """
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ConfigError(f"max_length must be a positive integer, got {max_length!r}")
    if isinstance(texts, str):
        raise ConfigError("encode_batch takes a sequence of texts, not one string")
    truncation, padding = tokenizer.truncation, tokenizer.padding
    try:
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=max_length)
        encodings = tokenizer.encode_batch(list(texts), add_special_tokens=True)
    except Exception as exc:
        # Too small a max_length for the specials is the one error a user can cause here.
        raise ConfigError(f"cannot encode with max_length={max_length}: {exc}") from None
    finally:
        if truncation is None:
            tokenizer.no_truncation()
        else:
            tokenizer.enable_truncation(**truncation)
        if padding is not None:
            # ``padding`` reports ``length`` (Fixed) but takes it as ``length`` too; drop None keys.
            tokenizer.enable_padding(**{k: v for k, v in padding.items() if v is not None})
    return [encoding.ids for encoding in encodings]


def pad_token_id(tokenizer: Tokenizer) -> int:
    """Id of [PAD] (0 for both kinds here); the batching code pads with it."""
    pad = tokenizer.token_to_id(PAD_TOKEN)
    if pad is None:
        raise TokenizerError(f"tokenizer has no {PAD_TOKEN} token")
    return pad


def save_tokenizer(tokenizer: Tokenizer, folder: str | Path) -> Path:
    """Write ``folder/tokenizer.json`` (creating the folder) and return its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / TOKENIZER_FILE
    tokenizer.save(str(path))
    return path


def load_tokenizer(folder: str | Path) -> Tokenizer:
    """Read ``folder/tokenizer.json`` (or the file itself when ``folder`` is a .json path)."""
    path = Path(folder)
    if path.is_dir() or path.suffix != ".json":
        path = path / TOKENIZER_FILE
    if not path.is_file():
        raise TokenizerError(f"tokenizer file not found: {path}")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TokenizerError(f"cannot read tokenizer {path}: {first_line}") from None
