"""Our CLIP tokenizer must give open_clip's ids exactly, on clean and on hostile text."""
from __future__ import annotations

import json
import random

import pytest
import torch

open_clip = pytest.importorskip("open_clip")
from open_clip.tokenizer import SimpleTokenizer  # noqa: E402

from unclip_lite.tokenizer import (  # noqa: E402
    ClipTokenizer,
    CompactVocab,
    PromptTooLongError,
    UnknownWordError,
    get_tokenizer,
)

NOUNS = ["cat", "dog", "astronaut", "teapot", "corgi", "lighthouse", "robot", "avocado", "zebra", "violin"]
ADJS = ["red", "tiny", "fluffy", "glowing", "ancient", "Minimalist", "neon", "wooden", "SURREAL"]
PLACES = ["on the moon", "in a forest", "at sunset", "under water", "in Paris", "on a skateboard"]
STYLES = ["oil painting", "photo", "3D render", "pixel art", "watercolor", "sketch"]
FRAGMENTS = [
    # punctuation and contractions
    "Hello, world!!!", "(really?)", "wait... what?!", "it's", "they're", "we'VE", "I'LL", "she'd", "don’t",
    "“quoted”", "«guillemets»", "a--b", "x/y\\z", "#hashtag", "@user", "e-mail: a.b@c.com", "https://x.org/a?b=1&c=2",
    # numbers
    "3.14159", "1,000,000", "2024-01-01", "$99.99", "1st 2nd 3rd", "٣٤٥", "½ cup", "x² + y²", "Ⅻ", "१२३", "0x1F",
    # accents and scripts
    "café", "naïve façade", "Ångström", "cafe\u0301", "STRASSE", "straße", "İstanbul", "ΣΊΣΥΦΟΣ", "Σίσυφος",
    "一只猫坐在垫子上", "猫が好きです", "고양이", "Кошка сидит на ковре", "قطة على السجادة", "חתול", "नमस्ते", "แมว",
    "வணக்கம்", "Ꭰ", "ǅ", "ﬁne ﬂower", "'ſ", "'ſt", "K", "Å",
    # emoji: plain, skin tones, ZWJ families, flags, keycaps, variation selectors
    "🐱", "👍🏽", "👋🏿", "👨‍👩‍👧‍👦", "🧑🏻‍🚀", "🏳️‍🌈", "🇫🇷🇯🇵", "1️⃣", "❤️", "☕", "🫠",
    # HTML entities, including double-escaped ones
    "&amp;", "&lt;b&gt;bold&lt;/b&gt;", "&amp;amp;", "&#39;", "&quot;hi&quot;", "&nbsp;", "&eacute;", "&#x1F600;",
    # mojibake that ftfy repairs
    "cafÃ©", "âœ” done", "Ã¼ber", "doesnâ€™t", "Ã¢â‚¬Å“", "Ñ€ÑƒÑÑÐºÐ¸Ð¹",
    # whitespace oddities and invisibles
    "\t\n  a  cat \u00a0 \u2003 \u3000 \r\n", "zero\u200bwidth", "line\u2028sep", "\x0b\x0c", "soft\u00adhyphen",
    "bell\x07char", "\ufeffbom",
    # the special-token strings themselves
    "<start_of_text>", "<end_of_text>", "</w>", "<|endoftext|>",
]


def _mojibake(s: str) -> str:
    return s.encode("utf-8").decode("latin-1")


def _caption(rng: random.Random) -> str:
    cap = f"a {rng.choice(STYLES)} of a {rng.choice(ADJS)} {rng.choice(NOUNS)} {rng.choice(PLACES)}"
    return rng.choice([cap, cap.capitalize(), cap.upper(), cap.title() + "."])


def _random_unicode(rng: random.Random, n: int) -> str:
    blocks = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F),
              (0x2000, 0x206F), (0x3040, 0x30FF), (0x4E00, 0x4FFF), (0xAC00, 0xAD00), (0x1F300, 0x1F64F)]
    return "".join(chr(rng.randint(*rng.choice(blocks))) for _ in range(n))


def make_corpus(seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = ["", " ", "   \n\t ", "a", "A", "!", "...", "0", "12345678901234567890" * 3] + FRAGMENTS
    texts += [_caption(rng) for _ in range(300)]
    texts += [_mojibake(_caption(rng) + " " + rng.choice(FRAGMENTS)) for _ in range(40)]
    for _ in range(500):  # captions spliced with fragments, odd separators, random case
        parts = [_caption(rng)] + rng.sample(FRAGMENTS, rng.randint(1, 4))
        rng.shuffle(parts)
        text = rng.choice([" ", "", "  ", "\n", ", ", "&nbsp;", "\u3000"]).join(parts)
        texts.append(text.swapcase() if rng.random() < 0.2 else text)
    texts += [_random_unicode(rng, rng.randint(1, 40)) for _ in range(150)]
    for _ in range(80):  # over-long: well past 77 tokens
        texts.append(" ".join(_caption(rng) for _ in range(rng.randint(6, 15))))
    texts += ["a" * 300, "supercalifragilisticexpialidocious" * 10, "🐱" * 100, "ab " * 200]
    return texts


CORPUS = make_corpus()


@pytest.fixture(scope="module")
def tok() -> ClipTokenizer:
    return get_tokenizer()


def test_corpus_is_big_and_varied(tok):
    assert len(CORPUS) >= 1000 and len(set(CORPUS)) >= 1000
    assert sum(len(tok.encode(t)) > 77 for t in CORPUS) >= 50  # plenty of over-long texts


def test_vocab_basics(tok):
    assert tok.vocab_size == 49408
    assert (tok.sot_token_id, tok.eot_token_id) == (49406, 49407)
    assert get_tokenizer() is tok  # cached


def test_encode_matches_open_clip(tok):
    reference = SimpleTokenizer()
    mismatches = [t for t in CORPUS if tok.encode(t) != reference.encode(t)]
    assert not mismatches, f"{len(mismatches)} mismatches, e.g. {mismatches[:3]!r}"


@pytest.mark.parametrize("context_length", [77, 32, 16])
def test_call_matches_open_clip_tokenize(tok, context_length):
    ours = tok(CORPUS, context_length=context_length)
    theirs = open_clip.tokenize(CORPUS, context_length=context_length)
    assert ours.dtype == torch.long and ours.shape == (len(CORPUS), context_length)
    bad = (ours != theirs).any(dim=1).nonzero().flatten().tolist()
    assert not bad, f"{len(bad)} rows differ, e.g. {[CORPUS[i] for i in bad[:3]]!r}"


def test_single_string_and_truncation_keeps_end_token(tok):
    out = tok("a photo of a cat")
    assert out.shape == (1, 77) and out[0, 0] == tok.sot_token_id
    long = tok("cat " * 100, context_length=8)
    assert long[0].tolist() == [tok.sot_token_id] + [tok.encode("cat")[0]] * 6 + [tok.eot_token_id]


@pytest.mark.parametrize("text", ["a photo of a cat", "an oil painting of a corgi on the moon",
                                  "two dogs playing in the snow", "un café à paris"])
def test_decode_round_trip(tok, text):
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok(text)[0]) == text  # a padded row: start, end and padding are dropped


def test_decode_is_lossy_but_matches_open_clip(tok):
    assert tok.decode(tok.encode("Paris,  2024!")) == "paris , 2 0 2 4 !"  # spaces around chunks
    reference = SimpleTokenizer()
    for text in CORPUS[::7]:
        ids = tok.encode(text)  # open_clip keeps a trailing space; we strip it
        assert tok.decode(ids, skip_special=False) == reference.decode(ids).rstrip(" ")


def test_too_long_raises_with_truncate_false(tok):
    text = "a very long caption " * 30
    with pytest.raises(PromptTooLongError, match=r"context_length=77") as err:
        tok([text], truncate=False)
    assert "122 tokens" in str(err.value) and isinstance(err.value, ValueError)
    tok("a" + " b" * 74, truncate=False)  # exactly 77 with start/end: fits


@pytest.mark.parametrize("context_length", [0, 1, -5])
def test_context_length_too_small(tok, context_length):
    with pytest.raises(ValueError, match="context_length"):
        tok("a cat", context_length=context_length)


SMALL_CORPUS = ["a photo of a cat", "a photo of a dog on the moon", "an oil painting of a red teapot"]


def test_compact_vocab_round_trips_to_clip_ids(tok):
    vocab = CompactVocab.from_corpus(SMALL_CORPUS)
    assert len(vocab) == vocab.size < 30
    for ctx in (77, 16, 5):
        compact = vocab(SMALL_CORPUS, context_length=ctx)
        assert compact.max() < vocab.size
        assert torch.equal(vocab.to_clip_ids(compact), tok(SMALL_CORPUS, context_length=ctx))
    assert vocab.decode(vocab(SMALL_CORPUS[1])[0]) == SMALL_CORPUS[1]


def test_compact_vocab_json_save_load():
    vocab = CompactVocab.from_corpus(SMALL_CORPUS)
    loaded = CompactVocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert loaded.size == vocab.size
    assert torch.equal(loaded(SMALL_CORPUS), vocab(SMALL_CORPUS))
    with pytest.raises(ValueError):
        CompactVocab.from_dict({"clip_ids": [1, 2]})


def test_compact_vocab_unknown_words(tok):
    vocab = CompactVocab.from_corpus(SMALL_CORPUS)
    with pytest.raises(UnknownWordError, match="zebra") as err:
        vocab("a photo of a zebra")
    assert isinstance(err.value, ValueError) and "unknown='unk'" in str(err.value)
    out = vocab("a photo of a zebra", unknown="unk")
    n = len(tok.encode("zebra"))  # one <unk> per unknown BPE piece keeps ClipTokenizer's layout
    assert out[0, 5 : 5 + n].tolist() == [CompactVocab.UNK] * n
    assert vocab.decode(out[0]) == "a photo of a <unk>"
    with pytest.raises(ValueError, match="unk"):
        vocab.to_clip_ids(out)


def test_compact_vocab_truncation_matches_clip(tok):
    vocab = CompactVocab.from_corpus(["cat"])
    with pytest.raises(PromptTooLongError, match="context_length=4"):
        vocab("cat cat cat", context_length=4, truncate=False)
    assert vocab("cat cat cat", context_length=4)[0].tolist() == [1, 4, 4, 2]
    with pytest.raises(ValueError, match="context_length"):
        vocab("cat", context_length=1)


def test_missing_vocab_file_is_explained(monkeypatch):
    import importlib.util

    from unclip_lite import tokenizer

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="bpe_simple_vocab_16e6.txt.gz.*pip install open_clip_torch"):
        tokenizer.find_vocab_file()
