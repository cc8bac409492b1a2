"""The Qwen (v1) tokenizer of Qwen-Audio: byte-level BPE over `qwen.tiktoken`, read without tiktoken.

Follows `QwenLM/Qwen-Audio` `tokenization_qwen.py` (HEAD b50fb95):

- `qwen.tiktoken` holds one `base64(token bytes) rank` pair a line; the rank is the token id.
- The special tokens are appended after the ranks, in this order: `<|endoftext|>`, `<|im_start|>`,
  `<|im_end|>`, `<|extra_0|>` ... `<|extra_204|>`, then the 3,314 audio specials of `AUDIO_ST`
  (`[[[AUDIO:modality]]]` pad, task/language/timestamp tags, ..., `<audio>`, `</audio>`). With the
  released 151,643 ranks this puts `<|endoftext|>` at 151643, the audio pad at 151851 and
  `<audio>`/`</audio>` at 155163/155164 (the config's `audio_start_id`).
- Text is NFC-normalised, split at the allowed special tokens (tiktoken's `allowed_special`), each
  segment split by `PAT_STR`, and each piece encoded by tiktoken's byte-pair merge: merge the adjacent
  pair whose joined bytes have the lowest rank, leftmost first, until no joined pair is a token.
- Decoding joins the bytes and decodes UTF-8 with `errors="replace"`; `skip_special_tokens` drops every
  id from `<|endoftext|>` on, as the release's `_decode` does.
"""

from __future__ import annotations

import base64
import unicodedata
from collections.abc import Collection, Iterable
from pathlib import Path

import regex

from wavllm_eval.errors import InputError

PAT_STR = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
           r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
AUDIO_START, AUDIO_END, AUDIO_PAD = "<audio>", "</audio>", "[[[AUDIO:modality]]]"
LANGUAGES = ("en", "zh", "de", "es", "ko", "fr", "ja", "it")
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END, *(f"<|extra_{i}|>" for i in range(205)))
AUDIO_SPECIAL_TOKENS = (
    AUDIO_PAD,
    "<|startoftranscript|>", "<|startofanalysis|>",
    "<|translate|>", "<|transcribe|>", "<|caption|>", "<|keyword|>",
    "<|unknown|>", *(f"<|{lang}|>" for lang in LANGUAGES), "<|zh_tr|>",
    "<|notimestamps|>", "<|sil|>", "<|timestamps|>", *(f"<|{i * 0.01:.2f}|>" for i in range(3001)),
    "<|caption_audiocaps|>", "<|caption_clotho|>", "<|audioset_ontology|>", "<|caption_plain|>",
    "<|itn|>", "<|wo_itn|>",
    "<|startofentityvalue|>", "<|endofentityvalue|>", "<|startofentitytype|>", "<|endofentitytype|>",
    "<|named_entity_recognition|>", "<|audio_grounding|>", "<|startofword|>", "<|endofword|>", "<|delim|>",
    "<|emotion_recognition|>", "<|music_description|>", "<|note_analysis|>",
    "<|pitch|>", *(f"<|midi_pitch_{i}|>" for i in range(128)),
    "<|velocity|>", *(f"<|midi_velocity_{i}|>" for i in range(128)),
    "<|sonic|>", "<|instrument|>", "<|speaker_meta|>", "<|song_meta|>",
    "<|question|>", "<|answer|>", "<|choice|>", "<|scene|>", "<|event|>", "<|vocal_classification|>",
    "<|speech_understanding|>", "<|scenario|>", "<|action|>", "<|entities|>", "<|speech_edit|>",
    AUDIO_START, AUDIO_END,
)


# Every special token has one of these shapes, and none contains the start of another (`<`, `[`), so
# scanning for the shapes and keeping the allowed ones finds the same leftmost special tokens as
# tiktoken's alternation over all of them (which takes a second to compile for 3,522 tokens).
_SPECIAL_SHAPE = regex.compile(r"<\|[^<>|\[]*\|>|</?audio>|\[\[\[AUDIO:modality\]\]\]")


def split_special(text: str, allowed: Collection[str]) -> list[tuple[str, bool]]:
    """`text` cut into (segment, is_special) at every allowed special token."""
    out: list[tuple[str, bool]] = []
    start = 0
    for match in _SPECIAL_SHAPE.finditer(text):
        if match.group() not in allowed:
            continue
        if match.start() > start:
            out.append((text[start: match.start()], False))
        out.append((match.group(), True))
        start = match.end()
    if start < len(text):
        out.append((text[start:], False))
    return out


def special_token_ids(n_ranks: int) -> dict[str, int]:
    """Every special token's id: the release appends them, in order, after the `n_ranks` BPE ranks."""
    return {token: n_ranks + i for i, token in enumerate(SPECIAL_TOKENS + AUDIO_SPECIAL_TOKENS)}


def read_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """`qwen.tiktoken`: `base64 rank` per line (tiktoken's `load_tiktoken_bpe` format)."""
    try:
        lines = Path(path).read_bytes().splitlines()
    except FileNotFoundError as exc:
        raise InputError(path, "tokenizer vocabulary not found", "copy qwen.tiktoken from the release") from exc
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise InputError(f"{path}:{number}", f"expected 'base64 rank', found {len(parts)} fields",
                             "use the release's qwen.tiktoken")
        ranks[base64.b64decode(parts[0])] = int(parts[1])
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise InputError(path, "ranks are not 0..N-1 without gaps", "use the release's qwen.tiktoken")
    return ranks


def byte_pair_merge(piece: bytes, ranks: dict[bytes, int]) -> list[int]:
    """tiktoken's merge: start from single bytes; join the adjacent pair with the lowest-ranked
    union (leftmost on ties) until no adjacent union is in the vocabulary."""
    if piece in ranks:
        return [ranks[piece]]
    parts = [piece[i: i + 1] for i in range(len(piece))]
    while len(parts) > 1:
        best_rank, best_index = None, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and (best_rank is None or rank < best_rank):
                best_rank, best_index = rank, i
        if best_rank is None:
            break
        parts[best_index: best_index + 2] = [parts[best_index] + parts[best_index + 1]]
    return [ranks[p] for p in parts]


class QwenTokenizer:
    """Encode/decode with the release's vocabulary and special tokens (no transformers tokenizer class:
    the remote `QWenTokenizer` does not run on current transformers)."""

    def __init__(self, ranks: dict[bytes, int]) -> None:
        missing = [b for b in range(256) if bytes([b]) not in ranks]
        if missing:
            raise InputError(None, f"the BPE vocabulary lacks {len(missing)} single bytes (e.g. {missing[0]})",
                             "use the release's qwen.tiktoken")
        self.ranks = ranks
        self.special = special_token_ids(len(ranks))
        self.decoder: dict[int, bytes] = {rank: token for token, rank in ranks.items()}
        self.decoder.update({i: token.encode("utf-8") for token, i in self.special.items()})
        self.eod_id = self.special[ENDOFTEXT]
        self.im_start_id, self.im_end_id = self.special[IM_START], self.special[IM_END]
        self.audio_start_id, self.audio_end_id = self.special[AUDIO_START], self.special[AUDIO_END]
        self.audio_pad_id = self.special[AUDIO_PAD]
        self._pattern = regex.compile(PAT_STR)
        self._cache: dict[bytes, list[int]] = {}

    @classmethod
    def from_file(cls, path: Path) -> QwenTokenizer:
        return cls(read_tiktoken_ranks(path))

    def __len__(self) -> int:
        return len(self.ranks) + len(self.special)

    def token_id(self, token: str) -> int:
        return self.special[token]

    def encode(self, text: str, allowed_special: Collection[str] | str = "all") -> list[int]:
        """tiktoken's `encode(text, allowed_special=..., disallowed_special=())` after NFC, as the
        release's `tokenize`: allowed special tokens become their ids, any other text is BPE."""
        text = unicodedata.normalize("NFC", text)
        allowed = self.special.keys() if allowed_special == "all" else set(allowed_special)
        ids: list[int] = []
        for segment, special in split_special(text, allowed):
            if special:
                ids.append(self.special[segment])
            else:
                ids.extend(self._encode_ordinary(segment))
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        ids = [int(i) for i in ids]
        if skip_special_tokens:
            ids = [i for i in ids if i < self.eod_id]
        return b"".join(self.decoder[i] for i in ids).decode("utf-8", errors="replace")

    def _encode_ordinary(self, text: str) -> list[int]:
        ids: list[int] = []
        for match in self._pattern.finditer(text):
            piece = match.group().encode("utf-8")
            cached = self._cache.get(piece)
            if cached is None:
                cached = byte_pair_merge(piece, self.ranks)
                if len(self._cache) < 100_000:
                    self._cache[piece] = cached
            ids.extend(cached)
        return ids
