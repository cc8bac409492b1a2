"""Speech translation En→De: CoVoST 2 (test split) and MuST-C tst-COMMON, sacreBLEU corpus BLEU + chrF.

CoVoST 2: the `covost_v2.en_de` TSV is read as the official scripts read it (tab-separated, quoting
off, backslash escapes, no NA filtering): its sentences hold stray double quotes that a default CSV
reader would use to merge rows. Ids are the clip name without `.mp3`; audio is the Common Voice clip.
MuST-C: each yaml entry of `txt/tst-COMMON.yaml` is a segment (offset, duration) of a talk WAV,
aligned line by line with `tst-COMMON.en` / `.de`; segments are read by seeking, never a whole talk.
Ids follow fairseq: `<talk>_<i>`, i the segment's rank within its talk when the offsets are sorted
*as strings* (fairseq reads the yaml with `yaml.BaseLoader`, so "9.500000" sorts after "16.080000";
WavLLM's released outputs carry these ids).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from wavllm_eval.errors import InputError
from wavllm_eval.manifest import header_duration_s
from wavllm_eval.metrics.base import RowMetric
from wavllm_eval.metrics.bleu import CorpusBLEU, CorpusChrF
from wavllm_eval.registry import register_task
from wavllm_eval.task import BaseTask
from wavllm_eval.textfile import read_lines, read_text
from wavllm_eval.types import AudioRef, Sample

# The instruction of WavLLM's released en2de.tsv.
WAVLLM_ST_INSTRUCTION = "Translate the audio clip into German."
COVOST_TEST_SIZE = 15_531

_TRANSLATION_PREAMBLE = re.compile(
    r"^\s*(?:sure[,!.]?\s*)?(?:here\s+is\s+|here's\s+)?(?:the\s+)?(?:german\s+)?translation(?:\s+in(?:to)?\s+german)?\s*(?:is)?\s*:\s*",
    re.IGNORECASE,
)


def strip_translation_preamble(text: str) -> str:
    """Drop a lead-in ending in a colon ("The German translation is: ...") and wrapping quotes."""
    stripped = _TRANSLATION_PREAMBLE.sub("", text, count=1).strip()
    for left, right in (('"', '"'), ("„", "“"), ("“", "”"), ("'", "'")):
        if len(stripped) >= 2 and stripped.startswith(left) and stripped.endswith(right):
            return stripped[1:-1].strip()
    return stripped


class _TranslationTask(BaseTask):
    version = 1
    max_new_tokens = 256
    default_instruction = WAVLLM_ST_INSTRUCTION
    instruction_variants = (
        "Translate the speech in this audio into German.",
        "Listen to the recording and give its German translation.",
        "What would the speaker's words be in German? Reply with the translation only.",
        "Render the spoken English of this clip as German text.",
    )
    headlines = ("bleu",)
    breakdown_keys = ("duration_bucket",)

    def make_metrics(self) -> list[RowMetric]:
        return [CorpusBLEU("bleu", strip_translation_preamble), CorpusChrF("chrf", strip_translation_preamble)]

    def settings(self) -> Mapping[str, Any]:
        return {"bleu": {"signature": CorpusBLEU("bleu").signature, "prediction_cleaning": "strip_translation_preamble/v1"},
                "chrf": {"signature": CorpusChrF("chrf").signature}}


@register_task("covost2-en-de", group="st")
class CoVoST2EnDe(_TranslationTask):
    """CoVoST 2 En→De test split (15,531 Common Voice clips), sacreBLEU corpus BLEU."""

    data_layout = ("covost2/covost_v2.en_de.test.tsv (or covost_v2.en_de.tsv with its split column) + Common Voice "
                   "en/clips/*.mp3 beside it, or a WavLLM en2de.tsv")

    def default_data_path(self, data_dir: Path) -> Path:
        folder = data_dir / "covost2"
        for name in ("covost_v2.en_de.test.tsv", "covost_v2.en_de.tsv"):
            if (folder / name).is_file():
                return folder / name
        return folder / "covost_v2.en_de.test.tsv"

    released_size = COVOST_TEST_SIZE
    size_hint = ("the split TSV must come from covost_v2.en_de.tsv joined with Common Voice v4's en/validated.tsv; "
                 "a later Common Voice release changes the join")

    def load_native(self, data: Path) -> Iterator[Sample]:
        yield from read_covost(data)


def read_covost(tsv: Path) -> Iterator[Sample]:
    """Test rows of a CoVoST 2 split TSV (path, sentence, translation, client_id) or of the full
    release TSV (path, translation, split[, sentence]); clips are looked up next to it."""
    rows = _read_covost_rows(tsv)
    if rows and "split" in rows[0]:
        rows = [r for r in rows if r["split"] == "test"]
    clips = find_clips_dir(tsv)
    for row in rows:
        clip = clips / row["path"]
        yield Sample(
            id=row["path"].removesuffix(".mp3"),
            audio=(AudioRef(clip),),
            reference=row["translation"],
            duration_s=header_duration_s(clip),
            meta={"source_text": row.get("sentence", ""), "client_id": row.get("client_id", "")},
        )


def _read_covost_rows(tsv: Path) -> list[dict[str, str]]:
    text = read_text(tsv)
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))  # a long field is data, not a crash
    with io.StringIO(text, newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
        header = next(reader, None)
        if header is None or not {"path", "translation"} <= set(header):
            raise InputError(tsv, f"not a CoVoST 2 TSV (header {header})",
                             "expected columns path, translation (and sentence, client_id or split)")
        rows = []
        for number, fields in enumerate(reader, start=2):
            if len(fields) != len(header):
                raise InputError(f"{tsv}:{number}", f"expected {len(header)} tab-separated fields, found {len(fields)}",
                                 "re-extract covost_v2.en_de.tsv.tar.gz; do not edit it with a spreadsheet")
            rows.append(dict(zip(header, fields, strict=True)))
    return rows


def find_clips_dir(tsv: Path) -> Path:
    """Common Voice `clips/`: beside the TSV, under `en/`, or in a cv-corpus-* release folder."""
    base = tsv.parent
    candidates = [base / "clips", base / "en" / "clips", base.parent / "en" / "clips", base.parent / "clips"]
    candidates += sorted(base.glob("cv-corpus-*/en/clips")) + sorted(base.parent.glob("cv-corpus-*/en/clips"))
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise InputError(tsv, "no Common Voice clips/ folder found (looked in "
                     + ", ".join(str(c) for c in candidates[:4]) + ")",
                     "unpack Common Voice v4 English next to the TSV (en/clips/*.mp3)")


@register_task("mustc-en-de", group="st")
class MuSTCEnDe(_TranslationTask):
    """MuST-C v1.0 En→De tst-COMMON segments, sacreBLEU corpus BLEU."""

    split = "tst-COMMON"
    data_layout = "MUST-C/en-de/data/tst-COMMON/{wav/*.wav, txt/tst-COMMON.yaml|.en|.de} (MuST-C v1.0), or a WavLLM manifest"

    def default_data_path(self, data_dir: Path) -> Path:
        return data_dir / "MUST-C" / "en-de" / "data" / self.split

    def load_native(self, data: Path) -> Iterator[Sample]:
        yield from read_mustc_split(data, self.split)


_YAML_ENTRY = re.compile(r"^-\s*\{(.*)\}\s*$")


def parse_mustc_yaml(path: Path) -> list[dict[str, str]]:
    """The flow-mapping list of a MuST-C yaml, values as strings (fairseq uses yaml.BaseLoader).

    A strict line parser, because the file is one `- {k: v, ...}` per line and PyYAML takes
    seconds on the 270k-line train yaml; anything else is an input error naming the line."""
    entries = []
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        match = _YAML_ENTRY.match(line.strip())
        if not match:
            raise InputError(f"{path}:{number}", "not a `- {duration: ..., offset: ..., wav: ...}` entry",
                             "re-extract MUSTC_v1.0_en-de.tar.gz")
        entry = {}
        for item in match.group(1).split(","):
            key, sep, value = item.partition(":")
            if not sep:
                raise InputError(f"{path}:{number}", f"malformed field {item.strip()!r}", "re-extract the archive")
            entry[key.strip()] = value.strip()
        missing = [k for k in ("wav", "offset", "duration") if not entry.get(k)]
        if missing:
            raise InputError(f"{path}:{number}", f"segment lacks {', '.join(missing)}", "re-extract the archive")
        for key in ("offset", "duration"):
            try:
                number_value = float(entry[key])
            except ValueError:
                number_value = float("nan")
            if not math.isfinite(number_value) or number_value < 0:
                raise InputError(f"{path}:{number}", f"{key} {entry[key]!r} is not a non-negative number",
                                 "re-extract the archive")
        entries.append(entry)
    return entries


def read_mustc_split(split_dir: Path, split: str) -> Iterator[Sample]:
    txt = split_dir / "txt"
    yaml_path, en_path, de_path = txt / f"{split}.yaml", txt / f"{split}.en", txt / f"{split}.de"
    for path in (yaml_path, en_path, de_path):
        if not path.is_file():
            raise InputError(path, "missing", f"expected MUST-C/en-de/data/{split}/txt/{split}.{{yaml,en,de}}")
    segments = parse_mustc_yaml(yaml_path)
    english = read_text(en_path).split("\n")
    german = read_text(de_path).split("\n")
    for lines in (english, german):
        if lines and lines[-1] == "":
            lines.pop()
    if not len(segments) == len(english) == len(german):
        raise InputError(txt, f"{len(segments)} yaml segments but {len(english)} .en and {len(german)} .de lines",
                         "the three files must align line by line; re-extract the archive")
    ranks: dict[int, str] = {}
    by_talk: dict[str, list[int]] = {}
    for index, segment in enumerate(segments):
        by_talk.setdefault(segment["wav"], []).append(index)
    for wav, indices in by_talk.items():
        # fairseq (examples/speech_to_text/data_utils / prep_mustc_data.py) sorts the BaseLoader
        # strings: a string sort, not a numeric one (9.5, 10.2, 2.0 rank 2, 0, 1).
        for rank, index in enumerate(sorted(indices, key=lambda i: segments[i]["offset"])):
            ranks[index] = f"{Path(wav).stem}_{rank}"
    for index, segment in enumerate(segments):
        offset, duration = float(segment["offset"]), float(segment["duration"])
        yield Sample(
            id=ranks[index],
            audio=(AudioRef(split_dir / "wav" / segment["wav"], offset_s=offset, duration_s=duration),),
            reference=german[index],
            duration_s=duration,
            meta={"source_text": english[index], "speaker": segment.get("speaker_id", "")},
        )
