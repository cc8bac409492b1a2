"""An optional local model judge (`--judge PATH_OR_ID`): any Hugging Face causal LM folder, greedy.

No hosted API: the judge is a local folder (or a model already in the local Hugging Face cache, looked
up with `local_files_only`). Every verdict is cached on disk under a content hash of (judge fingerprint,
template version, full prompt, decoding), so re-scoring a run asks the model nothing, and the model is
loaded only on the first cache miss. The template is versioned and recorded; AudioBench-style 1-5
scores; a verdict without a score 1-5 is counted as unparsed and left out of the mean, never guessed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wavllm_eval.errors import InputError
from wavllm_eval.metrics.base import RowMetric, safe_ratio
from wavllm_eval.types import Record

log = logging.getLogger(__name__)

JUDGE_TEMPLATE_VERSION = "judge-template/v1"
JUDGE_TEMPLATE = (
    "You are grading the answer of an assistant against a reference answer.\n"
    "{question}"
    "Reference answer: {reference}\n"
    "Assistant answer: {prediction}\n"
    "Rate how well the assistant answer agrees with the reference in meaning and correctness, from 1 "
    "(wrong or unrelated) to 5 (fully correct and complete). Reply with the number only.\n"
    "Score:"
)
SCORE_RANGE = (1, 5)
_SCORE = re.compile(r"(?<![\d.])([1-5])(?!\d|\.\d)")
_FINGERPRINT_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer.model",
                      "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")

Generate = Callable[[Sequence[str]], list[str]]


@dataclass(frozen=True)
class JudgeItem:
    question: str
    reference: str
    prediction: str

    def prompt(self) -> str:
        question = f"Question: {self.question}\n" if self.question.strip() else ""
        return JUDGE_TEMPLATE.format(question=question, reference=self.reference, prediction=self.prediction)


@dataclass(frozen=True)
class JudgeVerdict:
    score: float | None  # None: the judge's text held no score in range
    raw: str
    cached: bool


def parse_score(text: str) -> float | None:
    """The first standalone 1-5 in the judge's reply ("4", "Score: 4/5"); None otherwise."""
    match = _SCORE.search(text)
    return float(match.group(1)) if match else None


class Judge:
    """Cached verdicts over a text generator; `n_model_calls` counts prompts sent to the model."""

    def __init__(self, generate: Generate, identity: Mapping[str, Any], cache_dir: Path) -> None:
        self._generate = generate
        self.identity = dict(identity)
        self.cache_dir = Path(cache_dir)
        self.n_model_calls = 0
        self.n_cache_hits = 0

    def key(self, prompt: str) -> str:
        payload = json.dumps({"judge": self.identity.get("fingerprint", ""), "template": JUDGE_TEMPLATE_VERSION,
                              "decoding": self.identity.get("decoding", ""), "prompt": prompt}, sort_keys=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def _cache_path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    def _read(self, key: str) -> str | None:
        path = self._cache_path(key)
        if not path.is_file():
            return None
        try:
            return str(json.loads(path.read_text(encoding="utf-8"))["raw"])
        except (ValueError, KeyError, TypeError, RecursionError):  # not JSON, or JSON of another shape
            log.warning("judge cache entry %s is unreadable; asking the judge again", path)
            return None

    def _write(self, key: str, prompt: str, raw: str) -> None:
        path = self._cache_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"raw": raw, "prompt": prompt, "template": JUDGE_TEMPLATE_VERSION,
                                   "judge": self.identity}, ensure_ascii=False), encoding="utf-8")
        tmp.replace(path)

    def verdicts(self, items: Sequence[JudgeItem]) -> list[JudgeVerdict]:
        prompts = [item.prompt() for item in items]
        keys = [self.key(p) for p in prompts]
        raws: dict[str, str] = {}
        for key in dict.fromkeys(keys):
            raw = self._read(key)
            if raw is not None:
                raws[key] = raw
        cached = set(raws)
        missing = [(k, p) for k, p in dict(zip(keys, prompts, strict=True)).items() if k not in raws]
        if missing:
            outputs = self._generate([p for _, p in missing])
            self.n_model_calls += len(missing)
            for (key, prompt), raw in zip(missing, outputs, strict=True):
                self._write(key, prompt, raw)
                raws[key] = raw
        self.n_cache_hits += sum(k in cached for k in keys)
        return [JudgeVerdict(parse_score(raws[k]), raws[k], k in cached) for k in keys]

    def describe(self) -> dict[str, Any]:
        """What results.json records (the cache folder is left out: it is where, not what)."""
        return {**self.identity, "template_version": JUDGE_TEMPLATE_VERSION, "template": JUDGE_TEMPLATE,
                "score_range": list(SCORE_RANGE)}


def resolve_judge_path(path_or_id: str) -> tuple[Path, str]:
    """(folder, revision): a local folder as is, else a hub id already in the local cache (no network)."""
    folder = Path(path_or_id).expanduser()
    if folder.is_dir():
        parts = folder.resolve().parts
        revision = parts[-1] if len(parts) > 1 and parts[-2] == "snapshots" else "local folder"
        return folder, revision
    try:
        from huggingface_hub import snapshot_download

        found = Path(snapshot_download(repo_id=path_or_id, local_files_only=True))
    except Exception as exc:  # not a repo id, or not in the local cache
        raise InputError(path_or_id, f"judge model not found locally ({type(exc).__name__})",
                         "pass --judge a local Hugging Face causal LM folder (config.json + weights + tokenizer)") from exc
    return found, found.name


def fingerprint(folder: Path) -> str:
    """sha256 over the config and tokenizer files and the weight files' names and sizes (reading
    multi-GB weights would take minutes; a changed checkpoint changes its size or its config)."""
    digest = hashlib.sha256()
    for name in _FINGERPRINT_FILES:
        path = folder / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes())
    for path in sorted(folder.iterdir()):
        if path.suffix in _WEIGHT_SUFFIXES:
            digest.update(f"{path.name}:{path.stat().st_size}".encode())
    return digest.hexdigest()


def load_judge(path_or_id: str, cache_dir: Path, device: str = "cpu", max_new_tokens: int = 8) -> Judge:
    """A `Judge` over a local causal LM; the model itself loads on the first cache miss."""
    folder, revision = resolve_judge_path(path_or_id)
    if not (folder / "config.json").is_file():
        raise InputError(folder, "no config.json: not a Hugging Face model folder",
                         "pass --judge a folder written by save_pretrained (config.json, weights, tokenizer)")
    identity = {"model_id": str(path_or_id), "path": str(folder), "revision": revision,
                "fingerprint": fingerprint(folder), "decoding": f"greedy, max_new_tokens={max_new_tokens}",
                "prompt_format": "chat template" if _has_chat_template(folder) else "plain text"}
    return Judge(LazyGenerator(lambda: _hf_generator(folder, device, max_new_tokens)), identity, cache_dir)


class LazyGenerator:
    """A generator built on its first call: with every verdict cached, the judge model never loads."""

    def __init__(self, build: Callable[[], Generate]) -> None:
        self._build = build
        self._generate: Generate | None = None

    @property
    def loaded(self) -> bool:
        return self._generate is not None

    def __call__(self, prompts: Sequence[str]) -> list[str]:
        if self._generate is None:
            self._generate = self._build()
        return self._generate(prompts)


def _has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file():
        return True
    config = folder / "tokenizer_config.json"
    return config.is_file() and "chat_template" in json.loads(config.read_text(encoding="utf-8"))


def _hf_generator(folder: Path, device: str, max_new_tokens: int) -> Generate:
    """Greedy decoding one prompt at a time (no padding, so a verdict never depends on its batch)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).to(device).eval()
    chat = getattr(tokenizer, "chat_template", None)

    def generate(prompts: Sequence[str]) -> list[str]:
        outputs = []
        for prompt in prompts:
            if chat:
                ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                    return_tensors="pt", return_dict=True)["input_ids"]
            else:
                ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
            ids = ids.to(device)
            with torch.inference_mode():
                out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                     max_new_tokens=max_new_tokens,
                                     pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
            outputs.append(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
        return outputs

    return generate


class JudgeScore(RowMetric):
    """Mean judge score (1-5) over parsed verdicts; rows (score, parsed, 1) keep unparsed ones counted."""

    parallel_safe = False  # the judge model lives in this process

    higher_is_better = True
    n_stats = 3

    def __init__(self, judge: Judge, question_of: Callable[[Record], str], name: str = "judge_score",
                 prediction_cleaner: Callable[[str], str] | None = None) -> None:
        super().__init__()
        self.name = name
        self.judge = judge
        self.question_of = question_of
        self.prediction_cleaner = prediction_cleaner

    def _item(self, record: Record) -> JudgeItem:
        prediction = record.prediction
        if self.prediction_cleaner is not None:
            prediction = self.prediction_cleaner(prediction)
        return JudgeItem(self.question_of(record), record.reference, prediction)

    def update(self, records: Sequence[Record]) -> None:
        for record, verdict in zip(records, self.judge.verdicts([self._item(r) for r in records]), strict=True):
            self.ids.append(record.id)
            self._rows.append(self._row(verdict))

    @staticmethod
    def _row(verdict: JudgeVerdict) -> tuple[float, float, float]:
        return (verdict.score or 0.0, float(verdict.score is not None), 1.0)

    def row(self, record: Record) -> Sequence[float]:
        return self._row(self.judge.verdicts([self._item(record)])[0])

    def from_totals(self, totals: np.ndarray) -> np.ndarray:
        return safe_ratio(totals[..., 0], totals[..., 1], scale=1.0)
