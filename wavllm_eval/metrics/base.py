"""The metric contract: per-sample statistic rows, reduced to a corpus value.

Most corpus metrics (WER, BLEU, accuracy, UA) are functions of *summed* rows; those implement
`from_totals`, which works on a whole stack of bootstrap totals at once (milliseconds for 1000
resamples). Metrics that are not sums of rows (EER) override `reduce` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from wavllm_eval.types import Record

BOOTSTRAP_RESAMPLES = 1000


@runtime_checkable
class Metric(Protocol):
    name: str
    higher_is_better: bool

    def update(self, records: Sequence[Record]) -> None: ...

    def compute(self) -> float: ...

    def bootstrap(self, n: int = BOOTSTRAP_RESAMPLES, seed: int = 1) -> tuple[float, float]: ...


class RowMetric:
    """Base for metrics whose state is one row of statistics per sample, keyed by sample id."""

    name: str = ""
    higher_is_better: bool = True
    n_stats: int = 1

    def __init__(self) -> None:
        self.ids: list[str] = []
        self._rows: list[Sequence[float]] = []

    # --- to implement -------------------------------------------------------------------------
    def row(self, record: Record) -> Sequence[float]:
        """The sufficient statistics of one scored sample."""
        raise NotImplementedError

    def from_totals(self, totals: np.ndarray) -> np.ndarray:
        """Corpus value(s) from column sums; `totals` has shape (..., n_stats)."""
        raise NotImplementedError

    # --- shared ------------------------------------------------------------------------------
    def update(self, records: Sequence[Record]) -> None:
        for record in records:
            self.ids.append(record.id)
            self._rows.append(self.row(record))

    def with_rows(self, ids: Sequence[str], rows: Sequence[Sequence[float]]) -> RowMetric:
        """This metric holding stored rows (what scoring wrote), for reports and the gate."""
        self.ids = [str(i) for i in ids]
        self._rows = [tuple(float(x) for x in row) for row in rows]
        if len(self.ids) != len(self._rows) or any(len(r) != self.n_stats for r in self._rows):
            raise ValueError(f"stored rows of {self.name} do not have {self.n_stats} statistics per sample id")
        return self

    def merge(self, *shards: RowMetric) -> RowMetric:
        """Add the rows of other shards of the same metric (data-parallel ranks): corpus values of
        the merged metric equal those of one pass over all samples. Duplicate ids are an error."""
        for shard in shards:
            if type(shard) is not type(self) or shard.name != self.name or shard.n_stats != self.n_stats:
                raise ValueError(f"cannot merge {shard.name} ({type(shard).__name__}) into {self.name}")
            clash = set(self.ids) & set(shard.ids)
            if clash:
                raise ValueError(f"shards share sample id(s) {sorted(clash)[:3]}")
            self.ids.extend(shard.ids)
            self._rows.extend(shard._rows)
        return self

    @property
    def rows(self) -> np.ndarray:
        return np.asarray(self._rows, dtype=np.float64).reshape(len(self._rows), self.n_stats)

    def reduce(self, rows: np.ndarray) -> float:
        """Corpus value of a set of rows (default: a function of their column sums)."""
        return float(self.from_totals(rows.sum(axis=0)))

    @property
    def sum_decomposable(self) -> bool:
        """True when the corpus value is a function of summed rows (not EER-like metrics)."""
        return type(self).reduce is RowMetric.reduce

    def per_sample_values(self) -> np.ndarray:
        """Each sample's own value (its row alone), for drill-downs; NaN where undefined."""
        if not self._rows or not self.sum_decomposable:
            return np.full(len(self._rows), np.nan)
        return np.asarray(self.from_totals(self.rows), dtype=np.float64)

    def compute(self) -> float:
        if not self._rows:
            return float("nan")
        return self.reduce(self.rows)

    def resampled_values(self, indices: np.ndarray | Resamples, rows: np.ndarray | None = None) -> np.ndarray:
        """Corpus values for each resample: `indices` is an index matrix (n_resamples, n_rows) or a
        `Resamples` plan drawn chunk by chunk; over `rows` (default: this metric's own rows; a
        paired test passes the rows of the shared samples).

        Sum-decomposable metrics never materialise the resampled rows: each resample's totals are its
        index counts times the rows (bounded memory: 100k-sample BLEU stays well under 1 GiB)."""
        rows = self.rows if rows is None else rows
        chunks = [indices] if isinstance(indices, np.ndarray) else indices
        out: list[np.ndarray] = []
        for chunk in chunks:
            if self.sum_decomposable:
                counts = np.zeros((len(chunk), len(rows)), dtype=np.float64)
                for i, picks in enumerate(chunk):
                    counts[i] = np.bincount(picks, minlength=len(rows))
                out.append(np.asarray(self.from_totals(counts @ rows), dtype=np.float64).reshape(len(chunk)))
            else:
                out.append(np.array([self.reduce(rows[i]) for i in chunk], dtype=np.float64))
        return np.concatenate(out) if out else np.zeros(0)

    def bootstrap(self, n: int = BOOTSTRAP_RESAMPLES, seed: int = 1) -> tuple[float, float]:
        """Percentile 95 % CI over samples resampled with replacement (seeded, so reruns agree)."""
        if not self._rows:
            return (float("nan"), float("nan"))
        values = self.resampled_values(Resamples(len(self._rows), n, seed))
        values = values[~np.isnan(values)]
        if values.size == 0:
            return (float("nan"), float("nan"))
        low, high = np.percentile(values, [2.5, 97.5])
        return (float(low), float(high))


BOOTSTRAP_CHUNK_BYTES = 64 * 2**20


class Resamples:
    """The seeded bootstrap index matrix, drawn in chunks of rows (the same numbers as one
    `bootstrap_indices` call: numpy's Generator draws them in sequence), so 1000 resamples of 100k
    samples never sit in memory at once. Iterable any number of times: a paired test applies the
    very same resamples to both runs."""

    def __init__(self, n_rows: int, n_resamples: int, seed: int) -> None:
        self.n_rows, self.n_resamples, self.seed = n_rows, n_resamples, seed
        self.chunk = max(1, BOOTSTRAP_CHUNK_BYTES // (8 * max(n_rows, 1)))

    def __iter__(self):
        rng = np.random.default_rng(self.seed)
        for start in range(0, self.n_resamples, self.chunk):
            yield rng.integers(0, self.n_rows, size=(min(self.chunk, self.n_resamples - start), self.n_rows))


def bootstrap_indices(n_rows: int, n_resamples: int, seed: int) -> np.ndarray:
    """The whole index matrix at once (small sets and tests); `Resamples` draws the same in chunks."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_rows, size=(n_resamples, n_rows))


def safe_ratio(numerator: np.ndarray, denominator: np.ndarray, scale: float = 100.0) -> np.ndarray:
    """scale * num / den, NaN where den is 0 (an undefined rate is never silently 0)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, scale * numerator / np.where(denominator > 0, denominator, 1), np.nan)
