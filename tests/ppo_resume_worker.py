"""A small PPO run (advantage_estimator="gae", tiny policy, a checkpoint every step), for the kill-and-resume test in
test_ppo.py.

    python ppo_resume_worker.py MODEL_PATH WORK_DIR full-then-kill   # run A to step 3; run B SIGKILLed at the start
                                                                    # of step 3, once checkpoint-2 is written
    python ppo_resume_worker.py MODEL_PATH WORK_DIR resume           # run B resumed from its checkpoint-2

Each finished run writes WORK_DIR/<run>.pt: the critic's weights and AdamW state, and the policy's weights.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grpo_ext_helpers import make_trainer, tiny_dataset

torch.set_num_threads(1)  # the runs are compared bit for bit: same thread count in every process


class _KillAtStep3(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 2:
            os.kill(os.getpid(), signal.SIGKILL)


def run(model_path: str, output_dir: Path, kill: bool = False, resume: str | None = None) -> None:
    # 16 prompts, 4 per step: the 3 steps stay inside the first epoch
    trainer = make_trainer(model_path, output_dir, advantage_estimator="gae", num_generations=1, max_steps=3,
                           save_strategy="steps", save_steps=1, value_learning_rate=1e-2, disable_tqdm=True,
                           dataset=tiny_dataset(16))
    if kill:
        trainer.add_callback(_KillAtStep3())
    trainer.train(resume_from_checkpoint=resume)
    optimizer = trainer.value_model.optimizer.state_dict()
    torch.save({"critic": trainer.value_model.model.state_dict(), "critic_optimizer": optimizer["state"],
                "policy": trainer.model.state_dict()}, output_dir.with_suffix(".pt"))


if __name__ == "__main__":
    model_path, work_dir, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    if mode == "full-then-kill":
        run(model_path, work_dir / "full")
        run(model_path, work_dir / "cut", kill=True)
    else:
        run(model_path, work_dir / "cut", resume=str(work_dir / "cut" / "checkpoint-2"))
