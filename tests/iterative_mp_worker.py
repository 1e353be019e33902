"""Run by tests/test_iterative.py under `accelerate launch --num_processes 2 --cpu`: one ORM and one PRM refresh
with different rollouts on each rank; every rank must end with the same RM weights, buffer and pending state."""

import hashlib

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from grpo_ext.iterative import IterativeRLConfig, RewardModelRefresher
from grpo_ext.reward_models import ProcessRewardModel
from iterative_helpers import last_number_scorer, tiny_orm, tiny_prm, tiny_tokenizer


def digest(model) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class Sampler:
    num_generated_tokens = 0

    def __call__(self, prefixes, k):
        return [["7"] * k for _ in prefixes]


def main(end: bool = True):
    accelerator = Accelerator(cpu=True)
    rank = accelerator.process_index
    tok = tiny_tokenizer()
    args = IterativeRLConfig(reward_model_refresh_steps=1, reward_model_train_steps=3, reward_model_batch_size=4,
                             reward_model_learning_rate=1e-3, rm_label_num_continuations=2)
    orm = tiny_orm(seed=rank)  # deliberately different initial weights per rank
    orm_refresher = RewardModelRefresher(orm, tok, "orm", args, scorer=last_number_scorer, accelerator=accelerator)
    prm = ProcessRewardModel(tiny_prm(seed=rank), tok)
    prm_refresher = RewardModelRefresher(prm, tok, "prm", args, scorer=last_number_scorer, accelerator=accelerator,
                                         continuation_sampler_factory=lambda policy: Sampler())
    for step in (1, 2):
        n = 3 + rank  # different rollouts, and different counts, per rank
        prompts = [f"r{rank} s{step} q{i} " for i in range(n)]
        completions = [f"a\n\nb {i}\n\n{7 if i % 2 else 3}" for i in range(n)]
        golds = ["7"] * n
        orm_refresher.record(prompts, completions, golds)
        prm_refresher.record(prompts, completions, golds)
        orm_metrics = orm_refresher.refresh(global_step=step)
        prm_refresher.refresh(policy_model=torch.nn.Linear(1, 1), global_step=step)
    assert orm_metrics["rm/num_new_rows"] == 7.0 and orm_metrics["rm/num_replay_rows"] == 1.0, orm_metrics
    mine = (digest(orm), digest(prm.model), len(orm_refresher.buffer), len(prm_refresher.buffer))
    everyone = gather_object([mine])
    if all(x == everyone[0] for x in everyone) and everyone[0][2] == 14:
        print(f"rank {rank}: refresher IDENTICAL", flush=True)
    else:
        print(f"rank {rank}: refresher DIFFERENT {everyone}", flush=True)
    accelerator.wait_for_everyone()
    if end:
        accelerator.end_training()  # destroy the gloo group: left alive it can abort the process at teardown


def trainer_main(model_path: str, output_dir: str, end: bool = True) -> None:
    """grpo_ext's GRPOTrainer with a tiny ORM refreshed every step, each group of 4 completions split 2 + 2 over the
    ranks: every rank must record only its own rollouts (the gathered mix holds each completion once) and end each
    iteration with the same RM weights and a reference equal to its policy."""
    from accelerate import PartialState
    from datasets import Dataset
    from transformers import AutoTokenizer

    import grpo_ext

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(model_path)
    config = grpo_ext.GRPOConfig(
        output_dir=output_dir, max_steps=2, per_device_train_batch_size=2, num_generations=4,
        max_completion_length=4, beta=0.1, learning_rate=1e-2, report_to="none", use_cpu=True, bf16=False,
        logging_steps=1, save_strategy="no", seed=0, reward_model_refresh_steps=1, reward_model_train_steps=2,
        reward_model_batch_size=4, reward_model_learning_rate=1e-3,
    )
    data = Dataset.from_list([{"prompt": f"Q{i}: 3+{i}=", "answer": str(3 + i)} for i in range(8)])
    orm = tiny_orm(seed=PartialState().process_index)  # different weights per rank: the refresh must align them
    trainer = grpo_ext.GRPOTrainer(model=model_path, reward_funcs=[orm], args=config, train_dataset=data,
                                   processing_class=tok, reward_processing_classes=[tok])
    trainer.refresher.scorer = last_number_scorer
    trainer.train()
    rank = trainer.accelerator.process_index
    new_rows = [h["rm/num_new_rows"] for h in trainer.state.log_history if "rm/num_new_rows" in h]
    policy = trainer.accelerator.unwrap_model(trainer.model)
    ref_equal = all(torch.equal(a, b) for a, b in zip(policy.parameters(), trainer.ref_model.parameters()))
    mine = (digest(orm), len(trainer.refresher.buffer), new_rows, ref_equal)
    everyone = gather_object([mine])
    # 2 steps x one group of 4 completions (2 per rank), gathered once each
    if all(x == everyone[0] for x in everyone) and everyone[0][1:] == (8, [4.0, 4.0], True):
        print(f"rank {rank}: trainer IDENTICAL", flush=True)
    else:
        print(f"rank {rank}: trainer DIFFERENT {everyone}", flush=True)
    trainer.accelerator.wait_for_everyone()
    if end:
        trainer.accelerator.end_training()


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["trainer"]:
        trainer_main(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["both"]:  # one launch for both checks: a launch's start-up costs more than either check
        main(end=False)
        trainer_main(sys.argv[2], sys.argv[3])
    else:
        main()
