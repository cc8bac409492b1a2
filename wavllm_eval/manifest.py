"""The official WavLLM TSV manifest format (microsoft/SpeechT5, WavLLM/wavllm/test_data).

Columns are read by header name (their order differs between files), with quoting disabled and
universal newlines (some lines end in CRLF). `n_frames` is ignored: it holds placeholders and
22.05 kHz lengths; durations come from the audio header. The `audio` column is resolved like this:
`<audio root>/<value>`, then the part after the last `test_data/` next to the manifest, then the
value relative to the manifest's folder.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from wavllm_eval.audio import audio_duration_s
from wavllm_eval.errors import AudioReadError, InputError
from wavllm_eval.textfile import read_text
from wavllm_eval.types import AudioRef, Sample

REQUIRED_COLUMNS = ("id", "audio", "prompt", "tgt_text")


@dataclass(frozen=True)
class ManifestRow:
    id: str
    audio_path: Path
    prompt: str
    target: str
    with_speech: bool
    extra: dict[str, str] = field(default_factory=dict)  # e.g. orig_story in CoT-task-story.tsv


def resolve_audio(value: str, manifest_dir: Path, audio_root: Path | None = None) -> Path:
    candidates: list[Path] = []
    if audio_root is not None:
        candidates.append(Path(audio_root) / value)
    if "test_data/" in value:
        candidates.append(manifest_dir / value.rsplit("test_data/", 1)[1])
    candidates.append(manifest_dir / value)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return candidates[-1]  # missing: the runner records the sample as failed, naming this path


def read_manifest(path: Path, audio_root: Path | None = None) -> list[ManifestRow]:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "manifest not found", "check the path given with --data or --data-dir")
    text = read_text(path)
    if not text.strip():
        raise InputError(path, "is empty", "a WavLLM manifest starts with the header id, audio, n_frames, prompt, "
                         "tgt_text, with_speech")
    # a long prompt or target is data, not a reason to crash (the csv module stops at 128 KiB)
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    with io.StringIO(text, newline=None) as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise InputError(path, f"missing column(s) {', '.join(missing)} in the header {header}",
                             "a WavLLM manifest has the columns id, audio, n_frames, prompt, tgt_text, with_speech")
        rows: list[ManifestRow] = []
        resolved: dict[str, Path] = {}  # one lookup per distinct audio value
        known = {"id", "audio", "n_frames", "prompt", "tgt_text", "with_speech"}
        extra_columns = [k for k in header if k not in known]
        for line_number, raw in enumerate(reader, start=2):
            # DictReader fills a short row's missing fields with None and files a long row's surplus
            # under the key None: either would silently shift or default fields
            if None in raw or None in raw.values():
                found = sum(v is not None for k, v in raw.items() if k is not None) + len(raw.get(None) or [])
                raise InputError(f"{path}:{line_number}", f"expected {len(header)} tab-separated fields, found {found}",
                                 "fix the row or re-export the manifest")
            rows.append(ManifestRow(
                id=raw["id"],
                audio_path=resolved.get(raw["audio"]) or resolved.setdefault(
                    raw["audio"], resolve_audio(raw["audio"], path.parent, audio_root)),
                prompt=raw["prompt"],
                target=raw["tgt_text"],
                with_speech=raw.get("with_speech", "True") == "True",
                extra={k: raw[k] for k in extra_columns},
            ))
    return rows


def manifest_samples(path: Path, audio_root: Path | None = None) -> Iterator[Sample]:
    """Samples of a manifest, in file order; the manifest's prompt becomes the instruction. Each audio
    file's header is read once, however many rows point at it."""
    durations: dict[Path, float] = {}
    refs: dict[Path, tuple[AudioRef, ...]] = {}  # immutable, so rows of one file share it
    for row in read_manifest(path, audio_root):
        if row.audio_path not in durations:
            durations[row.audio_path] = header_duration_s(row.audio_path)
            refs[row.audio_path] = (AudioRef(row.audio_path),)
        yield Sample(
            id=row.id,
            audio=refs[row.audio_path],
            reference=row.target,
            instruction=row.prompt,
            duration_s=durations[row.audio_path],
            meta={"source": "wavllm-manifest", **row.extra},
        )


def header_duration_s(path: Path) -> float:
    """Duration from the header, 0.0 when unreadable (the runner then records why it failed)."""
    try:
        return audio_duration_s(path)
    except AudioReadError:
        return 0.0


def is_manifest(path: Path) -> bool:
    """Whether to read `path` as a WavLLM manifest: every .tsv file except a CoVoST 2 TSV (whose header
    has `path` and `translation`). A .tsv with a wrong or empty header is therefore read as a manifest
    and answered with the manifest's own error (missing columns), not mistaken for a corpus folder."""
    path = Path(path)
    if path.suffix.lower() != ".tsv" or not path.is_file():
        return False
    with open(path, "rb") as f:
        first = f.readline().decode("utf-8-sig", errors="replace").rstrip("\r\n").split("\t")
    return not {"path", "translation"} <= set(first)
