"""RFT and DPO data construction (DeepSeekMath's offline methods) and one TRL training step on each."""

from types import SimpleNamespace

import pytest
import torch

from grpo_ext.paradigm import dpo_pairs, rft_dataset, sample_completions, split_correct_incorrect

CHAT = [{"role": "user", "content": "2+2?"}]
CHAT_9 = [{"role": "user", "content": "3*3?"}]
PROMPTS = [CHAT, CHAT_9]
SAMPLES = [  # prompt 0: 2 distinct correct, 2 distinct wrong
    ["so \\boxed{4}", "it is 5", "so \\boxed{4}", "\\boxed{4.0}", "no idea", "it is 5"],
    ["9", "8"],
]
GOLDS = ["4", "9"]


def assistant(text):
    return [{"role": "assistant", "content": text}]


def test_split_scores_with_accuracy_reward_and_deduplicates():
    assert split_correct_incorrect(PROMPTS, SAMPLES, GOLDS) == [
        (["so \\boxed{4}", "\\boxed{4.0}"], ["it is 5", "no idea"]),
        (["9"], ["8"]),
    ]


def test_rft_dataset_rows():
    rows = rft_dataset(PROMPTS, SAMPLES, GOLDS).to_list()
    assert rows == [
        {"prompt": CHAT, "completion": assistant("so \\boxed{4}")},
        {"prompt": CHAT, "completion": assistant("\\boxed{4.0}")},
        {"prompt": CHAT_9, "completion": assistant("9")},
    ]
    # plain-text prompts get plain-text completions
    assert rft_dataset(["3*3 ="], SAMPLES[1:], ["9"]).to_list() == [{"prompt": "3*3 =", "completion": "9"}]


def test_dpo_pairs_rows_all_and_capped():
    rows = dpo_pairs(PROMPTS, SAMPLES, GOLDS).to_list()
    assert [(r["chosen"], r["rejected"]) for r in rows] == [
        (assistant("so \\boxed{4}"), assistant("it is 5")),
        (assistant("so \\boxed{4}"), assistant("no idea")),
        (assistant("\\boxed{4.0}"), assistant("it is 5")),
        (assistant("\\boxed{4.0}"), assistant("no idea")),
        (assistant("9"), assistant("8")),
    ]
    assert [r["prompt"] for r in rows] == [CHAT] * 4 + [CHAT_9]
    capped = dpo_pairs(PROMPTS, SAMPLES, GOLDS, max_pairs_per_prompt=2, seed=1).to_list()
    assert len(capped) == 3 and capped[2] == {"prompt": CHAT_9, "chosen": assistant("9"), "rejected": assistant("8")}
    first_prompt = [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in capped[:2]]
    assert len(set(first_prompt)) == 2 and all(c in ("so \\boxed{4}", "\\boxed{4.0}") for c, _ in first_prompt)
    assert capped == dpo_pairs(PROMPTS, SAMPLES, GOLDS, max_pairs_per_prompt=2, seed=1).to_list()  # reproducible
    draws = {tuple(map(str, dpo_pairs(PROMPTS, SAMPLES, GOLDS, max_pairs_per_prompt=2, seed=s)[:2]["rejected"]))
             for s in range(20)}  # fmt: skip
    assert len(draws) > 1  # the seed does choose among the 4 pairs


def test_unscorable_and_one_sided_prompts_give_no_rows():
    def scorer(completions, answer, **kwargs):  # None: no gold answer readable
        return [None if gold == "?" else float(text == gold) for text, gold in zip(completions, answer)]

    prompts, samples, golds = ["a", "b", "c"], [["1", "2"], ["x", "y"], ["5", "5"]], ["1", "?", "5"]
    assert split_correct_incorrect(prompts, samples, golds, scorer) == [(["1"], ["2"]), ([], []), (["5"], [])]
    assert dpo_pairs(prompts, samples, golds, scorer).to_list() == [{"prompt": "a", "chosen": "1", "rejected": "2"}]
    assert rft_dataset(prompts, samples, golds, scorer)["completion"] == ["1", "5"]
    assert len(rft_dataset(["a"], [["2"]], ["1"], scorer)) == 0


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="got 2, 1 and 2"):
        rft_dataset(PROMPTS, SAMPLES[:1], GOLDS)
    with pytest.raises(ValueError, match=r"samples\[1\] must be a list of completion strings"):
        dpo_pairs(PROMPTS, [["a"], "9"], GOLDS)
    with pytest.raises(ValueError, match="all conversational .* or all plain text"):
        rft_dataset([CHAT, "3*3 ="], SAMPLES, GOLDS)
    with pytest.raises(ValueError, match="max_pairs_per_prompt must be >= 1"):
        dpo_pairs(PROMPTS, SAMPLES, GOLDS, max_pairs_per_prompt=0)
    with pytest.raises(ValueError, match="the tokenizer has no pad token"):
        sample_completions(None, SimpleNamespace(pad_token_id=None), ["1+1="], 2, max_new_tokens=4)
    with pytest.raises(ValueError, match="returned 1 scores for 8 samples"):
        rft_dataset(PROMPTS, SAMPLES, GOLDS, scorer=lambda completions, answer: [1.0])


def test_sample_rft_sft_step_and_dpo_step_on_a_tiny_model(tiny_model_path, tmp_path):
    """End to end: sample from a tiny model, build both data sets, one SFTTrainer and one DPOTrainer step.

    A random model never answers arithmetic, so the test's scorer calls each prompt's first sample the gold answer:
    every prompt then has a correct sample and (sampling being random) incorrect ones."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    prompts = [[{"role": "user", "content": f"What is {a} + {a}?"}] for a in (1, 2)]
    samples = sample_completions(model, tokenizer, prompts, num_samples=3, max_new_tokens=6, batch_size=1, seed=0)
    assert len(samples) == 2 and all(len(texts) == 3 and all(isinstance(t, str) for t in texts) for texts in samples)
    assert samples == sample_completions(model, tokenizer, prompts, 3, max_new_tokens=6, batch_size=1, seed=0)
    assert tokenizer.padding_side == "right" and not model.training  # restored as they were (loaded in eval mode)
    golds = [texts[0] for texts in samples]

    def first_sample_is_gold(completions, answer, **kwargs):
        return [float(text == gold) for text, gold in zip(completions, answer)]

    rft = rft_dataset(prompts, samples, golds, first_sample_is_gold)
    assert [row["completion"][0]["content"] for row in rft] == golds
    pairs = dpo_pairs(prompts, samples, golds, first_sample_is_gold, max_pairs_per_prompt=1)
    assert len(pairs) == 2 and [row["chosen"][0]["content"] for row in pairs] == golds

    common = dict(per_device_train_batch_size=2, max_steps=1, learning_rate=0.01, report_to="none", use_cpu=True,
                  save_strategy="no", bf16=False, logging_steps=1)  # fmt: skip
    before = [p.detach().clone() for p in model.parameters()]
    sft = SFTTrainer(model=model, args=SFTConfig(str(tmp_path / "rft"), max_length=64, **common),
                     train_dataset=rft, processing_class=tokenizer)  # fmt: skip
    sft.train()
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert sft.state.log_history[0]["loss"] > 0

    policy = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    before = [p.detach().clone() for p in policy.parameters()]
    dpo = DPOTrainer(model=policy, args=DPOConfig(str(tmp_path / "dpo"), max_length=64, **common),
                     train_dataset=pairs, processing_class=tokenizer)  # fmt: skip
    dpo.train()
    assert any(not torch.equal(p, q) for p, q in zip(policy.parameters(), before))
    # first step: policy == reference, so the DPO loss is -log sigmoid(0) = log 2
    assert dpo.state.log_history[0]["loss"] == pytest.approx(0.6931, abs=1e-3)
