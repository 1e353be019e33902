"""A small iterative GRPO run (grpo_ext.GRPOTrainer, tiny policy, tiny ORM refreshed every 2 steps, a checkpoint
every step), for the kill-and-resume test in test_iterative.py.

    python iterative_resume_worker.py MODEL_PATH WORK_DIR full-then-kill   # run A uninterrupted to step 4, then run
                                                                          # B, SIGKILLed once checkpoint-3 is written
    python iterative_resume_worker.py MODEL_PATH WORK_DIR resume           # run B resumed from checkpoint-3

Each finished run writes WORK_DIR/<run>.pt: the reference weights at the start of step 4 (restored from the
checkpoint in the resumed run) and at the end, the ORM weights, the replay buffer and the log history.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parent))
from iterative_helpers import last_number_scorer, tiny_orm  # noqa: E402

torch.set_num_threads(1)  # the runs are compared bit for bit: same thread count in every process


def _weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class _Probe(TrainerCallback):
    """Records the reference before step 4; in the run to be killed, SIGKILLs the process once checkpoint-3 is
    written (at the start of step 4, as a crash mid-training would)."""

    def __init__(self, trainer, kill: bool):
        self.trainer, self.kill, self.ref_before_step_4 = trainer, kill, None

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 3:
            if self.kill:
                os.kill(os.getpid(), signal.SIGKILL)
            self.ref_before_step_4 = _weights(self.trainer.ref_model)


def run(model_path: str, output_dir: Path, kill: bool = False, resume: str | None = None) -> None:
    from datasets import Dataset
    from transformers import AutoTokenizer

    import grpo_ext

    tok = AutoTokenizer.from_pretrained(model_path)
    config = grpo_ext.GRPOConfig(
        output_dir=str(output_dir), max_steps=4, per_device_train_batch_size=4, num_generations=2,
        max_completion_length=4, beta=0.1, learning_rate=1e-2, report_to="none", use_cpu=True, bf16=False,
        logging_steps=1, save_strategy="steps", save_steps=1, seed=0, reward_model_refresh_steps=2,
        reward_model_train_steps=2, reward_model_batch_size=4, reward_model_learning_rate=1e-3, disable_tqdm=True,
    )
    data = Dataset.from_list([{"prompt": f"Q{i}: 3+{i}=", "answer": str(3 + i)} for i in range(8)])
    trainer = grpo_ext.GRPOTrainer(model=model_path, reward_funcs=[tiny_orm(seed=2)], args=config, train_dataset=data,
                                   processing_class=tok, reward_processing_classes=[tok])
    trainer.refresher.scorer = last_number_scorer
    probe = _Probe(trainer, kill)
    trainer.add_callback(probe)
    trainer.train(resume_from_checkpoint=resume)
    torch.save({"ref_before_step_4": probe.ref_before_step_4, "ref": _weights(trainer.ref_model),
                "rm": _weights(trainer.refresher.model), "buffer": trainer.refresher.buffer.rows,
                "log_history": trainer.state.log_history}, output_dir.with_suffix(".pt"))


if __name__ == "__main__":
    model_path, work_dir, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    if mode == "full-then-kill":
        run(model_path, work_dir / "full")
        run(model_path, work_dir / "cut", kill=True)
    else:
        run(model_path, work_dir / "cut", resume=str(work_dir / "cut" / "checkpoint-3"))
