"""Rule-based math reward functions for TRL's GRPOTrainer.

Public API (TRL convention `fn(completions, **kwargs) -> list[float | None]`):

* `accuracy_reward` / `AccuracyReward(...)`: exact, bounded, batched answer checking.
* `grade_completions`: its verdict on (completion, gold) pairs with what it read (what evaluation scores with).
* `extract_answer`, `extract_gold`, `extract_prediction`, `answers_match`: the pieces it is built from.
* `ArithmeticStepChecker`, `check_equations`: exact checking of written arithmetic ("23 + 45 = 68"), a rule-based
  process reward for `grpo_ext.GRPOTrainer(process_reward_model=...)`.
* `format_reward` / `FormatReward`, `soft_overlong_punishment`, `length_penalty_reward`,
  `reasoning_steps_reward`, `combine_rewards`.

See docs/rewards.md.
"""

from .arithmetic import ArithmeticStepChecker, check_equations
from .accuracy import (
    AccuracyReward,
    AccuracyRewardConfig,
    Grade,
    accuracy_reward,
    extract_prediction,
    grade_completions,
)
from .equivalence import answers_match, clear_cache, match_many, match_texts
from .extraction import completion_text, extract_answer, extract_gold, last_boxed
from .pool import VerifierPool, get_default_pool
from .shaping import (
    CombinedReward,
    FormatReward,
    LengthPenaltyReward,
    ReasoningStepsReward,
    SoftOverlongPunishment,
    combine_rewards,
    format_reward,
    length_penalty_reward,
    reasoning_steps_reward,
    soft_overlong_punishment,
)

__all__ = [
    "ArithmeticStepChecker",
    "AccuracyReward",
    "AccuracyRewardConfig",
    "CombinedReward",
    "FormatReward",
    "Grade",
    "LengthPenaltyReward",
    "ReasoningStepsReward",
    "SoftOverlongPunishment",
    "VerifierPool",
    "accuracy_reward",
    "answers_match",
    "check_equations",
    "clear_cache",
    "combine_rewards",
    "completion_text",
    "extract_answer",
    "extract_prediction",
    "extract_gold",
    "format_reward",
    "grade_completions",
    "get_default_pool",
    "last_boxed",
    "length_penalty_reward",
    "match_many",
    "match_texts",
    "reasoning_steps_reward",
    "soft_overlong_punishment",
]
