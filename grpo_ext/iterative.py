"""Iterative RL (DeepSeekMath, arXiv 2402.03300, section 4.1.3): refresh the reward model on fresh policy
samples with 10% replay of historical data, and reset the reference model to the current policy.

Pieces, from pure to wired:

* `training_mix(new_rows, buffer, replay_ratio, rng)`: the RM's training data for one iteration;
* `ReplayBuffer`: every earlier iteration's labelled rows (checkpointed);
* `RewardModelRefresher`: records rollouts, labels them, trains the RM in place, keeps all processes equal;
* `reset_reference(ref_model, policy_model)`: reference <- policy;
* `IterativeRLCallback`: a `transformers.TrainerCallback` that fires the refresh every
  `reward_model_refresh_steps` optimizer steps and saves/restores the refresher with TRL's checkpoints;
* `attach_iterative_rl(trainer)`: builds the refresher from a GRPO trainer and registers the callback;
* `IterativeRLConfig`: the options, as a dataclass mixin for `GRPOConfig`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import TrainerCallback

from .checkpoint import (
    IncompleteCheckpointError,
    finish_folder,
    load_full_weights,
    read_folder,
    save_full_weights,
    save_pretrained_full,
    write_jsonl,
)
from .data import read_jsonl
from .engines import (
    TrainableModel,
    copy_parameters,
    engine_name,
    gathered_for_generation,
    settle_shards,
    unwrapped,
)
from .errors import ConfigurationError
from .labelling import (
    LABEL_SCORERS,
    LabellingCost,
    Scorer,
    TransformersContinuationSampler,
    get_label_scorer,
    math_shepherd_labels_batch,
    orm_labels,
)
from .reward_models import (
    DEFAULT_STEP_SEPARATOR,
    OutcomeRewardModel,
    ProcessRewardModel,
    completion_text,
    evaluate_reward_model,
    make_collate,
    orm_text,
    prompt_text,
    train_reward_model,
    unwrap_reward_model,
)
from .steps import split_steps

logger = logging.getLogger(__name__)

STATE_DIR_NAME = "iterative_rl"  # inside each checkpoint-<step>/
REWARD_MODEL_STATE_DIR = "reward_model"  # the RM's weights and optimizer (grpo_ext.checkpoint.save_trainable)
REFERENCE_FILE = "reference_model.pt"  # full weights of the reference (or of a PEFT policy's "ref" adapter)
REFERENCE_ADAPTER = "ref"  # TRL's name for the frozen adapter it computes a PEFT policy's reference with
REWARD_MODEL_DIR_NAME = "reward_model"  # under output_dir: the latest refreshed RM, loadable with from_pretrained


# --------------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------------


@dataclass
class IterativeRLConfig:
    """Iterative-RL options, a mixin for `GRPOConfig`: `class GRPOConfig(IterativeRLConfig, trl.GRPOConfig)`."""

    reward_model_refresh_steps: int = field(
        default=0,
        metadata={"help": "Refresh the reward model every this many optimizer steps (one iteration); 0 disables "
                  "iterative RL."},
    )
    replay_ratio: float = field(
        default=0.1,
        metadata={"help": "Fraction of the reward model's training mix drawn from the replay buffer of earlier "
                  "iterations (DeepSeekMath: 0.1). Must be in [0, 1)."},
    )
    reward_model_train_epochs: float = field(
        default=1.0, metadata={"help": "Epochs over the training mix at each refresh."}
    )
    reward_model_train_steps: int = field(
        default=0, metadata={"help": "If > 0, number of reward-model optimizer steps per refresh (overrides epochs)."}
    )
    reward_model_learning_rate: float = field(
        default=2e-6, metadata={"help": "AdamW learning rate of the reward model during refreshes."}
    )
    reward_model_batch_size: int = field(
        default=8, metadata={"help": "Per-step batch size of reward-model training at a refresh (every process)."}
    )
    reward_model_max_length: int | None = field(
        default=None, metadata={"help": "Truncate reward-model training inputs to this many tokens (None: no cut)."}
    )
    reset_ref_on_refresh: bool = field(
        default=True,
        metadata={"help": "Reset the reference model to the current policy at every refresh. With a PEFT policy the "
                  "reference is TRL's frozen 'ref' adapter (created as a copy of the trained adapter when absent), "
                  "and the reset copies the trained adapter into it."},
    )
    rm_label_mode: str = field(
        default="hard",
        metadata={"help": "PRM step labels (Math-Shepherd): 'hard' = a step is good if any of k continuations "
                  "reaches the gold answer; 'soft' = the fraction that does.", "choices": ["hard", "soft"]},
    )
    rm_label_num_continuations: int = field(
        default=8, metadata={"help": "k, continuations sampled from every step prefix to label PRM steps."}
    )
    rm_label_max_new_tokens: int = field(
        default=512, metadata={"help": "Maximum new tokens of each labelling continuation."}
    )
    rm_gold_column: str = field(
        default="answer", metadata={"help": "Dataset column holding the gold answer used to label rollouts."}
    )
    rm_label_scorer: str = field(
        default="accuracy",
        metadata={"help": "Rule that labels rollouts correct for the reward model's training data, by name: "
                  "'accuracy' (rewards.accuracy_reward, math-verify) or 'strict_accuracy' (no last-number "
                  "fallback). See grpo_ext.labelling.LABEL_SCORERS.", "choices": list(LABEL_SCORERS)},
    )
    rm_offload_policy_optimizer: bool = field(
        default=False,
        metadata={"help": "Move the policy optimizer's state to CPU while the reward model trains, and back after "
                  "(DDP or one process; DeepSpeed and FSDP2 offload with their own config)."},
    )

    def __post_init__(self):
        if self.reward_model_refresh_steps < 0:
            raise ConfigurationError(f"reward_model_refresh_steps must be >= 0, got {self.reward_model_refresh_steps}")
        if not 0.0 <= self.replay_ratio < 1.0:
            raise ConfigurationError(f"replay_ratio must be in [0, 1), got {self.replay_ratio}")
        if self.rm_label_mode not in ("hard", "soft"):
            raise ConfigurationError(f"rm_label_mode must be 'hard' or 'soft', got {self.rm_label_mode!r}")
        if self.rm_label_num_continuations < 1:
            raise ConfigurationError(f"rm_label_num_continuations must be >= 1, got {self.rm_label_num_continuations}")
        if self.reward_model_batch_size < 1:
            raise ConfigurationError(f"reward_model_batch_size must be >= 1, got {self.reward_model_batch_size}")
        # checked here rather than at the first refresh, which may come hours into a run
        if not self.reward_model_learning_rate > 0:
            raise ConfigurationError(f"reward_model_learning_rate must be > 0, got {self.reward_model_learning_rate}")
        if self.reward_model_train_steps < 0:
            raise ConfigurationError(f"reward_model_train_steps must be >= 0, got {self.reward_model_train_steps}")
        if self.reward_model_train_steps == 0 and not self.reward_model_train_epochs > 0:
            raise ConfigurationError(f"reward_model_train_epochs must be > 0 when reward_model_train_steps is 0, got "
                             f"{self.reward_model_train_epochs}")
        if self.rm_label_max_new_tokens < 1:
            raise ConfigurationError(f"rm_label_max_new_tokens must be >= 1, got {self.rm_label_max_new_tokens}")
        get_label_scorer(self.rm_label_scorer)  # an unknown name fails here, not at the first refresh
        if self.reward_model_max_length is not None and self.reward_model_max_length < 1:
            raise ConfigurationError(
                f"reward_model_max_length must be >= 1 or None, got {self.reward_model_max_length}"
            )
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()


# --------------------------------------------------------------------------------------------------------------
# Replay
# --------------------------------------------------------------------------------------------------------------


def num_replay_rows(num_new: int, buffer_size: int, replay_ratio: float) -> int:
    """Replay rows so that replay is `replay_ratio` of the mix: r / (n + r) = rho gives
    r = round(rho / (1 - rho) * n), capped by the buffer size."""
    if not 0.0 <= replay_ratio < 1.0:
        raise ValueError(f"replay_ratio must be in [0, 1), got {replay_ratio}")
    return min(buffer_size, int(math.floor(replay_ratio / (1.0 - replay_ratio) * num_new + 0.5)))


class ReplayBuffer:
    """All labelled reward-model rows of earlier iterations (JSON-serialisable dicts), in insertion order."""

    FILE_NAME = "replay_buffer.jsonl"

    def __init__(self, rows: Sequence[dict] | None = None):
        self.rows: list[dict] = list(rows or [])

    def __len__(self) -> int:
        return len(self.rows)

    def extend(self, rows: Sequence[dict]) -> None:
        self.rows.extend(rows)

    def sample(self, n: int, rng: random.Random) -> list[dict]:
        """n rows drawn uniformly without replacement (n is capped by the buffer size)."""
        return rng.sample(self.rows, min(n, len(self.rows)))

    def state_dict(self) -> dict:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state: dict) -> None:
        self.rows = list(state["rows"])

    def save(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        write_jsonl(os.path.join(directory, self.FILE_NAME), self.rows)

    @classmethod
    def load(cls, directory: str) -> "ReplayBuffer":
        return cls([row for _, row in read_jsonl(os.path.join(directory, cls.FILE_NAME))])


def training_mix(new_rows: Sequence[dict], buffer: ReplayBuffer, replay_ratio: float, rng: random.Random):
    """New rows plus `num_replay_rows(len(new_rows), len(buffer), replay_ratio)` rows sampled from the buffer,
    shuffled with `rng`. Returns (mix, number of replayed rows)."""
    replay = buffer.sample(num_replay_rows(len(new_rows), len(buffer), replay_ratio), rng)
    mix = list(new_rows) + replay
    rng.shuffle(mix)
    return mix, len(replay)


# --------------------------------------------------------------------------------------------------------------
# Reference reset and optimizer offload
# --------------------------------------------------------------------------------------------------------------


def reset_reference(ref_model, policy_model) -> bool:
    """reference <- policy, on every process; False, doing nothing, where there is no reference to reset.

    A separate reference model (full fine-tuning, beta > 0) gets the policy's parameters. A PEFT policy's reference
    is TRL's frozen "ref" adapter when the policy has one (`add_reference_adapter`): it gets the trained adapter's
    parameters; without one the reference is the adapter-disabled base, which no reset can change. Both copies go
    through `grpo_ext.engines.copy_parameters` (TRL's `SyncRefModelCallback.sync_target_model` with alpha 1, which
    gathers ZeRO-3 shards; FSDP2 shards of policy and reference are laid out alike and copy locally)."""
    for model in (policy_model, ref_model):  # engines: their prefetched parameters released before the gather
        settle_shards(model)
    policy = unwrapped(policy_model)
    if hasattr(policy, "peft_config"):
        if ref_model is not None:
            raise ValueError("the policy is a PEFT model: its reference is an adapter of it, pass ref_model=None")
        if REFERENCE_ADAPTER not in policy.peft_config:
            return False
        trained, reference = adapter_parameters(policy)
        copy_parameters(trained, reference)
        return True
    if ref_model is None:
        return False
    copy_parameters(policy.parameters(), unwrapped(ref_model).parameters())
    return True


def adapter_parameters(policy) -> tuple[list, list]:
    """The trained adapter's parameters and the "ref" adapter's, aligned (PEFT names them by adapter)."""
    trained = policy.active_adapter if isinstance(policy.active_adapter, str) else policy.active_adapter[0]
    named = dict(policy.named_parameters())
    pairs = [(p, named[n.replace(f".{trained}.", f".{REFERENCE_ADAPTER}.")])
             for n, p in named.items() if f".{trained}." in n]
    return [a for a, _ in pairs], [b for _, b in pairs]


def add_reference_adapter(policy) -> bool:
    """Give a PEFT policy TRL's frozen "ref" adapter, a copy of its trained adapter (TRL adds one only for a policy
    passed as a `PeftModel`; for a `peft_config` its reference is the adapter-disabled base, which a reset cannot
    move). While the adapters are equal (a new LoRA adapter adds zero) the reference is the base, as before. Call
    before the policy is prepared by its engine. Returns whether the policy is a PEFT model."""
    policy = unwrapped(policy)
    if not hasattr(policy, "peft_config"):
        return False
    if REFERENCE_ADAPTER not in policy.peft_config:
        trained = policy.active_adapter if isinstance(policy.active_adapter, str) else policy.active_adapter[0]
        policy.add_adapter(REFERENCE_ADAPTER, policy.peft_config[trained])
        _, reference = adapter_parameters(policy)
        for parameter in reference:
            parameter.requires_grad_(False)
        copy_parameters(*adapter_parameters(policy))
    return True


def move_optimizer_state(optimizer, device) -> None:
    """Move every tensor of an optimizer's state (e.g. Adam moments) to `device`, in place."""
    for state in optimizer.state.values():
        for key, value in state.items():
            if torch.is_tensor(value):
                state[key] = value.to(device, non_blocking=True)


def refresh_memory_estimate(
    policy_params: int,
    rm_params: int,
    weight_bytes: int = 2,
    optimizer_state_bytes: int | None = None,
    policy_trainable_params: int | None = None,
    has_reference: bool = True,
    offload_policy_optimizer: bool = False,
) -> dict[str, float]:
    """Accelerator memory (GiB) held while the RM trains at a refresh, activations excluded:

        policy    = P * w + T * 2s      (weights; AdamW's two moments over the T trainable parameters. The policy's
                                         gradients were freed by the trainer's `zero_grad(set_to_none=True)`.)
        reference = P * w               (if a separate reference model exists)
        RM        = R * (w + w + 2s)    (weights, gradients, AdamW moments)

    with w = `weight_bytes`, s = `optimizer_state_bytes` (default w: torch's AdamW keeps its moments in the
    parameter dtype) and T = `policy_trainable_params` (default P; the adapter size with PEFT). Offloading the policy
    optimizer removes the T * 2s term. An analytical estimate, not a measurement."""
    s = weight_bytes if optimizer_state_bytes is None else optimizer_state_bytes
    trainable = policy_params if policy_trainable_params is None else policy_trainable_params
    gib = 2.0**30
    parts = {
        "policy_weights": policy_params * weight_bytes / gib,
        "policy_optimizer": 0.0 if offload_policy_optimizer else trainable * 2 * s / gib,
        "reference": policy_params * weight_bytes / gib if has_reference else 0.0,
        "rm_weights_and_grads": rm_params * 2 * weight_bytes / gib,
        "rm_optimizer": rm_params * 2 * s / gib,
    }
    parts["total"] = sum(parts.values())
    return parts


# --------------------------------------------------------------------------------------------------------------
# Refresher
# --------------------------------------------------------------------------------------------------------------


class RewardModelRefresher:
    """Turns the rollouts of an iteration into RM training data and trains the RM on them plus replay.

    Args:
        reward_model: the object the trainer scores with: an ORM `PreTrainedModel` (as in `reward_funcs`, possibly
            accelerate-prepared) or a `ProcessRewardModel`. Its parameters are updated in place, so the trainer
            needs no swap.
        tokenizer: the RM's tokenizer.
        kind: "orm" or "prm".
        args: an `IterativeRLConfig` (or a GRPOConfig that inherits it).
        scorer: `(completions, golds) -> list[float | None]`; defaults to the scorer named by
            `args.rm_label_scorer` (`rewards.accuracy_reward` by default).
        continuation_sampler_factory: `policy_model -> generate(prefixes, k)` for PRM labels; defaults to
            `TransformersContinuationSampler` on the policy.
        step_splitter: completion text -> steps, each a substring of it, in order (PRM); defaults to splitting at
            the PRM's step separator. Pass the trainer's splitter so the RM learns the steps it will score.
        policy_tokenizer: the policy's tokenizer, for PRM labelling continuations and conversational prompts as the
            policy saw them (defaults to `tokenizer`).
        accelerator: an `accelerate.Accelerator` for multi-process runs (None: single process).
        seed: base seed; iteration t uses seed + t for the replay draw and the RM's data order.
    """

    def __init__(
        self,
        reward_model,
        tokenizer,
        kind: str,
        args: IterativeRLConfig,
        scorer: Scorer | None = None,
        continuation_sampler_factory: Callable[[Any], Callable] | None = None,
        step_splitter: Callable[[str], list[str]] | None = None,
        accelerator=None,
        seed: int = 0,
        policy_tokenizer=None,
    ):
        if kind not in ("orm", "prm"):
            raise ValueError(f"kind must be 'orm' or 'prm', got {kind!r}")
        self.reward_model = reward_model
        # the RM trains on the run's engine with float32 weights (DeepSpeed: its float32 master weights); a wrapper
        # that scores with it (ProcessRewardModel, OutcomeRewardModel) is given the engine to score through
        self.trainable = TrainableModel(
            unwrap_reward_model(reward_model), accelerator, learning_rate=args.reward_model_learning_rate,
            micro_batch_size=args.reward_model_batch_size,
        )  # fmt: skip
        if isinstance(reward_model, (ProcessRewardModel, OutcomeRewardModel)):
            reward_model.model = self.trainable.module
        self.tokenizer = tokenizer
        self.policy_tokenizer = policy_tokenizer if policy_tokenizer is not None else tokenizer
        self.kind = kind
        self.args = args
        self.scorer = scorer or get_label_scorer(getattr(args, "rm_label_scorer", "accuracy"))
        self.step_separator = getattr(reward_model, "step_separator", DEFAULT_STEP_SEPARATOR)
        self.step_splitter = step_splitter or (lambda text: split_steps(text, self.step_separator))
        self.continuation_sampler_factory = continuation_sampler_factory or (
            lambda policy: TransformersContinuationSampler(
                policy, self.policy_tokenizer, max_new_tokens=args.rm_label_max_new_tokens,
                show_progress=self.show_progress,
            )
        )
        self.accelerator = accelerator
        self.seed = seed
        self.collate = make_collate(kind, tokenizer, self.step_separator, args.reward_model_max_length)
        self.buffer = ReplayBuffer()
        self.pending: list[dict] = []  # this process's rollouts since the last refresh
        self.iteration = 0
        self.last_refresh_step = 0
        self.last_metrics: dict[str, float] = {}

    @property
    def model(self) -> torch.nn.Module:
        """The reward model itself (inside its engine); under ZeRO-3 and FSDP2 its parameters are shards."""
        return self.trainable.model

    # -- recording ------------------------------------------------------------------------------------------

    def record(self, prompts: Sequence, completions: Sequence, golds: Sequence) -> None:
        """Keep this process's rollouts (call after each generation); they are labelled at the next refresh."""
        if not (len(prompts) == len(completions) == len(golds)):
            raise ValueError(
                f"lengths differ: {len(prompts)} prompts, {len(completions)} completions, {len(golds)} golds"
            )
        for p, c, g in zip(prompts, completions, golds):
            self.pending.append({"prompt": p, "completion": completion_text(c), "gold": str(g)})

    def record_from_inputs(self, inputs: Sequence[dict], prompts: Sequence, completions: Sequence) -> None:
        """`record` with the golds read from the trainer's input rows (column `args.rm_gold_column`)."""
        column = self.args.rm_gold_column
        missing = [i for i, row in enumerate(inputs) if column not in row]
        if missing:
            raise KeyError(f"rm_gold_column {column!r} missing from input row {missing[0]} (keys: {sorted(inputs[0])})")
        self.record(prompts, completions, [row[column] for row in inputs])

    def should_refresh(self, global_step: int) -> bool:
        n = self.args.reward_model_refresh_steps
        return n > 0 and global_step > 0 and global_step % n == 0 and global_step != self.last_refresh_step

    # -- labelling ------------------------------------------------------------------------------------------

    def label(self, rollouts: Sequence[dict], policy_model=None) -> tuple[list[dict], LabellingCost]:
        """Labelled RM rows from rollouts `{"prompt", "completion", "gold"}`."""
        if not rollouts:
            return [], LabellingCost()
        if self.kind == "orm":
            labels, cost = orm_labels(
                [r["prompt"] for r in rollouts], [r["completion"] for r in rollouts], [r["gold"] for r in rollouts],
                self.scorer,
            )
            rows = [
                {"text": orm_text(r["prompt"], r["completion"], self.tokenizer), "label": y}
                for r, y in zip(rollouts, labels) if y is not None  # unscorable: no label
            ]
            return rows, cost
        examples, rm_prompts = [], []
        for r in rollouts:
            steps = self.step_splitter(r["completion"])
            if steps:  # an empty completion has no step to label
                # the policy continues its own text; the RM sees the prompt through its own chat template
                examples.append((prompt_text(r["prompt"], self.policy_tokenizer), steps, r["gold"], r["completion"]))
                rm_prompts.append(prompt_text(r["prompt"], self.tokenizer))
        if policy_model is None and any(len(ex[1]) > 1 for ex in examples):
            raise ValueError("PRM labelling needs the policy model to sample continuations (refresh(policy_model=...))")
        # every process samples continuations of its own prefixes, as many as it has: the policy whole on each
        whole = gathered_for_generation(policy_model, self.accelerator) if policy_model is not None else None
        with whole if whole is not None else contextlib.nullcontext() as policy:
            labels, cost = math_shepherd_labels_batch(
                examples, self.continuation_sampler_factory(policy) if policy is not None else None,
                k=self.args.rm_label_num_continuations, mode=self.args.rm_label_mode, scorer=self.scorer,
                separator=self.step_separator,
            )  # fmt: skip
        rows = [{"prompt": p, "steps": list(ex[1]), "labels": y}
                for p, ex, y in zip(rm_prompts, examples, labels) if y is not None]  # unscorable: no labels
        return rows, cost

    # -- refresh --------------------------------------------------------------------------------------------

    def _gather(self, rows: list[dict]) -> list[dict]:
        """Every process's rows, concatenated in rank order (identical on all processes)."""
        if self.accelerator is None or self.accelerator.num_processes == 1:
            return rows
        from accelerate.utils import gather_object

        return [row for part in gather_object([rows]) for row in part]

    @property
    def is_main_process(self) -> bool:
        return self.accelerator is None or self.accelerator.is_main_process

    @property
    def show_progress(self) -> bool:
        """Progress bars during a refresh: on the main process, unless the trainer's `disable_tqdm` is set."""
        return self.is_main_process and not getattr(self.args, "disable_tqdm", False)

    def refresh(self, policy_model=None, global_step: int | None = None) -> dict[str, float]:
        """One iteration's RM update. Every process must call it at the same step. Steps:
        label this process's rollouts; gather all processes' rows; draw the mix (new + replay, same seed on every
        process); evaluate, train, evaluate on the new rows (every process the same rows, so all end with the same
        weights); append the new rows to the buffer. Returns metrics (prefix `rm/`)."""
        start = time.perf_counter()
        local_rows, cost = self.label(self.pending, policy_model)
        new_rows = self._gather(local_rows)
        if self.accelerator is not None and self.accelerator.num_processes > 1:
            total = LabellingCost()
            for part in self._gather([cost]):
                total += part
            cost = total
        rng = random.Random(self.seed + self.iteration)
        mix, n_replay = training_mix(new_rows, self.buffer, self.args.replay_ratio, rng)
        scorer = self.trainable.module
        before = evaluate_reward_model(scorer, self.collate, new_rows, self.args.reward_model_batch_size)
        train_start = time.perf_counter()
        losses = train_reward_model(
            self.trainable, self.collate, mix,
            num_epochs=self.args.reward_model_train_epochs, max_steps=self.args.reward_model_train_steps,
            batch_size=self.args.reward_model_batch_size, seed=self.seed + self.iteration,
            show_progress=self.show_progress,
        )  # fmt: skip
        train_seconds = time.perf_counter() - train_start
        after = evaluate_reward_model(scorer, self.collate, new_rows, self.args.reward_model_batch_size)
        self.buffer.extend(new_rows)
        self.pending = []
        self.iteration += 1
        if global_step is not None:
            self.last_refresh_step = global_step
        self.last_metrics = {
            "rm/iteration": float(self.iteration),
            "rm/num_new_rows": float(len(new_rows)),
            "rm/num_replay_rows": float(n_replay),
            "rm/replay_fraction": n_replay / len(mix) if mix else 0.0,
            "rm/buffer_size": float(len(self.buffer)),
            "rm/train_steps": float(len(losses)),
            "rm/loss_before": before["loss"],
            "rm/accuracy_before": before["accuracy"],
            "rm/loss_after": after["loss"],
            "rm/accuracy_after": after["accuracy"],
            "rm/train_seconds": train_seconds,
            "rm/refresh_seconds": time.perf_counter() - start,
            **cost.as_metrics(),
        }
        return self.last_metrics

    def save_pretrained(self, directory: str) -> None:
        """Write the reward model and its tokenizer as a loadable model (`from_pretrained(directory)`) from its full
        weights, replacing what `directory` held (every process calls it; the main process writes). A PRM records
        its step separator in `config.step_separator`, as `launch/train_reward_model.py` does."""
        if self.kind == "prm":
            self.model.config.step_separator = self.step_separator
        save_pretrained_full(self.trainable.module, directory, self.accelerator, self.tokenizer)

    # -- checkpointing --------------------------------------------------------------------------------------

    def _rank(self) -> tuple[int, int]:
        if self.accelerator is None:
            return 0, 1
        return self.accelerator.process_index, self.accelerator.num_processes

    def save(self, directory: str, extra_state: dict | None = None, extra_files: Sequence[str] = ()) -> None:
        """Write `directory/` (normally `checkpoint-<step>/iterative_rl`), every process taking part: the RM's
        weights and optimizer (`reward_model/`, by its engine: `grpo_ext.checkpoint.save_trainable`), the replay
        buffer (main process), each process's pending rollouts (`pending_rank<r>.jsonl`), each file under a
        temporary name, then renamed. Then the main process writes `state.json` (counters, `extra_state`, and the
        list of files, `extra_files` included, that the folder must hold): a folder without it, or without a file
        it lists, is incomplete and `load` refuses it."""
        rank, world = self._rank()
        os.makedirs(directory, exist_ok=True)
        self.trainable.save(os.path.join(directory, REWARD_MODEL_STATE_DIR))
        if self.is_main_process:
            self.buffer.save(directory)
        write_jsonl(os.path.join(directory, f"pending_rank{rank}.jsonl"), self.pending)
        files = [ReplayBuffer.FILE_NAME, REWARD_MODEL_STATE_DIR, *extra_files]
        files += [f"pending_rank{r}.jsonl" for r in range(world)]
        meta = {"iteration": self.iteration, "last_refresh_step": self.last_refresh_step, "seed": self.seed,
                "kind": self.kind, **(extra_state or {})}
        finish_folder(directory, self.accelerator, meta, files)

    def load(self, directory: str) -> dict:
        """Restore what `save` wrote and return the contents of `state.json`. Raises `IncompleteCheckpointError`
        when `state.json` or a file it lists is missing. Each process takes back its own pending rollouts; if the
        number of processes changed, rank 0 takes all of them (none is lost, the next mix may differ)."""
        meta = read_checkpoint_state(directory)
        if meta["kind"] != self.kind:
            raise ValueError(f"{directory} holds a {meta['kind']} refresher state, this refresher is {self.kind}")
        self.iteration, self.last_refresh_step, self.seed = meta["iteration"], meta["last_refresh_step"], meta["seed"]
        self.buffer = ReplayBuffer.load(directory)
        self.trainable.load(os.path.join(directory, REWARD_MODEL_STATE_DIR), meta["num_processes"])
        rank, world = self._rank()
        if world == meta["num_processes"]:
            ranks = [rank]
        else:
            ranks = list(range(meta["num_processes"])) if rank == 0 else []
        self.pending = [row for k in ranks for _, row in read_jsonl(os.path.join(directory, f"pending_rank{k}.jsonl"))]
        return meta


def read_checkpoint_state(directory: str) -> dict:
    """`directory/state.json` (an `iterative_rl/` folder written by `RewardModelRefresher.save`), after checking
    that it exists and that every file it lists is there; otherwise `IncompleteCheckpointError` naming the
    checkpoint and what is missing."""
    meta = read_folder(
        directory, "iterative RL", "iterative-RL state: the replay buffer, reward model, pending rollouts and "
        "reference model of the run", "The run stopped while writing this checkpoint, or it was written without "
        "iterative RL (reward_model_refresh_steps: 0). Resume from an earlier checkpoint, or start a new run from "
        "this checkpoint's model.",
    )  # fmt: skip
    if "engine" not in meta:
        raise IncompleteCheckpointError(
            f"cannot resume iterative RL from {os.path.dirname(os.path.normpath(directory))}: {directory} was written "
            "by an earlier grpo_ext, whose reward-model state this one does not read. Start a new run from this "
            "checkpoint's model."
        )
    return meta


def describe_refresh(metrics: dict[str, float], kind: str, global_step: int, saved_to: str | None = None) -> str:
    """One line saying what a refresh did, from its `rm/` metrics."""
    line = (
        f"iterative RL: refresh {int(metrics['rm/iteration'])} at step {global_step}: labelled "
        f"{int(metrics['rm/num_new_rows'])} new rows ({int(metrics['rm/label_num_continuations'])} continuations, "
        f"{metrics['rm/label_seconds']:.1f}s); trained the {kind.upper()} {int(metrics['rm/train_steps'])} steps on "
        f"{int(metrics['rm/num_new_rows'] + metrics['rm/num_replay_rows'])} rows "
        f"({int(metrics['rm/num_replay_rows'])} replayed, buffer now {int(metrics['rm/buffer_size'])}): loss "
        f"{metrics['rm/loss_before']:.4f} -> {metrics['rm/loss_after']:.4f}, accuracy "
        f"{metrics['rm/accuracy_before']:.3f} -> {metrics['rm/accuracy_after']:.3f}"
    )
    if metrics.get("rm/label_num_unscorable"):
        line += f"; {int(metrics['rm/label_num_unscorable'])} unscorable rollouts left unlabelled"
    if "rm/reference_reset" in metrics:
        line += "; reference reset to the policy" if metrics["rm/reference_reset"] else "; no reference to reset"
    if saved_to is not None:
        line += f"; saved to {saved_to}"
    return line + f" ({metrics['rm/refresh_seconds']:.1f}s)"


# --------------------------------------------------------------------------------------------------------------
# Trainer callback
# --------------------------------------------------------------------------------------------------------------


class IterativeRLCallback(TrainerCallback):
    """Fires `refresher.refresh` every `reward_model_refresh_steps` optimizer steps (on `on_step_end`, before the
    trainer's checkpoint at that step is written), resets the reference model, saves the RM as a loadable model
    under `output_dir/reward_model`, and saves/restores the refresher and the reference inside TRL's checkpoints
    (`checkpoint-<step>/iterative_rl/`).

    The refresh's metrics join the step's own log row (the step is made to log, like `MathEvalCallback`), so the
    step's loss, grad_norm and learning_rate are kept: register the callback first (`attach_iterative_rl` does,
    with `callback_handler.callbacks.insert(0, ...)`) so that the reporting callbacks see the `rm/` keys.

    Args:
        refresher: the `RewardModelRefresher`.
        ref_model: the trainer's reference model (None with PEFT, whose reference is an adapter, or beta = 0).
        trainer: the trainer, whose engine-wrapped policy (`model_wrapped`) PRM labelling generates with; without
            it, the `model` the callback events carry.
    """

    def __init__(self, refresher: RewardModelRefresher, ref_model=None, trainer=None):
        self.refresher = refresher
        self.ref_model = ref_model
        self.trainer = trainer
        self.reference_step: int | None = None  # global step of the last reference reset (None: initial model)
        self.saved_iteration: int | None = None  # iteration last written to output_dir/reward_model
        self.pending_logs: dict[str, float] | None = None
        self.tracks_resume = False  # set by `track_resume`
        self.resumed_from: str | None = None

    @property
    def accelerator(self):
        return self.refresher.accelerator

    def _reference_weights(self, policy):
        """What holds the reference's weights and which of them: (module, keep) for `grpo_ext.checkpoint`; the
        "ref" adapter's entries of a PEFT policy. None where there is no reference to save (beta = 0)."""
        if self.ref_model is not None:
            return self.ref_model, None
        if policy is not None and REFERENCE_ADAPTER in getattr(unwrapped(policy), "peft_config", {}):
            return policy, lambda name: f".{REFERENCE_ADAPTER}." in name
        return None

    # -- resume ----------------------------------------------------------------------------------------------

    def track_resume(self, trainer) -> None:
        """Record the checkpoint `trainer` resumes from, however it was named (`train(resume_from_checkpoint=path)`,
        `True` for the last one, a path outside `output_dir`): transformers hands it to
        `_load_optimizer_and_scheduler` before `on_train_begin`. Without this, the callback can only read
        `args.resume_from_checkpoint` or guess `output_dir/checkpoint-<global_step>`."""
        load = trainer._load_optimizer_and_scheduler

        def load_and_record(checkpoint):
            self.resumed_from = checkpoint
            return load(checkpoint)

        trainer._load_optimizer_and_scheduler = load_and_record
        self.tracks_resume = True

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.tracks_resume:
            checkpoint = self.resumed_from
        else:
            checkpoint = args.resume_from_checkpoint if isinstance(args.resume_from_checkpoint, str) else None
            if checkpoint is None and state.global_step > 0:  # resumed with trainer.train(resume_from_checkpoint=...)
                checkpoint = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if checkpoint is None or self.refresher.args.reward_model_refresh_steps <= 0:
            return
        meta = self.refresher.load(os.path.join(checkpoint, STATE_DIR_NAME))
        self._restore_reference(meta, checkpoint, model)

    def _restore_reference(self, meta: dict, checkpoint: str, policy) -> None:
        """Make the reference what it was when the checkpoint was written (bit-identical), from full weights on any
        number of processes."""
        source = meta.get("reference", "initial")
        if source in ("initial", "none") or self._reference_weights(policy) is None:
            return  # the trainer rebuilt the initial reference already; or this run has none (beta = 0)
        if source == "policy":  # reset at the checkpoint's own step: the reference is the policy just loaded
            reset_reference(self.ref_model, policy)
        else:
            target, keep = self._reference_weights(policy)
            load_full_weights(target, os.path.join(checkpoint, STATE_DIR_NAME, source), self.accelerator,
                              strict=keep is None)
        self.reference_step = meta["reference_step"]

    # -- refresh ---------------------------------------------------------------------------------------------

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        if not self.refresher.should_refresh(state.global_step):
            return
        cfg = self.refresher.args
        offload = cfg.rm_offload_policy_optimizer and optimizer is not None
        if offload:
            device = next(unwrapped(model).parameters()).device
            move_optimizer_state(optimizer, "cpu")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        policy = self.trainer.model_wrapped if self.trainer is not None else model
        try:
            metrics = self.refresher.refresh(policy_model=policy, global_step=state.global_step)
        finally:
            if offload:
                move_optimizer_state(optimizer, device)
        if cfg.reset_ref_on_refresh:
            reset = reset_reference(self.ref_model, policy)
            metrics["rm/reference_reset"] = float(reset)
            if reset:
                self.reference_step = state.global_step
        saved_to = self._save_reward_model(args)
        if self.refresher.is_main_process:
            tqdm.write(describe_refresh(metrics, self.refresher.kind, state.global_step, saved_to))
        self.pending_logs = metrics
        control.should_log = True  # the refresh step logs its loss with the refresh's metrics, in one row

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.pending_logs is None or logs is None:
            return
        logs.update(self.pending_logs)
        # the trainer appended a copy of `logs` (plus "step") to log_history before calling on_log
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(self.pending_logs)
        self.pending_logs = None

    def _save_reward_model(self, args) -> str:
        directory = os.path.join(args.output_dir, REWARD_MODEL_DIR_NAME)
        self.refresher.save_pretrained(directory)
        self.saved_iteration = self.refresher.iteration
        return directory

    def on_train_end(self, args, state, control, **kwargs):
        if self.saved_iteration != self.refresher.iteration:  # survives save_strategy "no" and a resumed run
            self._save_reward_model(args)

    # -- checkpoints -----------------------------------------------------------------------------------------

    def on_save(self, args, state, control, model=None, **kwargs):
        directory = os.path.join(args.output_dir, f"checkpoint-{state.global_step}", STATE_DIR_NAME)
        weights = self._reference_weights(model)
        if weights is None:
            reference = "none"
        elif self.reference_step is None:
            reference = "initial"  # the trainer rebuilds it from the model path on resume
        elif self.reference_step == state.global_step:
            reference = "policy"  # the checkpoint's own policy weights; no copy needed
        else:
            reference = REFERENCE_FILE
            os.makedirs(directory, exist_ok=True)
            target, keep = weights
            save_full_weights(target, os.path.join(directory, REFERENCE_FILE), self.accelerator, keep=keep)
        self.refresher.save(
            directory, extra_state={"reference": reference, "reference_step": self.reference_step},
            extra_files=[REFERENCE_FILE] if reference == REFERENCE_FILE else [],
        )


def attach_iterative_rl(trainer, scorer: Scorer | None = None, step_splitter=None) -> RewardModelRefresher | None:
    """Build the refresher for a TRL-style GRPO trainer and register its callback; None when
    `reward_model_refresh_steps` is 0. The RM is the trainer's `ProcessRewardModel` under process supervision,
    else its one model reward function (`reward_funcs[i]` with `reward_processing_classes[i]`). The trainer must
    still call `refresher.record_from_inputs(inputs, prompts, completions)` after computing training rewards."""
    args = trainer.args
    if not getattr(args, "reward_model_refresh_steps", 0):
        return None
    engine = engine_name(trainer.accelerator)
    if getattr(args, "rm_offload_policy_optimizer", False) and engine not in ("single", "ddp"):
        raise ConfigurationError(
            f"rm_offload_policy_optimizer moves a torch optimizer's state to CPU; under {engine} the engine owns the "
            "policy's optimizer state: offload it with the engine's own config (DeepSpeed offload_optimizer, FSDP "
            "fsdp_offload_params) instead"
        )
    prm = getattr(trainer, "process_reward_model", None)
    if getattr(args, "supervision", "outcome") == "process":
        if not isinstance(prm, ProcessRewardModel):
            raise ConfigurationError(
                "iterative RL trains the PRM, so process_reward_model must be a token-classification model (wrapped "
                f"in ProcessRewardModel), not {type(prm).__name__}"
            )
        kind, reward_model, tokenizer = "prm", prm, prm.tokenizer
        step_splitter = step_splitter or getattr(trainer, "step_splitter", None)
    else:
        scorers = (torch.nn.Module, OutcomeRewardModel)
        models = [i for i, f in enumerate(trainer.reward_funcs) if isinstance(f, scorers)]
        if len(models) != 1:
            raise ConfigurationError(
                f"iterative RL refreshes one outcome reward model; reward_funcs holds {len(models)} models"
            )
        kind, reward_model = "orm", trainer.reward_funcs[models[0]]
        tokenizer = getattr(reward_model, "tokenizer", None) or trainer.reward_processing_classes[models[0]]
    if args.reset_ref_on_refresh and getattr(trainer, "beta", args.beta) != 0.0:
        add_reference_adapter(trainer.model)  # a PEFT policy's reference becomes an adapter a reset can move
    # TRL generates every steps_per_generation * num_iterations micro-batches (its `_step`); a refresh lands on
    # refresh_steps * gradient_accumulation_steps micro-batches
    generate_every = (getattr(args, "steps_per_generation", None) or 1) * (getattr(args, "num_iterations", 1) or 1)
    refresh_every = args.reward_model_refresh_steps * getattr(args, "gradient_accumulation_steps", 1)
    if refresh_every % generate_every:
        logger.warning(
            "reward_model_refresh_steps=%d optimizer steps (%d micro-batches) is not a multiple of TRL's generation "
            "period (steps_per_generation * num_iterations = %d micro-batches): the batches already generated keep "
            "their old rewards and reference log-probs; the refreshed RM and reset reference take effect from the "
            "next generation", args.reward_model_refresh_steps, refresh_every, generate_every,
        )
    refresher = RewardModelRefresher(
        reward_model, tokenizer, kind, args, scorer=scorer, step_splitter=step_splitter,
        accelerator=trainer.accelerator, seed=args.seed, policy_tokenizer=trainer.processing_class,
    )
    callback = IterativeRLCallback(refresher, ref_model=getattr(trainer, "ref_model", None), trainer=trainer)
    callback.track_resume(trainer)
    trainer.callback_handler.callbacks.insert(0, callback)  # first: the reporting callbacks see the rm/ metrics
    return refresher
