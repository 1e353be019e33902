"""The new options with TRL's training features: accumulation, several steps/iterations per generation, bf16,
PEFT LoRA, evaluation, and a Hugging Face token-classification model as the process reward model."""

import math

import pytest
import torch
from grpo_ext_helpers import single_torch_thread  # noqa: F401 (autouse fixture)
from grpo_ext_helpers import digit_reward, length_parity_reward, make_trainer, step_length_prm, tiny_dataset


def finished(trainer, steps):
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == steps and all(math.isfinite(entry["loss"]) for entry in logs)
    return logs


@pytest.mark.parametrize(
    "options",
    [
        {"kl_estimator": "k3+", "supervision": "process"},
        {"kl_estimator": "k1", "kl_in": "reward"},
        {"kl_estimator": "k2", "advantage_estimator": "online_rft"},
    ],
    ids=["k3+-process", "k1-reward", "k2-online_rft"],
)
def test_accumulation_iterations_and_steps_per_generation(tiny_model_path, tmp_path, options):
    kwargs = {"process_reward_model": step_length_prm} if options.get("supervision") == "process" else {}
    trainer = make_trainer(
        tiny_model_path, tmp_path, reward_funcs=[digit_reward, length_parity_reward], trainer_kwargs=kwargs,
        gradient_accumulation_steps=2, steps_per_generation=4, num_iterations=2, per_device_train_batch_size=2,
        max_steps=4, step_delimiter=" ", **options,
    )
    trainer.train()
    finished(trainer, 4)


def test_bf16(tiny_model_path, tmp_path):
    trainer = make_trainer(tiny_model_path, tmp_path, bf16=True, kl_estimator="k3+", kl_in="loss",
                           supervision="process", trainer_kwargs={"process_reward_model": step_length_prm})
    trainer.train()
    finished(trainer, 2)


def test_peft_lora(tiny_model_path, tmp_path):
    from peft import LoraConfig

    trainer = make_trainer(
        tiny_model_path, tmp_path, kl_estimator="k1", kl_in="reward", num_iterations=2,
        trainer_kwargs={"peft_config": LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])},
    )
    assert trainer.ref_model is None  # the reference is the base model with the adapter disabled
    lora = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    trainer.train()
    logs = finished(trainer, 2)
    assert any(not torch.equal(p, lora[n]) for n, p in trainer.model.named_parameters() if n in lora)
    assert math.isfinite(logs[0]["kl"])  # kl_in="reward" logs it at generation time (every other step here)
    assert math.isfinite(logs[-1]["kl/k1"])


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo"])
def test_loss_types_run(tiny_model_path, tmp_path, loss_type):
    trainer = make_trainer(tiny_model_path, tmp_path, loss_type=loss_type, kl_estimator="k2", max_steps=1)
    trainer.train()
    finished(trainer, 1)


def test_evaluation_uses_the_new_advantages(tiny_model_path, tmp_path):
    trainer = make_trainer(tiny_model_path, tmp_path, supervision="process", kl_estimator="k1",
                           eval_strategy="steps", eval_steps=1, per_device_eval_batch_size=4, max_steps=1,
                           trainer_kwargs={"process_reward_model": step_length_prm, "eval_dataset": tiny_dataset(4)})
    trainer.train()
    evals = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    assert evals and math.isfinite(evals[-1]["eval_loss"]) and "eval_process/steps_per_completion" in evals[-1]


def test_token_classification_model_as_prm(tiny_model_path, tmp_path):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from grpo_ext.reward_models import ProcessRewardModel

    prm_model = AutoModelForTokenClassification.from_pretrained(tiny_model_path, num_labels=2)
    prm_tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    trainer = make_trainer(
        tiny_model_path, tmp_path, supervision="process", step_delimiter=" ",
        trainer_kwargs={"process_reward_model": prm_model, "process_reward_tokenizer": prm_tokenizer},
    )
    assert isinstance(trainer.process_reward_model, ProcessRewardModel)
    assert trainer.process_reward_model.model is prm_model and not prm_model.training
    steps = [["1 + 1 = 2.", "So 2."], []]
    scores = trainer.process_reward_model(["What is 1 + 1?", "Empty."], steps)
    assert [len(s) for s in scores] == [2, 0] and all(0.0 <= s <= 1.0 for s in scores[0])
    trainer.train()
    logs = finished(trainer, 2)
    assert logs[-1]["process/steps_per_completion"] > 0


@pytest.mark.parametrize("estimator", ["k2", "k3+"])
def test_evaluate_before_training_with_a_non_trl_estimator(tiny_model_path, tmp_path, estimator):
    """`evaluate()` before `train()`: the training loop has not yet set the accumulation steps (eval needs none)."""
    trainer = make_trainer(tiny_model_path, tmp_path, kl_estimator=estimator, per_device_eval_batch_size=4,
                           trainer_kwargs={"eval_dataset": tiny_dataset(4)})
    assert not hasattr(trainer, "current_gradient_accumulation_steps")
    metrics = trainer.evaluate()
    assert math.isfinite(metrics["eval_loss"]) and math.isfinite(metrics["eval_kl"])


def test_compile_generation_reaches_the_generation_config(tiny_model_path, tmp_path):
    from grpo_ext_helpers import make_config

    plain = make_trainer(tiny_model_path, tmp_path / "plain", cache_implementation="static")
    assert plain.generation_config.disable_compile is True  # TRL's choice, kept by default
    compiled = make_trainer(tiny_model_path, tmp_path / "compiled", cache_implementation="static",
                            compile_generation=True)
    assert compiled.generation_config.disable_compile is False
    assert compiled.generation_config.cache_implementation == "static"
    compiled.train()  # on CPU transformers does not compile; the static-cache path still trains
    assert compiled.state.global_step == 2
    with pytest.raises(ValueError, match="compile_generation=True .* cache_implementation='static' \\(got None\\)"):
        make_config(tmp_path, compile_generation=True)
    with pytest.raises(ValueError, match="use_vllm=False"):
        make_config(tmp_path, compile_generation=True, cache_implementation="static", use_vllm=True)
