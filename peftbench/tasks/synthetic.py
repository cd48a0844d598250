"""A generated sentiment-like task for tests: learnable in a few steps, no files, no download."""

from __future__ import annotations

import random

from datasets import Dataset

POSITIVE = [
    "good",
    "great",
    "fine",
    "wonderful",
    "brilliant",
    "moving",
    "funny",
    "charming",
    "superb",
    "enjoyable",
    "delightful",
]
NEGATIVE = [
    "bad",
    "awful",
    "boring",
    "dull",
    "poor",
    "terrible",
    "weak",
    "tedious",
    "messy",
    "clumsy",
    "bland",
    "lifeless",
]
FILLER = [
    "the",
    "a",
    "movie",
    "film",
    "story",
    "plot",
    "actor",
    "scene",
    "music",
    "ending",
    "cast",
    "script",
    "is",
    "was",
    "very",
    "so",
    "and",
    "but",
]


def generate(num_examples: int = 256, seed: int = 0, min_words: int = 4, max_words: int = 12) -> Dataset:
    """Sentences of filler words with one or two cue words; label 1 when the cues are positive."""
    rng = random.Random(seed)
    texts, labels = [], []
    for index in range(num_examples):
        label = index % 2
        words = [rng.choice(FILLER) for _ in range(rng.randint(min_words, max_words))]
        for _ in range(rng.randint(1, 2)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if label else NEGATIVE))
        texts.append(" ".join(words))
        labels.append(label)
    return Dataset.from_dict({"text": texts, "label": labels})
