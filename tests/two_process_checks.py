"""Every 2-process check of the suite in one `accelerate launch` (tests/test_two_processes.py): a launch's start-up
(the launcher and two ranks importing torch, transformers and TRL) costs more than any one check, so they share it.

    accelerate launch --num_processes 2 ... two_process_checks.py MODEL_PATH OUTPUT_DIR

Each check writes to its own folder under OUTPUT_DIR or prints its own labelled line; the last one ends the launch.
"""

import os
import sys

import grpo_ext_helpers
import iterative_mp_worker
import ppo_mp_worker

if __name__ == "__main__":
    model_path, output_dir = sys.argv[1], sys.argv[2]
    for name in ("group", "iterative", "ppo"):
        os.makedirs(os.path.join(output_dir, name), exist_ok=True)
    grpo_ext_helpers.two_process_worker(model_path, os.path.join(output_dir, "group"), end=False)
    iterative_mp_worker.main(end=False)
    iterative_mp_worker.trainer_main(model_path, os.path.join(output_dir, "iterative"), end=False)
    ppo_mp_worker.main(model_path, os.path.join(output_dir, "ppo"), end=True)
