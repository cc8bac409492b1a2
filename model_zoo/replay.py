"""Answers made elsewhere, evaluated through the whole pipeline: `--model replay --model-path FILE`.

FILE maps sample ids to answer text, so released outputs (WavLLM's), a hosted model's answers or a
peer harness's predictions get the same tasks, scoring, reports and gate as a local model:

- JSONL: one object per line with `id` and `prediction` (or `text`/`answer`), optionally
  `choice_logprobs` (a list, one log-probability per candidate, in the task's choice order) and
  `task` (to keep several tasks' answers in one file; ids are then matched per task id);
- TSV: a header with `id` and `prediction` (or `text`/`answer`) columns, tab-separated, no quoting.

A sample the file lacks becomes a `failed` record naming the file, never a silent gap. Replaying
needs no audio: the runner does not decode it (`needs_audio = False`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wavllm_eval.adapter import BaseAdapter, LoadOptions
from wavllm_eval.errors import InputError
from wavllm_eval.registry import register_model
from wavllm_eval.types import Generation, Prompt

TEXT_COLUMNS = ("prediction", "text", "answer")


@dataclass(frozen=True)
class ReplayedAnswer:
    text: str
    choice_logprobs: tuple[float, ...] = ()


class MissingAnswer(LookupError):
    """The replay file has no answer for a sample: the runner records it as failed with this reason."""


@register_model("replay")
class ReplayAdapter(BaseAdapter):
    """Answers replayed from a JSONL/TSV file of sample id -> text (released outputs, hosted models)."""

    default_batch_size = 64
    needs_audio = False
    required_files = ()

    def __init__(self, answers: Mapping[str, ReplayedAnswer], path: Path) -> None:
        self.answers = answers
        self.path = path
        self.supports_choice_scoring = any(a.choice_logprobs for a in answers.values())

    @classmethod
    def load(cls, path: Path | None, options: LoadOptions = LoadOptions()) -> ReplayAdapter:
        if path is None or not Path(path).is_file():
            raise InputError(path or "--model-path", "replay needs --model-path FILE (a JSONL or TSV of id -> answer)",
                             "e.g. --model replay --model-path wavllm_outputs.jsonl")
        path = Path(path)
        answers = read_tsv(path) if path.suffix.lower() in (".tsv", ".txt") else read_jsonl(path)
        if not answers:
            raise InputError(path, "holds no answers", "write one line per sample: {\"id\": ..., \"prediction\": ...}")
        return cls(answers, path)

    def generate(self, prompts: Sequence[Prompt], seeds: Sequence[int]) -> list[Generation]:
        out = []
        for prompt in prompts:
            answer = self._answer(prompt.sample_id)
            out.append(Generation(answer.text, n_new_tokens=len(answer.text.split())))
        return out

    def score_choices(self, prompts: Sequence[Prompt]) -> list[list[float]]:
        rows = []
        for prompt in prompts:
            logprobs = self._answer(prompt.sample_id).choice_logprobs
            if len(logprobs) != len(prompt.choices):
                raise MissingAnswer(f"{self.path}: sample {prompt.sample_id} has {len(logprobs)} choice_logprobs "
                                    f"for {len(prompt.choices)} choices {list(prompt.choices)}")
            rows.append(list(logprobs))
        return rows

    def _answer(self, sample_id: str) -> ReplayedAnswer:
        answer = self.answers.get(sample_id)
        if answer is None:
            raise MissingAnswer(f"no answer for sample {sample_id} in {self.path}")
        return answer

    def describe(self) -> Mapping[str, Any]:
        import hashlib

        digest = hashlib.sha256(self.path.read_bytes()).hexdigest() if self.path else None
        return {"id": self.id, "path": str(self.path), "answers": len(self.answers), "sha256": digest,
                "device": "none"}


def read_jsonl(path: Path) -> dict[str, ReplayedAnswer]:
    answers: dict[str, ReplayedAnswer] = {}
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise InputError(f"{path}:{number}", f"not a JSON line ({exc})", "one JSON object per line") from exc
        if not isinstance(line, dict) or "id" not in line:
            raise InputError(f"{path}:{number}", "expected an object with an `id`", "e.g. {\"id\": \"0\", \"prediction\": \"...\"}")
        text = next((line[c] for c in TEXT_COLUMNS if c in line), None)
        if not isinstance(text, str):
            raise InputError(f"{path}:{number}", f"no text field (one of {', '.join(TEXT_COLUMNS)})", "add a prediction")
        try:
            logprobs = tuple(float(x) for x in line.get("choice_logprobs") or ())
        except (TypeError, ValueError) as exc:
            raise InputError(f"{path}:{number}", "choice_logprobs must be a list of numbers", "fix or drop it") from exc
        answers[str(line["id"])] = ReplayedAnswer(text, logprobs)
    return answers


def read_tsv(path: Path) -> dict[str, ReplayedAnswer]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not UTF-8 text (byte {exc.start})", "re-save the file as UTF-8") from exc
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))  # a run-away answer is data, not a crash
    reader = csv.DictReader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE)
    column = next((c for c in TEXT_COLUMNS if c in (reader.fieldnames or [])), None)
    if "id" not in (reader.fieldnames or []) or column is None:
        raise InputError(path, f"header {reader.fieldnames} lacks `id` and a text column ({', '.join(TEXT_COLUMNS)})",
                         "write a header line: id<TAB>prediction")
    return {row["id"]: ReplayedAnswer(row[column] or "") for row in reader if row.get("id") is not None}
