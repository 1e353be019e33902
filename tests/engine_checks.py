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


def write_inputs(output_dir: str) -> None:
    """What the checks load, written by the test before the launch: the initial weights `check_trainable` starts
    from (ZeRO-3's partitioned construction draws other random weights), a tiny ORM and PRM as saved models."""
    from launch_helpers import save_tiny_reward_model

    torch.save(tiny_value_model(seed=0).state_dict(), os.path.join(output_dir, "trainable_initial.pt"))
    for kind in ("orm", "prm"):
        save_tiny_reward_model(os.path.join(output_dir, f"{kind}_model"), kind)


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


# ------------------------------------------------------------------------------------------------ reward models


PROBLEMS = [{"prompt": f"Q{i}: 3+{i}=", "answer": str(3 + i)} for i in range(12)]


def answering_rollout(prompts, trainer):
    """A TRL `rollout_func` answering each problem in two steps, right for even i, wrong for odd i."""
    tok = trainer.processing_class
    texts = []
    for p in prompts:
        i = int(p[1 : p.index(":")])
        texts.append(f"3 plus {i}\n\nis {3 + i if i % 2 == 0 else i}")
    ids = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
    return {"prompt_ids": [tok(p, add_special_tokens=False)["input_ids"] for p in prompts], "completion_ids": ids,
            "logprobs": [[0.0] * len(c) for c in ids]}


class GreedySampler:
    """Math-Shepherd continuations by greedy decoding with the (gathered) policy, 3 tokens each: generation on
    every process, as many as its own prefixes need, deterministic on every engine."""

    def __init__(self, policy, tokenizer):
        self.policy, self.tokenizer, self.num_generated_tokens = policy, tokenizer, 0

    def __call__(self, prefixes, k):
        out = []
        for prefix in prefixes:
            ids = self.tokenizer(prefix, return_tensors="pt", add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                new = self.policy.generate(ids, do_sample=False, max_new_tokens=3, synced_gpus=False,
                                           pad_token_id=self.tokenizer.pad_token_id)[0, ids.shape[1]:]
            self.num_generated_tokens += k * len(new)
            out.append([self.tokenizer.decode(new, skip_special_tokens=True)] * k)
        return out


def iterative_trainer(engine, model_path, rm_path, output_dir, kind, peft=False, math_eval=None):
    from datasets import Dataset
    from grpo_ext_helpers import make_config
    from iterative_helpers import last_number_scorer
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

    from grpo_ext import GRPOConfig, GRPOTrainer

    config = make_config(output_dir, config_cls=GRPOConfig, per_device_train_batch_size=2, num_generations=4,
                         max_steps=2, beta=0.1, learning_rate=1e-2, save_strategy="steps", save_steps=1,
                         reward_model_refresh_steps=1, reward_model_train_steps=2, reward_model_batch_size=4,
                         reward_model_learning_rate=1e-3, rm_label_num_continuations=1,
                         supervision="process" if kind == "prm" else "outcome",
                         **engine_harness.training_kwargs(engine))
    tok = AutoTokenizer.from_pretrained(rm_path)
    # loaded after the config exists, as a launch script loads it: partitioned at load under ZeRO-3
    loader = AutoModelForTokenClassification if kind == "prm" else AutoModelForSequenceClassification
    rm = loader.from_pretrained(rm_path)
    extra = {"process_reward_model": rm, "process_reward_tokenizer": tok} if kind == "prm" else \
        {"reward_processing_classes": [tok]}
    if peft:
        extra["peft_config"] = lora()
    torch.manual_seed(0)
    trainer = GRPOTrainer(model=model_path, reward_funcs=None if kind == "prm" else [rm], args=config,
                          train_dataset=Dataset.from_list(PROBLEMS), rollout_func=answering_rollout, **extra)
    trainer.refresher.scorer = last_number_scorer
    trainer.refresher.continuation_sampler_factory = lambda policy: GreedySampler(policy, trainer.processing_class)
    if math_eval is not None:
        from grpo_ext.evaluation import MathEvalCallback

        MathEvalCallback(trainer, math_eval, eval_steps=1, max_new_tokens=4).attach()
    return trainer


def reference_weights(trainer, accelerator):
    """The reference's full weights, named as the policy's (a PEFT policy's "ref" adapter, named as "default")."""
    from grpo_ext.checkpoint import full_state_dict

    if trainer.ref_model is not None:
        return full_state_dict(trainer.ref_model, accelerator)
    state = full_state_dict(trainer.model_wrapped, accelerator, keep=lambda n: ".ref." in n)
    return None if state is None else {k.replace(".ref.", ".default."): v for k, v in state.items()}


def check_iterative(engine: str, model_path: str, output_dir: str, kind: str = "orm", peft: bool = False) -> None:
    """Iterative RL with an ORM or a PRM (and with a LoRA policy): two refreshes (the RM trained by its engine, the
    reference reset), a checkpoint each step, a second trainer resuming from checkpoint-1; MathEvalCallback beside
    the ORM run. Writes the full RM, policy and reference weights and the logs."""
    from accelerate.utils import gather_object

    from grpo_ext.checkpoint import full_state_dict

    name = f"iterative_{kind}" + ("_peft" if peft else "")
    math_eval = None
    if kind == "orm" and not peft:  # equal shards of 5 problems on 2 processes: generation on every rank alike
        math_eval = [{"prompt": [{"role": "user", "content": p["prompt"]}], "answer": p["answer"]} for p in PROBLEMS[:5]]
    rm_path = f"{output_dir}/{kind}_model"
    trainer = iterative_trainer(engine, model_path, rm_path, f"{output_dir}/{name}", kind, peft, math_eval)
    accelerator = trainer.accelerator
    rm0 = full_state_dict(trainer.refresher.trainable.module, accelerator)
    recorded = record_advantages(trainer)
    trainer.train()
    report = {
        "rm0": rm0, "rm2": full_state_dict(trainer.refresher.trainable.module, accelerator),
        "policy2": full_state_dict(trainer.model_wrapped, accelerator), "reference2": reference_weights(trainer,
                                                                                                       accelerator),
        "logs": trainer.state.log_history, "recorded": gather_object([recorded]),
        "buffer": len(trainer.refresher.buffer),
    }
    resumed = iterative_trainer(engine, model_path, rm_path, f"{output_dir}/{name}_resumed", kind, peft, math_eval)
    resumed.train(resume_from_checkpoint=f"{output_dir}/{name}/checkpoint-1")
    report["rm2_resumed"] = full_state_dict(resumed.refresher.trainable.module, accelerator)
    report["reference2_resumed"] = reference_weights(resumed, accelerator)
    report["buffer_resumed"] = len(resumed.refresher.buffer)
    if accelerator.is_main_process:
        torch.save(report, f"{output_dir}/{name}.pt")
    accelerator.wait_for_everyone()


def check_process(engine: str, model_path: str, output_dir: str) -> None:
    """Process supervision with a frozen PRM (placed as TRL places its reward models): one step's advantages."""
    from accelerate.utils import gather_object
    from datasets import Dataset
    from grpo_ext_helpers import make_config
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from grpo_ext import GRPOConfig, GRPOTrainer

    config = make_config(f"{output_dir}/process", config_cls=GRPOConfig, per_device_train_batch_size=2,
                         num_generations=4, max_steps=1, beta=0.1, supervision="process",
                         **engine_harness.training_kwargs(engine))
    prm_path = f"{output_dir}/prm_model"
    prm = AutoModelForTokenClassification.from_pretrained(prm_path)  # after the config: partitioned under ZeRO-3
    trainer = GRPOTrainer(model=model_path, reward_funcs=None, args=config, train_dataset=Dataset.from_list(PROBLEMS),
                          rollout_func=answering_rollout, process_reward_model=prm,
                          process_reward_tokenizer=AutoTokenizer.from_pretrained(prm_path))
    recorded = record_advantages(trainer)
    trainer.train()
    every_rank = gather_object([recorded])
    if trainer.accelerator.is_main_process:
        torch.save({"recorded": every_rank}, f"{output_dir}/process.pt")
    trainer.accelerator.wait_for_everyone()


def check_sampling(engine: str, model_path: str, output_dir: str) -> None:
    """RFT/DPO sampling (`launch/rft.py`'s `sample_from_starting_model`): 3 problems on 2 processes, so the
    processes generate for 2 and 1 problems; the starting model loaded as the script loads it (partitioned under
    ZeRO-3)."""
    from types import SimpleNamespace

    from trl import SFTConfig

    from launch.rft import sample_from_starting_model

    training_args = SFTConfig(output_dir=f"{output_dir}/sampling", report_to="none", model_init_kwargs={},
                              **engine_harness.training_kwargs(engine))
    script_args = SimpleNamespace(num_samples=2, sampling_max_new_tokens=5, sampling_temperature=1.0,
                                  sampling_top_p=1.0, sampling_batch_size=1)
    samples = sample_from_starting_model(script_args, training_args, SimpleNamespace(model_name_or_path=model_path),
                                         PROBLEMS[:3])
    from accelerate import PartialState

    if PartialState().is_main_process:
        torch.save({"samples": samples}, f"{output_dir}/sampling.pt")
    PartialState().wait_for_everyone()


CHECKS = {
    "trainable": check_trainable,
    "ppo": check_ppo,
    "ppo_peft": lambda engine, model_path, output_dir: check_ppo(engine, model_path, output_dir, peft=True),
    "iterative_orm": check_iterative,
    "iterative_prm": lambda engine, model_path, output_dir: check_iterative(engine, model_path, output_dir, "prm"),
    "iterative_orm_peft": lambda engine, model_path, output_dir: check_iterative(engine, model_path, output_dir,
                                                                                 peft=True),
    "process": check_process,
    "sampling": check_sampling,
}


if __name__ == "__main__":
    engine, model_path, output_dir, *names = sys.argv[1:]
    engine_harness.setup(engine)
    for name in names or CHECKS:
        CHECKS[name](engine, model_path, output_dir)
    from accelerate import PartialState

    print(f"engine checks on {engine}: every check done", flush=True)  # a later crash is then at teardown
    PartialState().destroy_process_group()
    # Every result is on disk: leave without interpreter finalization, where gloo's worker threads can abort the
    # process (seen once in about a dozen FSDP2 launches, in CI: "terminate called without an active exception", SIGABRT,
    # after the checks' output; pytorch/pytorch#179291 describes the mechanism).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
