"""CLIP's byte-level BPE tokenizer, rebuilt so every step is visible. Text -> ids in 4 steps:

1. **clean**: fix mojibake (ftfy), unescape HTML twice (``&amp;amp;`` -> ``&``), collapse
   whitespace, lowercase: exactly open_clip's default, so our ids are exactly its ids.
2. **split** into chunks with a regex: contractions, letter runs, single digits, and runs
   of everything else (punctuation, emoji, combining marks).
3. **bytes -> symbols**: a chunk's UTF-8 bytes map to 256 printable stand-ins, so any
   string (emoji, Arabic, garbage) is spellable and there is never an ``<unk>``.
4. **merge**: fuse the adjacent pair learned earliest (lowest rank in the merges file) until
   no learned pair is left. A chunk's last symbol carries ``</w>``: decode puts spaces there.

Vocab (open_clip's copy of OpenAI's ``bpe_simple_vocab_16e6.txt.gz``): 256 bytes, 256
bytes+``</w>``, 48,894 merges, ``<start_of_text>``, ``<end_of_text>`` = 49,408 ids.
"""
from __future__ import annotations

import gzip
import html
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import ftfy
import regex
import torch

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2  # OpenAI kept only the first 48,894 merges of the file
SOT, EOT = "<start_of_text>", "<end_of_text>"

# Alternatives are tried in order. Special tokens come first, so a literal "<end_of_text>" in
# a caption becomes the real end token (as in open_clip). IGNORECASE looks redundant on
# lowercased text but is kept for parity: it lets "'ſ" (long s) match the "'s" contraction.
CHUNK_PATTERN = regex.compile(
    rf"{SOT}|{EOT}"
    r"|'s|'t|'re|'ve|'m|'ll|'d"  # English contractions split off their word
    r"|\p{L}+"  # a run of letters, any script
    r"|\p{N}"  # ONE digit: "2024" is four tokens, so numbers never bloat the vocab
    r"|[^\s\p{L}\p{N}]+",  # everything else: punctuation, emoji, combining marks
    regex.IGNORECASE,
)


class PromptTooLongError(ValueError):
    """A text needs more than ``context_length`` tokens and ``truncate=False`` was asked."""


class UnknownWordError(ValueError):
    """A word uses BPE tokens that a :class:`CompactVocab` was not built with."""


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def clean_text(text: str) -> str:
    """open_clip's default cleaning: ftfy, double HTML unescape, whitespace collapse, lower."""
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split()).lower()  # str.split() knows every Unicode space


def bytes_to_symbols() -> dict[int, str]:
    """Bytes as printable characters, so the merges file is readable ("Ã©" = the bytes of
    "é"). Printable Latin-1 maps to itself; space and control bytes move to U+0100 and up."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    moved = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + i) for i, b in enumerate(moved)})  # dict order = vocab id order
    return table


def find_vocab_file() -> Path:
    """The vocab file bundled with open_clip, found without importing open_clip (slow)."""
    spec = importlib.util.find_spec("open_clip")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (path := Path(folder) / VOCAB_FILE).is_file():
            return path
    raise FileNotFoundError(
        f"CLIP's BPE vocabulary {VOCAB_FILE} was not found in the open_clip package. Install it "
        "with `pip install open_clip_torch` (or `pip install -e .` in this repo), or pass "
        "ClipTokenizer(vocab_path=...) pointing at a copy of the file."
    )


def pack_tokens(rows: list[list[int]], texts: Sequence[str], context_length: int, truncate: bool,
          sot: int, eot: int) -> torch.LongTensor:
    """[start, *ids, end] per row, zero-padded to [N, context_length]. Truncation matches
    open_clip: cut, then overwrite the last slot with the end token (CLIP pools there)."""
    if context_length < 2:
        raise ValueError(f"context_length must be >= 2 (room for start and end), got {context_length}")
    out = torch.zeros(len(rows), context_length, dtype=torch.long)
    for i, ids in enumerate(rows):
        row = [sot, *ids, eot]
        if len(row) > context_length:
            if not truncate:
                raise PromptTooLongError(
                    f"text {i} {_short(texts[i])} is {len(row)} tokens with start/end, over the limit "
                    f"of context_length={context_length}; shorten it or pass truncate=True"
                )
            row = row[: context_length - 1] + [eot]
        out[i, : len(row)] = torch.tensor(row)
    return out


class ClipTokenizer:
    """CLIP's tokenizer: ``tok("a photo of a cat")`` -> LongTensor [1, 77], like open_clip."""

    def __init__(self, vocab_path: str | Path | None = None):
        with gzip.open(vocab_path or find_vocab_file(), "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]  # line 0: a header
        self.byte_to_symbol = bytes_to_symbols()
        self.symbol_to_byte = {s: b for b, s in self.byte_to_symbol.items()}
        symbols = list(self.byte_to_symbol.values())  # ids: bytes, word-final bytes, merges, specials
        self.id_to_token = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [SOT, EOT]
        self.token_to_id = {token: i for i, token in enumerate(self.id_to_token)}
        self.merge_rank = {pair: rank for rank, pair in enumerate(merges)}
        self._cache: dict[str, list[int]] = {SOT: [self.sot_token_id], EOT: [self.eot_token_id]}

    @property
    def sot_token_id(self) -> int:
        return self.token_to_id[SOT]

    @property
    def eot_token_id(self) -> int:
        return self.token_to_id[EOT]

    @property
    def vocab_size(self) -> int:
        return len(self.id_to_token)

    def bpe(self, symbols: str) -> list[str]:
        """Merge one chunk's byte symbols, lowest-rank pair first, until nothing merges."""
        word = [*symbols[:-1], symbols[-1] + "</w>"]
        while len(word) > 1:
            best = min(zip(word, word[1:]), key=lambda pair: self.merge_rank.get(pair, float("inf")))
            if best not in self.merge_rank:
                break
            merged, i = [], 0
            while i < len(word):  # fuse every occurrence, left to right, without overlaps
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word

    def encode_words(self, text: str) -> list[tuple[str, list[int]]]:
        """Clean and split ``text``: each chunk with its BPE ids."""
        out = []
        for chunk in CHUNK_PATTERN.findall(clean_text(text)):
            if (ids := self._cache.get(chunk)) is None:
                symbols = "".join(self.byte_to_symbol[b] for b in chunk.encode("utf-8"))
                ids = [self.token_to_id[t] for t in self.bpe(symbols)]
                if len(self._cache) < 200_000:  # captions reuse words; bound the memory anyway
                    self._cache[chunk] = ids
            out.append((chunk, ids))
        return out

    def encode(self, text: str) -> list[int]:
        """BPE ids of ``text``, without start/end tokens."""
        return [i for _, ids in self.encode_words(text) for i in ids]

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Text of ``ids`` (``skip_special``: drop start, stop at end). Lossy: "Cat, 42" -> "cat ,
        4 2". Same text as open_clip's decode, minus its trailing space."""
        data = bytearray()
        for token in (self.id_to_token[int(i)] for i in ids):
            if token in (SOT, EOT):
                if skip_special and token == EOT:
                    break
                data += b"" if skip_special else token.encode()  # no space after, as open_clip
                continue
            data += bytes(self.symbol_to_byte[s] for s in token.removesuffix("</w>"))
            data += b" " if token.endswith("</w>") else b""
        return data.decode("utf-8", errors="replace").rstrip(" ")

    def __call__(self, texts: str | Sequence[str], context_length: int = 77,
                 truncate: bool = True) -> torch.LongTensor:
        """Ids [N, context_length]: start, BPE ids, end, zeros (the same as open_clip.tokenize)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return pack_tokens([self.encode(t) for t in texts], texts, context_length, truncate,
                     self.sot_token_id, self.eot_token_id)


@lru_cache(maxsize=1)
def get_tokenizer() -> ClipTokenizer:
    """One shared ClipTokenizer: building the 49k-entry tables takes a noticeable moment."""
    return ClipTokenizer()


class CompactVocab:
    """The few BPE ids a corpus uses, renumbered 0..V-1 for a tiny text encoder.

    A 128-wide model with CLIP's 49,408-row embedding spends 6.3M parameters on rows it never
    reads. Ids: 0 pad, 1 start, 2 end, 3 unknown, then the corpus's CLIP ids in sorted order.
    One compact id per BPE id, so rows line up slot by slot with :class:`ClipTokenizer`'s.
    """

    PAD, SOT, EOT, UNK = 0, 1, 2, 3
    NUM_SPECIAL = 4

    def __init__(self, clip_ids: Iterable[int], tokenizer: ClipTokenizer | None = None):
        self.tokenizer = tokenizer or get_tokenizer()
        sot, eot = self.tokenizer.sot_token_id, self.tokenizer.eot_token_id
        self.clip_ids = sorted({int(i) for i in clip_ids} - {sot, eot})  # "<end_of_text>" typed
        self.clip_to_compact = {sot: self.SOT, eot: self.EOT}  # in a caption encodes as EOT
        self.clip_to_compact.update({c: k for k, c in enumerate(self.clip_ids, start=self.NUM_SPECIAL)})

    @classmethod
    def from_corpus(cls, texts: Iterable[str], tokenizer: ClipTokenizer | None = None) -> CompactVocab:
        """Build from every BPE id that the texts use."""
        tokenizer = tokenizer or get_tokenizer()
        return cls({i for text in texts for i in tokenizer.encode(text)}, tokenizer)

    @property
    def size(self) -> int:
        return self.NUM_SPECIAL + len(self.clip_ids)

    def __len__(self) -> int:
        return self.size

    def to_dict(self) -> dict:
        """JSON-ready; save it beside a checkpoint so the model's ids keep their meaning."""
        return {"kind": "unclip_lite.CompactVocab", "version": 1, "clip_vocab": VOCAB_FILE,
                "specials": ["<pad>", SOT, EOT, "<unk>"], "clip_ids": list(self.clip_ids)}

    @classmethod
    def from_dict(cls, d: dict, tokenizer: ClipTokenizer | None = None) -> CompactVocab:
        if d.get("kind") != "unclip_lite.CompactVocab" or d.get("version") != 1:
            raise ValueError(f"not a CompactVocab v1 dict: kind={d.get('kind')!r}, version={d.get('version')!r}")
        return cls(d["clip_ids"], tokenizer)

    def _lookup(self, word: str, ids: list[int], text: str, unknown: str) -> list[int]:
        out = [self.clip_to_compact.get(i, self.UNK) for i in ids]
        if unknown == "error" and self.UNK in out:
            raise UnknownWordError(
                f"word {word!r} (in text {_short(text)}) uses BPE tokens outside this {self.size}-id "
                f"CompactVocab; add the text to the corpus and rebuild, or pass unknown='unk' to map "
                f"them to <unk> (id {self.UNK})"
            )
        return out

    def __call__(self, texts: str | Sequence[str], context_length: int = 77, truncate: bool = True,
                 unknown: str = "error") -> torch.LongTensor:
        """Compact ids [N, context_length], laid out and truncated as ClipTokenizer's. With
        ``unknown="unk"`` each BPE piece outside the vocab becomes ``<unk>`` (id 3), one for one."""
        if unknown not in ("error", "unk"):
            raise ValueError(f"unknown must be 'error' or 'unk', got {unknown!r}")
        texts = [texts] if isinstance(texts, str) else list(texts)
        words = [self.tokenizer.encode_words(t) for t in texts]
        rows = [[k for w, ids in ws for k in self._lookup(w, ids, t, unknown)] for t, ws in zip(texts, words)]
        return pack_tokens(rows, texts, context_length, truncate, self.SOT, self.EOT)

    def from_clip_ids(self, clip_ids: torch.Tensor) -> torch.LongTensor:
        """Compact ids for a tensor of CLIP ids of any shape (e.g. ``open_clip.tokenize``'s
        output): padding stays 0, ids outside the vocab become ``<unk>``."""
        clip_ids = torch.as_tensor(clip_ids, dtype=torch.long)
        table = torch.full((self.tokenizer.vocab_size,), self.UNK, dtype=torch.long)
        table[0] = self.PAD
        for clip_id, compact_id in self.clip_to_compact.items():
            table[clip_id] = compact_id
        return table[clip_ids]

    def to_clip_ids(self, compact_ids: torch.Tensor | Sequence[int]) -> torch.LongTensor:
        """CLIP ids for compact ids of any shape; padding stays 0. ``<unk>`` has no CLIP id."""
        compact = torch.as_tensor(compact_ids, dtype=torch.long)
        if (compact == self.UNK).any():
            raise ValueError(f"<unk> (id {self.UNK}) has no CLIP id; encode with unknown='error' to avoid it")
        if compact.numel() and (compact.min() < 0 or compact.max() >= self.size):
            raise ValueError(f"compact ids must be in [0, {self.size}), got {compact.min()}..{compact.max()}")
        table = torch.tensor([0, self.tokenizer.sot_token_id, self.tokenizer.eot_token_id, 0, *self.clip_ids])
        return table[compact]

    def decode(self, compact_ids: Iterable[int]) -> str:
        """Text of compact ids: skips padding and start, stops at end, writes ``<unk>``."""
        parts, run = [], []
        for k in map(int, compact_ids):
            if k == self.EOT:
                break
            if k == self.UNK:
                parts += [self.tokenizer.decode(run), "<unk>"]
                run = []
            elif k >= self.NUM_SPECIAL:
                run.append(self.clip_ids[k - self.NUM_SPECIAL])
        parts.append(self.tokenizer.decode(run))
        return " ".join(p for p in parts if p)
