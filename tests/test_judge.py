"""The model judge: verdict cache (a rerun asks the judge nothing), score parsing, the sqqa task with a
judge, and one real load of a tiny random LlamaForCausalLM checked against a hand-rolled greedy decode."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from wavllm_eval.errors import InputError
from wavllm_eval.judge import Judge, JudgeItem, load_judge, parse_score
from wavllm_eval.registry import make_task
from wavllm_eval.types import Record


class FakeJudgeModel:
    """Answers from a script; counts every prompt it is asked."""

    def __init__(self, reply) -> None:
        self.reply = reply
        self.prompts: list[str] = []

    def __call__(self, prompts):
        self.prompts.extend(prompts)
        return [self.reply(p) for p in prompts]


def _reply(prompt: str) -> str:
    answer = prompt.split("Assistant answer: ", 1)[1].split("\n", 1)[0]
    return {"Wellington.": "5", "Auckland.": "Score: 2/5"}.get(answer, "I cannot grade this.")


ITEMS = [JudgeItem("What is the capital of New Zealand?", "Wellington", "Wellington."),
         JudgeItem("What is the capital of New Zealand?", "Wellington", "Auckland."),
         JudgeItem("What is the capital of New Zealand?", "Wellington", "Wellington."),  # a repeat
         JudgeItem("", "Wellington", "No idea.")]


@pytest.mark.parametrize("text, score", [("4", 4.0), ("Score: 5/5", 5.0), (" 3\n", 3.0), ("10", None),
                                         ("3.5", None), ("excellent", None), ("2 out of 5", 2.0)])
def test_parse_score(text, score):
    assert parse_score(text) == score


def test_cache_makes_a_rerun_call_the_judge_zero_times(tmp_path):
    model = FakeJudgeModel(_reply)
    judge = Judge(model, {"fingerprint": "fake-v1"}, tmp_path / "cache")
    first = judge.verdicts(ITEMS)
    assert [v.score for v in first] == [5.0, 2.0, 5.0, None]  # the last one unparsed, kept as None
    assert len(model.prompts) == judge.n_model_calls == 3  # the repeat is asked once
    rerun_model = FakeJudgeModel(_reply)
    rerun = Judge(rerun_model, {"fingerprint": "fake-v1"}, tmp_path / "cache").verdicts(ITEMS)
    assert rerun_model.prompts == []
    assert [(v.score, v.raw) for v in rerun] == [(v.score, v.raw) for v in first]
    assert all(v.cached for v in rerun)
    # another judge model never reuses these verdicts
    other = FakeJudgeModel(_reply)
    Judge(other, {"fingerprint": "fake-v2"}, tmp_path / "cache").verdicts(ITEMS[:1])
    assert len(other.prompts) == 1


def test_sqqa_with_a_judge_scores_and_rescoring_asks_nothing(shared_data, tmp_path):
    task = make_task("sqqa")
    sample = next(iter(task.load(shared_data / "SQQA.tsv")))
    assert sample.instruction == "" and task.build_prompt(sample).text == ""
    records = [Record("0", "Wellington.", "Wellington", "ok", meta=dict(sample.meta)),
               Record("1", "Auckland.", "Wellington", "ok", meta=dict(sample.meta)),
               Record("2", "No idea.", "Wellington", "ok", meta=dict(sample.meta))]
    model = FakeJudgeModel(_reply)
    task.judge = Judge(model, {"fingerprint": "fake-v1"}, tmp_path / "cache")
    result = task.score(records).result
    assert result.metrics["judge_score"] == pytest.approx((5 + 2) / 2)  # the unparsed verdict is left out
    assert result.extra == {"judge_unparsed": 1, "judge_scored": 2}
    assert result.settings["judge"]["template_version"] == "judge-template/v1"
    assert result.headlines == ("rouge-l", "bertscore")
    asked = len(model.prompts)
    assert asked == 3
    rescore_task = make_task("sqqa")
    rescore_model = FakeJudgeModel(_reply)
    rescore_task.judge = Judge(rescore_model, {"fingerprint": "fake-v1"}, tmp_path / "cache")
    assert rescore_task.score(records).result.metrics["judge_score"] == result.metrics["judge_score"]
    assert rescore_model.prompts == []


def test_sqqa_without_a_judge_has_no_judge_metric(shared_data):
    result = make_task("sqqa").score([Record("0", "The theorem links derivatives and integrals.",
                                             "The fundamental theorem of calculus links them .", "ok")]).result
    assert "judge_score" not in result.metrics
    assert set(result.metrics) == {"rouge-l", "bertscore", "bertscore_precision", "bertscore_recall"}


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory, shared_data) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer

    folder = tmp_path_factory.mktemp("judge") / "tiny-llama"
    spm = tmp_path_factory.mktemp("spm")
    shutil.copy(shared_data / "llama2_tokenizer.model", spm / "tokenizer.model")
    LlamaTokenizer.from_pretrained(spm).save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32000, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512)
    LlamaForCausalLM(config).eval().save_pretrained(folder)
    return folder


def test_tiny_llama_judge_equals_a_hand_rolled_greedy_decode(tiny_llama, tmp_path):
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    judge = load_judge(str(tiny_llama), tmp_path / "cache", max_new_tokens=4)
    assert judge.identity["revision"] == "local folder" and judge.identity["prompt_format"] == "plain text"
    verdict = judge.verdicts(ITEMS[:1])[0]
    assert judge.n_model_calls == 1

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    model = LlamaForCausalLM.from_pretrained(tiny_llama).eval()
    ids = tokenizer(ITEMS[0].prompt(), return_tensors="pt")["input_ids"]
    new: list[int] = []
    with torch.no_grad():
        for _ in range(4):
            token = int(model(ids).logits[0, -1].argmax())
            if token == tokenizer.eos_token_id:
                break
            new.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    assert new and verdict.raw == tokenizer.decode(new, skip_special_tokens=True)
    assert verdict.score == parse_score(verdict.raw) and judge._generate.loaded

    again = load_judge(str(tiny_llama), tmp_path / "cache", max_new_tokens=4)
    assert again.verdicts(ITEMS[:1])[0].raw == verdict.raw
    assert again.n_model_calls == 0 and not again._generate.loaded  # the model was never loaded


def test_unknown_judge_is_an_input_error(tmp_path):
    with pytest.raises(InputError):
        load_judge("no-such-org/no-such-judge-model", tmp_path)


def test_a_judge_with_a_chat_template_is_prompted_through_it(tiny_llama, tmp_path):
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    folder = tmp_path / "chat-llama"
    shutil.copytree(tiny_llama, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = "{% for m in messages %}<s>[INST] {{ m['content'] }} [/INST]{% endfor %}"
    tokenizer.save_pretrained(folder)
    judge = load_judge(str(folder), tmp_path / "cache", max_new_tokens=3)
    assert judge.identity["prompt_format"] == "chat template"
    verdict = judge.verdicts(ITEMS[1:2])[0]
    text = "<s>[INST] " + ITEMS[1].prompt() + " [/INST]"
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    model = LlamaForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=3,
                             pad_token_id=tokenizer.eos_token_id)
    assert verdict.raw == tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_a_cache_entry_of_another_json_shape_is_asked_again(tmp_path):
    from wavllm_eval.judge import Judge, JudgeItem

    model = FakeJudgeModel(_reply)
    judge = Judge(model, {"fingerprint": "fake-v1"}, tmp_path / "cache")
    item = JudgeItem("What is the capital?", "Paris", "Paris")
    first = judge.verdicts([item])
    [entry] = list((tmp_path / "cache").rglob("*.json"))
    entry.write_text("[1, 2]")  # valid JSON, not an entry
    again = Judge(FakeJudgeModel(_reply), {"fingerprint": "fake-v1"}, tmp_path / "cache").verdicts([item])
    assert [v.score for v in again] == [v.score for v in first]
