"""Every grpo_ext feature on one real engine, 2 CPU processes, one launch (tests/test_engines.py compares the engines'
reports with one another and with hand-computed values):

    accelerate launch <engine_launch_args(ENGINE)> engine_checks.py ENGINE MODEL_PATH OUTPUT_DIR [CHECK...]

Each check writes `OUTPUT_DIR/<check>.json` from the main process; a check that fails raises, and the launch fails.
"""

from __future__ import annotations

import json
import os
import sys

import engine_harness
import torch


def main_process_writes(accelerator, output_dir: str, name: str, report: dict) -> None:
    if accelerator.is_main_process:
        with open(os.path.join(output_dir, f"{name}.json"), "w") as handle:
            json.dump(report, handle)


def tiny_value_model(seed: int = 0):
    from iterative_helpers import _config
    from transformers import AutoModelForTokenClassification

    config = _config(1, seed)
    config.classifier_dropout = 0.0  # deterministic: no dropout anywhere
    # from_config, not the class: under ZeRO-3 transformers builds it partitioned (zero.Init), as users' models are
    return AutoModelForTokenClassification.from_config(config)


def check_trainable(engine: str, model_path: str, output_dir: str) -> None:
    """`TrainableModel`: two optimizer steps of two micro-batches each (each process its own rows), a save, a fresh
    model loading it and taking a third step beside the original; the full weights before and after."""
    from grpo_ext.checkpoint import full_state_dict, load_full_state_dict
    from grpo_ext.engines import TrainableModel, engine_name

    accelerator = engine_harness.accelerator(engine)
    assert engine_name(accelerator) == engine and accelerator.num_processes == 2, (engine_name(accelerator), engine)
    rank = accelerator.process_index
    batches = trainable_batches()

    initial_weights = torch.load(os.path.join(output_dir, "trainable_initial.pt"), weights_only=True)

    def build():
        model = tiny_value_model(seed=0)  # under ZeRO-3 built partitioned, with other random weights: load them
        load_full_state_dict(model, initial_weights, accelerator)
        return TrainableModel(model, accelerator, learning_rate=1e-2, max_grad_norm=1.0, micro_batch_size=2,
                              gradient_accumulation_steps=2)

    def step(trainable, k):
        for micro in range(2):
            ids = batches[k][rank][micro]
            values = trainable(input_ids=ids).logits[..., 0]
            loss = ((values - 1.0) ** 2).mean() / 2
            trainable.backward(loss, sync=micro == 1)
        return trainable.step()

    trainable = build()
    initial = full_state_dict(trainable.module, accelerator)
    norms = [step(trainable, k) for k in range(2)]
    trainable.save(os.path.join(output_dir, "trainable_ckpt"))
    after_two = full_state_dict(trainable.module, accelerator)
    step(trainable, 2)
    resumed = build()
    resumed.load(os.path.join(output_dir, "trainable_ckpt"), accelerator.num_processes)
    step(resumed, 2)
    original, again = full_state_dict(trainable.module, accelerator), full_state_dict(resumed.module, accelerator)
    if accelerator.is_main_process:
        torch.save({"initial": initial, "after_two": after_two, "after_three": original, "resumed": again,
                    "norms": norms}, os.path.join(output_dir, "trainable.pt"))
    accelerator.wait_for_everyone()


def write_trainable_inputs(output_dir: str) -> None:
    """The initial weights `check_trainable` starts from, written by the test before the launch (ZeRO-3's
    partitioned construction draws other random weights)."""
    torch.save(tiny_value_model(seed=0).state_dict(), os.path.join(output_dir, "trainable_initial.pt"))


def trainable_batches():
    """batches[step][rank][micro]: (2, 6) token ids, different on every process and micro-batch."""
    g = torch.Generator().manual_seed(1)
    return [[[torch.randint(3, 400, (2, 6), generator=g) for _ in range(2)] for _ in range(2)] for _ in range(3)]


def keyed_rollout(prompts, trainer):
    """A TRL `rollout_func` whose completion is a function of its prompt (different on every process, the same on
    every engine): generation is not what these checks compare."""
    tok = trainer.processing_class
    texts = [f"{len(p)} {sum(map(ord, p)) % 97} = {len(p) % 7}" for p in prompts]
    ids = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
    return {"prompt_ids": [tok(p, add_special_tokens=False)["input_ids"] for p in prompts], "completion_ids": ids,
            "logprobs": [[0.0] * len(c) for c in ids]}


def record_advantages(trainer):
    """Wrap `_generate_and_score_completions` to keep every batch's advantages, V_old and value mask (this
    process's rows)."""
    recorded = []
    original = trainer._generate_and_score_completions

    def recording(inputs):
        output = original(inputs)
        recorded.append({k: output[k].tolist() for k in ("advantages", "old_values", "value_mask") if k in output})
        return output

    trainer._generate_and_score_completions = recording
    return recorded


def ppo_trainer(engine, model_path, output_dir, peft_config=None, **options):
    from grpo_ext_helpers import make_trainer

    return make_trainer(model_path, output_dir, advantage_estimator="gae", num_generations=1,
                        per_device_train_batch_size=2, max_steps=2, save_strategy="steps", save_steps=1,
                        value_learning_rate=1e-2, beta=0.1,
                        trainer_kwargs={"rollout_func": keyed_rollout, "peft_config": peft_config},
                        **engine_harness.training_kwargs(engine), **options)


def lora():
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])


def check_ppo(engine: str, model_path: str, output_dir: str, peft: bool = False) -> None:
    """PPO's critic: built from the policy's full weights, trained by its engine, saved each step and at the end,
    resumed from checkpoint-1 by a second trainer. Writes the full weights and advantages for the test."""
    from accelerate.utils import gather_object

    from grpo_ext.checkpoint import full_state_dict

    name = "ppo_peft" if peft else "ppo"
    options = {"peft_config": lora()} if peft else {}
    trainer = ppo_trainer(engine, model_path, f"{output_dir}/{name}", **options)
    accelerator = trainer.accelerator
    critic0 = full_state_dict(trainer.value_model.module, accelerator)
    policy0 = full_state_dict(trainer.model, accelerator)
    recorded = record_advantages(trainer)
    trainer.train()
    critic2 = full_state_dict(trainer.value_model.module, accelerator)
    policy2 = full_state_dict(trainer.model_wrapped, accelerator)
    resumed = ppo_trainer(engine, model_path, f"{output_dir}/{name}_resumed", **options)
    resumed.train(resume_from_checkpoint=f"{output_dir}/{name}/checkpoint-1")
    critic2_resumed = full_state_dict(resumed.value_model.module, accelerator)
    every_rank = gather_object([recorded])
    if accelerator.is_main_process:
        torch.save({"critic0": critic0, "policy0": policy0, "critic2": critic2, "policy2": policy2,
                    "critic2_resumed": critic2_resumed, "recorded": every_rank,
                    "logs": trainer.state.log_history}, f"{output_dir}/{name}.pt")
    accelerator.wait_for_everyone()


CHECKS = {"trainable": check_trainable, "ppo": check_ppo,
          "ppo_peft": lambda engine, model_path, output_dir: check_ppo(engine, model_path, output_dir, peft=True)}


if __name__ == "__main__":
    engine, model_path, output_dir, *names = sys.argv[1:]
    engine_harness.setup(engine)
    for name in names or CHECKS:
        CHECKS[name](engine, model_path, output_dir)
    from accelerate import PartialState

    PartialState().destroy_process_group()
