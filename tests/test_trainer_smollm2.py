"""One GRPO step end to end with a real pretrained model and tokenizer (SmolLM2-135M-Instruct, `grpo_ext.tiny`):
chat-templated prompts, sampled completions, the rule-based accuracy reward, DeepSeekMath's settings and process
supervision on the model's own text. Kept to two prompts and short completions: on 2 loaded CPU cores the model
generates about 25 tokens/s."""

import math

import pytest
import torch
from datasets import Dataset
from grpo_ext_helpers import single_torch_thread  # noqa: F401 (autouse fixture)

from grpo_ext import GRPOConfig, GRPOTrainer
from grpo_ext.steps import delimiter_splitter
from rewards import accuracy_reward


@pytest.mark.slow
def test_one_grpo_step_with_smollm2(smollm2_dir, tmp_path):
    dataset = Dataset.from_dict({
        "prompt": [[{"role": "user", "content": "What is 3 + 4? Answer with a number."}],
                   [{"role": "user", "content": "What is 2 * 5? Answer with a number."}]],
        "answer": ["7", "10"],
    })  # fmt: skip
    prm_calls = []

    def word_length_prm(prompts, steps):  # a deterministic signal that differs between steps: word length parity
        prm_calls.append([list(s) for s in steps])
        return [[float(len(step) % 2) for step in completion_steps] for completion_steps in steps]

    args = GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2, max_completion_length=6,
        max_steps=1, learning_rate=1e-5, optim="sgd", logging_steps=1, save_strategy="no", report_to="none",
        use_cpu=True, bf16=False, seed=0, temperature=1.0, dataloader_num_workers=0,
        beta=0.04, kl_estimator="k3", kl_in="loss", loss_type="grpo", use_bias_correction_kl=False,
        supervision="process", step_delimiter=" ",
    )  # fmt: skip
    torch.manual_seed(0)
    trainer = GRPOTrainer(model=smollm2_dir, reward_funcs=[accuracy_reward], args=args, train_dataset=dataset,
                          process_reward_model=word_length_prm)
    assert trainer.processing_class.eos_token == "<|im_end|>"
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()

    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 1 and math.isfinite(logs[0]["loss"]) and math.isfinite(logs[0]["kl"])
    assert logs[0]["process/steps_per_completion"] > 0 and logs[0]["frac_advantage_zero"] < 1.0
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())
    # the PRM saw the steps of the text the model wrote (conversational completions: one assistant message each)
    assert len(prm_calls) == 1 and len(prm_calls[0]) == 4
    texts = [completion[0]["content"] for completion in trainer._logs["completion"]]
    assert [delimiter_splitter(" ")(text) for text in texts] == prm_calls[0]
