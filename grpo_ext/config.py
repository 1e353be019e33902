"""`GRPOConfig`: TRL's config plus the DeepSeekMath options (KL estimator, supervision, Online RFT).

Every new option defaults to TRL's behaviour, so `GRPOConfig(...)` with no new option is TRL's config.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig as _TRLGRPOConfig

from .iterative import IterativeRLConfig
from .errors import ConfigurationError
from .kl import KL_ESTIMATORS
from .steps import STEP_SPLITTERS

KL_PLACEMENTS = ("loss", "reward")
SUPERVISIONS = ("outcome", "process")
ADVANTAGE_ESTIMATORS = ("grpo", "online_rft", "gae")
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
    "value_model_name_or_path",
    "value_head_on_policy",
    "vf_coef",
    "cliprange_value",
    "gamma",
    "lam",
    "whiten_advantages",
    "value_learning_rate",
    "value_warmup_steps",
)


@dataclass
class GRPOConfig(IterativeRLConfig, _TRLGRPOConfig):
    r"""
    [`trl.GRPOConfig`] with the options of DeepSeekMath (arXiv 2402.03300). See `docs/grpo_ext.md`; the
    iterative-RL options (`reward_model_refresh_steps`, `replay_ratio`, ...) come from
    [`grpo_ext.iterative.IterativeRLConfig`] and are described in `docs/iterative_rl.md`.

    Parameters:
        kl_estimator (`str`, defaults to `"k3"`, `"k1"` under `advantage_estimator="gae"`):
            Per-token estimator of KL(pi_theta || pi_ref): `"k1"`, `"k2"`, `"k3"` (DeepSeekMath, TRL) or `"k3+"`
            (value of k3, gradient of k2). See [`grpo_ext.kl.per_token_kl`]. PPO's default is k1, the
            log-ratio DeepSeekMath's equation 2 writes.
        kl_in (`str`, defaults to `"loss"`, `"reward"` under `advantage_estimator="gae"`):
            `"loss"`: `beta * KL` is added to the per-token loss (DeepSeekMath, TRL). `"reward"`: `beta` times the
            per-sequence sum of the detached estimate is subtracted from each completion's reward before group
            normalisation (PPO-style); the loss then carries no KL term. Under `"gae"`, `"reward"` puts
            `-beta * KL_t` into every token's reward (DeepSeekMath eq. 2), and `"loss"` keeps TRL's KL term in the
            loss with the score alone as the reward.
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
            `"grpo"`, `"online_rft"` (DeepSeekMath section 5.2.1: gradient coefficient 1 for completions whose
            reward marks them correct, 0 otherwise) or `"gae"` (PPO: a learned value model and GAE over each
            completion's tokens; no group statistics, so `num_generations=1` is allowed). See docs/grpo_ext.md.
        rft_correct_threshold (`float`, defaults to `1.0`):
            Under Online RFT, a completion is correct when its weighted outcome reward is `>=` this value.
        compile_generation (`bool`, defaults to `False`):
            Let transformers `torch.compile` the decoding step of `model.generate` (TRL 1.16 always turns this off,
            and `generation_kwargs` cannot turn it back on). Needs `cache_implementation="static"` and
            transformers generation (not vLLM); transformers compiles on CUDA-like devices only. Measure it with
            `benchmarks/generation.py` (docs/benchmarks.md) before relying on it.
        value_model_name_or_path (`str` or `None`, defaults to `None`):
            PPO's value model (critic): a token-classification model with one label loaded from this path, or, with
            `None`, the policy's architecture and weights with a scalar head. It must share the policy's tokenizer.
        value_head_on_policy (`bool`, defaults to `False`):
            A value head sharing the policy's trunk. Not implemented yet: `True` is an error.
        vf_coef (`float`, defaults to `0.1`):
            Weight of the value loss in the step's loss (TRL's former PPOTrainer's default).
        cliprange_value (`float`, defaults to `0.2`):
            The value loss is 0.5 * max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2), c this value.
        gamma (`float`, defaults to `1.0`):
            GAE's discount over the tokens of a completion.
        lam (`float`, defaults to `0.95`):
            GAE's lambda.
        whiten_advantages (`bool`, defaults to `True`):
            Whiten the GAE advantages over the valid tokens of the whole batch (all processes), as TRL's former
            PPOTrainer always did. The value targets (returns) are not whitened.
        value_learning_rate (`float`, defaults to `1e-5`):
            AdamW learning rate of the value model (constant). verl's default (OpenRLHF's is 9e-6): the critic is a
            pretrained trunk with a new scalar head, fitted to returns from scratch, while the policy only drifts
            from its start (DeepSeekMath: 1e-6), so a rate tied to the policy's would leave V far behind the returns.
        value_warmup_steps (`int`, defaults to `0`):
            Optimizer steps at the start of training during which only the critic learns: rollouts are generated
            and scored as usual, and the policy gets no gradient and no update (verl's `critic_warmup`, OpenRLHF's
            `freezing_actor_steps`), so that its first updates use advantages from a fitted V.
    """

    kl_estimator: str | None = field(
        default=None,
        metadata={"help": "KL estimator: 'k1', 'k2', 'k3' (DeepSeekMath/TRL default) or 'k3+' (k3 value, k2 gradient). "
                  "Default: 'k3', or 'k1' under advantage_estimator='gae' (DeepSeekMath eq. 2).",
                  "choices": list(KL_ESTIMATORS)},
    )
    kl_in: str | None = field(
        default=None,
        metadata={"help": "Where the KL penalty goes: 'loss' (DeepSeekMath/TRL) or 'reward' (PPO-style, subtracted "
                  "from each completion's reward before group normalisation; per token under 'gae'). Default: "
                  "'loss', or 'reward' under advantage_estimator='gae'.", "choices": list(KL_PLACEMENTS)},
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
        metadata={"help": "'grpo' (group-normalised), 'online_rft' (coefficient 1 for correct completions, else 0) or "
                  "'gae' (PPO with a value model).", "choices": list(ADVANTAGE_ESTIMATORS)},
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

    value_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "PPO ('gae'): value model to load (token classification, 1 label); None: a copy of the "
                  "policy's weights with a scalar head."},
    )
    value_head_on_policy: bool = field(
        default=False,
        metadata={"help": "PPO ('gae'): a value head on the policy's trunk instead of a separate value model (not "
                  "implemented yet)."},
    )
    vf_coef: float = field(default=0.1, metadata={"help": "PPO ('gae'): weight of the value loss."})
    cliprange_value: float = field(
        default=0.2, metadata={"help": "PPO ('gae'): values are clipped to V_old +/- this in the value loss."}
    )
    gamma: float = field(default=1.0, metadata={"help": "PPO ('gae'): GAE discount over a completion's tokens."})
    lam: float = field(default=0.95, metadata={"help": "PPO ('gae'): GAE lambda."})
    whiten_advantages: bool = field(
        default=True, metadata={"help": "PPO ('gae'): whiten the advantages over the batch's valid tokens."}
    )
    value_learning_rate: float = field(
        default=1e-5,
        metadata={"help": "PPO ('gae'): the value model's AdamW learning rate (verl's default; OpenRLHF uses 9e-6)."},
    )
    value_warmup_steps: int = field(
        default=0,
        metadata={"help": "PPO ('gae'): optimizer steps at the start during which only the critic is trained."},
    )

    def __post_init__(self):
        self.kl_estimator, self.kl_in = resolve_kl_defaults(self.advantage_estimator, self.kl_estimator, self.kl_in)
        if self.advantage_estimator == "gae" and self.num_generations == 1:
            _trl_post_init_with_one_generation(self)
        else:
            super().__post_init__()
        _check_choice("kl_estimator", self.kl_estimator, KL_ESTIMATORS)
        _check_choice("kl_in", self.kl_in, KL_PLACEMENTS)
        _check_choice("supervision", self.supervision, SUPERVISIONS)
        _check_choice("step_splitter", self.step_splitter, STEP_SPLITTERS)
        _check_choice("process_outcome_reward", self.process_outcome_reward, PROCESS_OUTCOME_MODES)
        _check_choice("advantage_estimator", self.advantage_estimator, ADVANTAGE_ESTIMATORS)
        if self.kl_in == "reward" and self.beta == 0.0 and self.advantage_estimator != "gae":
            raise ConfigurationError(
                "GRPOConfig: kl_in='reward' needs a KL coefficient, but beta=0.0 (no reference model is loaded). "
                "Set beta > 0 (DeepSeekMath uses 0.04) or use kl_in='loss'."
            )
        if self.compile_generation and (self.cache_implementation != "static" or self.use_vllm):
            raise ConfigurationError(
                "GRPOConfig: compile_generation=True compiles transformers generation with a static cache: set "
                f"cache_implementation='static' (got {self.cache_implementation!r}) and use_vllm=False "
                f"(got {self.use_vllm})."
            )
        if self.supervision == "process" and not self.step_delimiter:
            raise ConfigurationError(
                "GRPOConfig: step_delimiter must be a non-empty string under supervision='process'."
            )
        if self.advantage_estimator == "gae":
            _check_ppo_options(self)


def resolve_kl_defaults(advantage_estimator: str, kl_estimator: str | None, kl_in: str | None) -> tuple[str, str]:
    """`kl_estimator` and `kl_in` left at None take their estimator's default: k1 in the reward for PPO (DeepSeekMath
    eq. 2: r_t = r_phi * 1[last] - beta * log(pi/pi_ref)), k3 in the loss otherwise (DeepSeekMath's GRPO, TRL)."""
    ppo = advantage_estimator == "gae"
    return kl_estimator or ("k1" if ppo else "k3"), kl_in or ("reward" if ppo else "loss")


def _trl_post_init_with_one_generation(config) -> None:
    """TRL's `__post_init__` with `num_generations=1`, which it refuses because its group statistics need two
    completions; PPO's GAE uses none. Its only other uses of `num_generations` are divisibility checks, which 1
    always passes, so TRL runs with 2 for its checks when the batch allows it, and 1 is restored after."""
    config.num_generations_eval = config.num_generations_eval or 1
    config.num_generations = 2
    try:
        super(GRPOConfig, config).__post_init__()
    except ValueError as error:
        if "divisible by num_generations" not in str(error):
            raise
        # an odd generation batch: TRL computed generation_batch_size before this check and its remaining checks
        # concern vLLM importance sampling only
        if config.use_vllm:
            raise ConfigurationError(
                "GRPOConfig: advantage_estimator='gae' with num_generations=1 and use_vllm needs an even generation "
                f"batch size (got {config.generation_batch_size})."
            ) from None
    finally:
        config.num_generations = 1


def _check_ppo_options(config) -> None:
    """Combinations PPO's value model and GAE cannot run with, named."""
    if config.value_head_on_policy:
        raise ConfigurationError(
            "GRPOConfig: value_head_on_policy=True (a value head sharing the policy's trunk) is not implemented yet; "
            "use value_head_on_policy=False (a separate value model, value_model_name_or_path)."
        )
    if config.supervision == "process":
        raise ConfigurationError(
            "GRPOConfig: advantage_estimator='gae' takes the outcome reward at each completion's last token; "
            "supervision='process' is not supported with it (use advantage_estimator='grpo')."
        )
    if config.vf_coef <= 0:
        raise ConfigurationError(
            f"GRPOConfig: vf_coef must be > 0 under advantage_estimator='gae', got {config.vf_coef}"
        )
    if config.cliprange_value <= 0:
        raise ConfigurationError(f"GRPOConfig: cliprange_value must be > 0, got {config.cliprange_value}")
    for name in ("gamma", "lam"):
        if not 0.0 <= getattr(config, name) <= 1.0:
            raise ConfigurationError(f"GRPOConfig: {name} must be in [0, 1], got {getattr(config, name)}")
    if not config.value_learning_rate > 0:
        raise ConfigurationError(f"GRPOConfig: value_learning_rate must be > 0, got {config.value_learning_rate}")
    if config.value_warmup_steps < 0:
        raise ConfigurationError(f"GRPOConfig: value_warmup_steps must be >= 0, got {config.value_warmup_steps}")


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ConfigurationError(
            f"GRPOConfig: unknown {name}={value!r}; expected one of {', '.join(map(repr, choices))}."
        )
