"""Offline stand-ins for tests: a tokenizer built in code, no download at all.

The tokenizer is BERT-shaped (WordPiece, [CLS]/[SEP]) over single characters plus a few hundred
frequent English words, so any English text tokenizes without an [UNK] flood and sequences stay
short enough for fast tests.
"""

from __future__ import annotations

import string

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from transformers import PreTrainedTokenizerFast

from peftbench.tasks.synthetic import NEGATIVE, POSITIVE

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Common English function words and review vocabulary, the synthetic task's cue words (imported, so the two
# never drift apart), and the question/arithmetic words of the generation fixtures. Order fixes the token ids.
COMMON_WORDS = [
    "the",
    "a",
    "an",
    "and",
    "or",
    "but",
    "of",
    "to",
    "in",
    "on",
    "for",
    "with",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "it",
    "this",
    "that",
    "these",
    "those",
    "i",
    "you",
    "he",
    "she",
    "we",
    "they",
    "my",
    "your",
    "his",
    "her",
    "our",
    "their",
    "not",
    "no",
    "very",
    "so",
    "too",
    "just",
    "more",
    "most",
    "less",
    "movie",
    "film",
    "story",
    "plot",
    "actor",
    "acting",
    "scene",
    "scenes",
    "director",
    "script",
    "cast",
    "music",
    "ending",
    "character",
    *POSITIVE,
    *NEGATIVE,
    "question",
    "answer",
    "what",
    "who",
    "where",
    "when",
    "why",
    "how",
    "number",
    "plus",
    "minus",
    "equals",
]


def char_vocab() -> dict[str, int]:
    pieces = list(dict.fromkeys(SPECIAL_TOKENS + COMMON_WORDS))
    chars = string.ascii_lowercase + string.digits + string.punctuation
    pieces += [c for c in chars if c not in pieces]
    pieces += [f"##{c}" for c in chars]
    return {piece: index for index, piece in enumerate(pieces)}


def char_tokenizer(model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """A small WordPiece tokenizer (about 250 entries) that needs no file."""
    vocab = char_vocab()
    tokenizer = Tokenizer(WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
    )
