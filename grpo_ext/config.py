"""`GRPOConfig`: TRL's config plus the DeepSeekMath options (KL estimator, supervision, Online RFT).

Every new option defaults to TRL's behaviour, so `GRPOConfig(...)` with no new option is TRL's config.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig as _TRLGRPOConfig

from .iterative import IterativeRLConfig
from .kl import KL_ESTIMATORS
from .steps import STEP_SPLITTERS

KL_PLACEMENTS = ("loss", "reward")
SUPERVISIONS = ("outcome", "process")
ADVANTAGE_ESTIMATORS = ("grpo", "online_rft")
PROCESS_OUTCOME_MODES = ("last_step", "none")
# The options GRPOConfig adds to TRL's (the iterative-RL ones come from IterativeRLConfig).
DEEPSEEKMATH_OPTIONS = (
    "kl_estimator",
    "kl_in",
    "supervision",
    "step_delimiter",
    "step_splitter",
    "process_outcome_reward",
    "advantage_estimator",
    "rft_correct_threshold",
    "compile_generation",
)


@dataclass
class GRPOConfig(IterativeRLConfig, _TRLGRPOConfig):
    r"""
    [`trl.GRPOConfig`] with the options of DeepSeekMath (arXiv 2402.03300). See `docs/grpo_ext.md`; the
    iterative-RL options (`reward_model_refresh_steps`, `replay_ratio`, ...) come from
    [`grpo_ext.iterative.IterativeRLConfig`] and are described in `docs/iterative_rl.md`.

    Parameters:
        kl_estimator (`str`, defaults to `"k3"`):
            Per-token estimator of KL(pi_theta || pi_ref): `"k1"`, `"k2"`, `"k3"` (DeepSeekMath, TRL) or `"k3+"`
            (value of k3, gradient of k2). See [`grpo_ext.kl.per_token_kl`].
        kl_in (`str`, defaults to `"loss"`):
            `"loss"`: `beta * KL` is added to the per-token loss (DeepSeekMath, TRL). `"reward"`: `beta` times the
            per-sequence sum of the detached estimate is subtracted from each completion's reward before group
            normalisation (PPO-style); the loss then carries no KL term.
        supervision (`str`, defaults to `"outcome"`):
            `"outcome"`: TRL's group-normalised sequence advantage. `"process"`: step rewards from a process reward
            model, normalised over the group's steps; token advantage = sum of the normalised rewards of the steps
            ending at or after it (DeepSeekMath section 4.1.3).
        step_delimiter (`str`, defaults to `"\n\n"`):
            Separator between reasoning steps under process supervision (the trainer's `step_splitter=` overrides).
        step_splitter (`str`, defaults to `"delimiter"`):
            How a completion is cut into steps under process supervision and for PRM labelling in iterative RL,
            by name (see [`grpo_ext.steps.named_step_splitter`]): `"delimiter"` (at `step_delimiter`) or
            `"sentences"`. The trainer's `step_splitter=` callable overrides it.
        process_outcome_reward (`str`, defaults to `"last_step"`):
            Under process supervision, what to do with the outcome reward functions' weighted sum: `"last_step"` adds
            it to the reward of each completion's last step; `"none"` ignores them (they are still logged).
        advantage_estimator (`str`, defaults to `"grpo"`):
            `"grpo"` or `"online_rft"` (DeepSeekMath section 5.2.1: gradient coefficient 1 for completions whose
            reward marks them correct, 0 otherwise).
        rft_correct_threshold (`float`, defaults to `1.0`):
            Under Online RFT, a completion is correct when its weighted outcome reward is `>=` this value.
        compile_generation (`bool`, defaults to `False`):
            Let transformers `torch.compile` the decoding step of `model.generate` (TRL 1.16 always turns this off,
            and `generation_kwargs` cannot turn it back on). Needs `cache_implementation="static"` and
            transformers generation (not vLLM); transformers compiles on CUDA-like devices only. Measure it with
            `benchmarks/generation.py` (docs/benchmarks.md) before relying on it.
    """

    kl_estimator: str = field(
        default="k3",
        metadata={"help": "KL estimator: 'k1', 'k2', 'k3' (DeepSeekMath/TRL default) or 'k3+' (k3 value, k2 gradient).",
                  "choices": list(KL_ESTIMATORS)},
    )
    kl_in: str = field(
        default="loss",
        metadata={"help": "Where the KL penalty goes: 'loss' (DeepSeekMath/TRL) or 'reward' (PPO-style, subtracted "
                  "from each completion's reward before group normalisation).", "choices": list(KL_PLACEMENTS)},
    )
    supervision: str = field(
        default="outcome",
        metadata={"help": "'outcome' (one advantage per completion) or 'process' (per-step rewards from a process "
                  "reward model).", "choices": list(SUPERVISIONS)},
    )
    step_delimiter: str = field(
        default="\n\n",
        metadata={"help": "Delimiter between reasoning steps under process supervision."},
    )
    step_splitter: str = field(
        default="delimiter",
        metadata={"help": "Step splitter by name, for process supervision and PRM labelling: 'delimiter' (at "
                  "step_delimiter) or 'sentences'.", "choices": list(STEP_SPLITTERS)},
    )
    process_outcome_reward: str = field(
        default="last_step",
        metadata={"help": "Under process supervision: 'last_step' adds the outcome rewards' weighted sum to the last "
                  "step's reward; 'none' ignores it.", "choices": list(PROCESS_OUTCOME_MODES)},
    )
    advantage_estimator: str = field(
        default="grpo",
        metadata={"help": "'grpo' (group-normalised) or 'online_rft' (coefficient 1 for correct completions, else 0).",
                  "choices": list(ADVANTAGE_ESTIMATORS)},
    )
    rft_correct_threshold: float = field(
        default=1.0,
        metadata={"help": "Online RFT: a completion is correct when its weighted outcome reward is >= this value."},
    )

    compile_generation: bool = field(
        default=False,
        metadata={"help": "torch.compile the decoding step of transformers generation (needs "
                  "cache_implementation='static'; not with use_vllm)."},
    )

    def __post_init__(self):
        super().__post_init__()
        _check_choice("kl_estimator", self.kl_estimator, KL_ESTIMATORS)
        _check_choice("kl_in", self.kl_in, KL_PLACEMENTS)
        _check_choice("supervision", self.supervision, SUPERVISIONS)
        _check_choice("step_splitter", self.step_splitter, STEP_SPLITTERS)
        _check_choice("process_outcome_reward", self.process_outcome_reward, PROCESS_OUTCOME_MODES)
        _check_choice("advantage_estimator", self.advantage_estimator, ADVANTAGE_ESTIMATORS)
        if self.kl_in == "reward" and self.beta == 0.0:
            raise ValueError(
                "GRPOConfig: kl_in='reward' needs a KL coefficient, but beta=0.0 (no reference model is loaded). "
                "Set beta > 0 (DeepSeekMath uses 0.04) or use kl_in='loss'."
            )
        if self.compile_generation and (self.cache_implementation != "static" or self.use_vllm):
            raise ValueError(
                "GRPOConfig: compile_generation=True compiles transformers generation with a static cache: set "
                f"cache_implementation='static' (got {self.cache_implementation!r}) and use_vllm=False "
                f"(got {self.use_vllm})."
            )
        if self.supervision == "process" and not self.step_delimiter:
            raise ValueError("GRPOConfig: step_delimiter must be a non-empty string under supervision='process'.")


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"GRPOConfig: unknown {name}={value!r}; expected one of {', '.join(map(repr, choices))}.")
