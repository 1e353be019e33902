"""One PPO step on 2 processes (tests/test_ppo.py): each rank writes its critic before and after the step.

    accelerate launch --num_processes 2 ... ppo_mp_worker.py MODEL_PATH OUTPUT_DIR
"""

from __future__ import annotations

import json
import sys

import torch
from accelerate.utils import gather_object
from grpo_ext_helpers import make_trainer


def main(model_path: str, output_dir: str, end: bool = True) -> None:
    torch.set_num_threads(1)
    trainer = make_trainer(model_path, output_dir, advantage_estimator="gae", num_generations=1,
                           per_device_train_batch_size=2, max_steps=1, value_learning_rate=1e-2)
    critic = trainer.value_model.model
    initial = {k: v.detach().clone() for k, v in critic.state_dict().items()}
    prompts, advantages = [], []
    original = trainer._generate_and_score_completions

    def recording(inputs):
        prompts.extend(x["prompt"] for x in inputs)
        output = original(inputs)
        advantages.extend(output["advantages"][output["value_mask"].bool()].tolist())  # valid tokens only
        return output

    trainer._generate_and_score_completions = recording
    trainer.train()
    rank = trainer.accelerator.process_index
    torch.save({**{k: v.detach().clone() for k, v in critic.state_dict().items()}, "initial": initial},
               f"{output_dir}/critic_rank{rank}.pt")
    every_rank = gather_object([prompts])
    every_rank_advantages = gather_object([advantages])
    if trainer.accelerator.is_main_process:
        report = {"num_processes": trainer.accelerator.num_processes, "prompts_differ": every_rank[0] != every_rank[1],
                  "advantages": every_rank_advantages}
        with open(f"{output_dir}/report.json", "w") as handle:
            json.dump(report, handle)
    if end:
        trainer.accelerator.end_training()  # gloo threads left alive can abort the process at teardown


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
