r"""Format, length and reasoning-step rewards, and a weighted combination of reward functions.

Every factory returns a TRL reward function `fn(completions, **kwargs) -> list[float | None]` as a callable
class instance (picklable, with a `__name__` TRL uses for logging).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

from .accuracy import AccuracyReward
from .extraction import completion_text, last_boxed

__all__ = [
    "format_reward",
    "FormatReward",
    "soft_overlong_punishment",
    "SoftOverlongPunishment",
    "length_penalty_reward",
    "LengthPenaltyReward",
    "reasoning_steps_reward",
    "ReasoningStepsReward",
    "combine_rewards",
    "CombinedReward",
]


class FormatReward:
    r"""1.0 when the completion ends with its answer in `\boxed{}` (after `<think>...</think>` if required).

    * `require_think=False`: the completion contains a balanced `\boxed{...}` and at most `max_trailing_chars`
      characters follow the last one (the answer is final, not an intermediate result).
    * `require_think=True`: additionally the text is `<think>reasoning</think> answer` with exactly one
      think block, non-empty reasoning, and the boxed answer after `</think>`. With `think_prefilled=True`
      the chat template already opened `<think>` in the prompt, so the completion starts inside it.
    """

    __name__ = "format_reward"

    def __init__(self, require_think: bool = False, think_prefilled: bool = False, max_trailing_chars: int = 200):
        self.require_think = require_think
        self.think_prefilled = think_prefilled
        self.max_trailing_chars = max_trailing_chars

    def _boxed_at_end(self, text: str) -> bool:
        if not (last_boxed(text) or "").strip():  # an empty \boxed{} holds no answer: no format reward to farm
            return False
        tail = text[max(text.rfind("\\boxed"), text.rfind("\\fbox")) :]
        # Characters after the closing brace of the last box.
        depth, end = 0, None
        for i, ch in enumerate(tail):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    end = i
                    break
        return end is not None and len(tail) - end - 1 <= self.max_trailing_chars

    def score(self, text: str) -> float:
        if self.require_think:
            if self.think_prefilled:
                text = "<think>" + text
            stripped = text.lstrip()
            if not stripped.startswith("<think>") or text.count("<think>") != 1 or text.count("</think>") != 1:
                return 0.0
            reasoning, _, answer = stripped[len("<think>") :].partition("</think>")
            if not reasoning.strip():
                return 0.0
            text = answer
        return 1.0 if self._boxed_at_end(text) else 0.0

    def __call__(self, completions: list, **kwargs) -> list[float]:
        return [self.score(completion_text(c)) for c in completions]


format_reward = FormatReward()


class SoftOverlongPunishment:
    r"""DAPO's soft overlong punishment (arXiv 2503.14476, eq. 13), on completion length |y| in tokens:

    $$R(y) = 0 \text{ if } |y| \le L_{max} - L_{cache};\quad
    \frac{(L_{max} - L_{cache}) - |y|}{L_{cache}} \text{ if } L_{max} - L_{cache} < |y| \le L_{max};\quad
    -1 \text{ otherwise.}$$

    Lengths come from TRL's `completion_ids` keyword.
    """

    __name__ = "soft_overlong_punishment"

    def __init__(self, max_completion_len: int, soft_punish_cache: int):
        if not 0 < soft_punish_cache <= max_completion_len:
            raise ValueError(
                f"need 0 < soft_punish_cache <= max_completion_len, got {soft_punish_cache}, {max_completion_len}"
            )
        self.max_completion_len = max_completion_len
        self.soft_punish_cache = soft_punish_cache

    def penalty(self, length: int) -> float:
        expected = self.max_completion_len - self.soft_punish_cache
        if length <= expected:
            return 0.0
        if length <= self.max_completion_len:
            return (expected - length) / self.soft_punish_cache
        return -1.0

    def __call__(self, completions: list, completion_ids: list[list[int]] | None = None, **kwargs) -> list[float]:
        if completion_ids is None:
            raise ValueError("soft_overlong_punishment needs the `completion_ids` keyword (TRL passes it)")
        return [self.penalty(len(ids)) for ids in completion_ids]


def soft_overlong_punishment(max_completion_len: int, soft_punish_cache: int) -> SoftOverlongPunishment:
    """Factory for DAPO's soft overlong punishment (see `SoftOverlongPunishment`)."""
    return SoftOverlongPunishment(max_completion_len, soft_punish_cache)


class LengthPenaltyReward:
    r"""Kimi k1.5's length penalty (arXiv 2501.12599, sec. 2.3.3), computed within each prompt's group:

    $$\lambda_i = 0.5 - \frac{len_i - min\_len}{max\_len - min\_len},\qquad
    r_i = \lambda_i \text{ if answer } i \text{ is correct, else } \min(0, \lambda_i)$$

    where min/max run over the completions of the same prompt (all equal lengths give 0). Lengths are
    `len(completion_ids)` when TRL passes them, else characters. Correctness is `accuracy_reward`'s; items
    with an unparseable gold get None.
    """

    __name__ = "length_penalty_reward"

    def __init__(self, accuracy: Callable | None = None):
        self.accuracy = accuracy or AccuracyReward()

    def __call__(self, completions: list, completion_ids=None, prompts=None, **kwargs) -> list[float | None]:
        correct = self.accuracy(completions, **kwargs)
        lengths = [len(ids) for ids in completion_ids] if completion_ids is not None else [
            len(completion_text(c)) for c in completions
        ]
        groups: dict[str, list[int]] = {}
        for i in range(len(completions)):
            key = repr(prompts[i]) if prompts is not None else ""
            groups.setdefault(key, []).append(i)
        rewards: list[float | None] = [None] * len(completions)
        for members in groups.values():
            lo = min(lengths[i] for i in members)
            hi = max(lengths[i] for i in members)
            for i in members:
                if correct[i] is None:
                    continue
                lam = 0.0 if hi == lo else 0.5 - (lengths[i] - lo) / (hi - lo)
                rewards[i] = lam if correct[i] > 0 else min(0.0, lam)
        return rewards


def length_penalty_reward(accuracy: Callable | None = None) -> LengthPenaltyReward:
    """Factory for the Kimi k1.5 group length penalty (see `LengthPenaltyReward`)."""
    return LengthPenaltyReward(accuracy)


_STEP_RE = re.compile(
    r"(?im)^\s*(?:step\s*\d+\s*[:.)]|\d+\s*[.)]\s|[-*\u2022]\s)|\b(?:first|second|third|next|then|finally)\s*,"
)


class ReasoningStepsReward:
    r"""Rewards visible step-by-step reasoning (as open-r1's `reasoning_steps_reward`):
    $r = \min(1, n / n_{target})$ where n counts step markers ("Step 2:", numbered or bulleted lines,
    "First,", "Next,", "Finally,")."""

    __name__ = "reasoning_steps_reward"

    def __init__(self, target_steps: int = 3):
        if target_steps < 1:
            raise ValueError(f"target_steps must be >= 1, got {target_steps}")
        self.target_steps = target_steps

    def count_steps(self, text: str) -> int:
        return len(_STEP_RE.findall(text))

    def __call__(self, completions: list, **kwargs) -> list[float]:
        return [min(1.0, self.count_steps(completion_text(c)) / self.target_steps) for c in completions]


def reasoning_steps_reward(target_steps: int = 3) -> ReasoningStepsReward:
    """Factory for `ReasoningStepsReward`."""
    return ReasoningStepsReward(target_steps)


class CombinedReward:
    r"""Weighted sum of reward functions: $r = \sum_k w_k r_k$, skipping None terms as TRL does (nansum);
    the result is None only when every term is None."""

    def __init__(self, reward_funcs: Sequence[Callable], weights: Sequence[float] | None = None, name: str | None = None):
        if not reward_funcs:
            raise ValueError("combine_rewards needs at least one reward function")
        weights = [1.0] * len(reward_funcs) if weights is None else list(weights)
        if len(weights) != len(reward_funcs):
            raise ValueError(f"combine_rewards got {len(reward_funcs)} functions but {len(weights)} weights")
        self.reward_funcs = list(reward_funcs)
        self.weights = [float(w) for w in weights]
        self.__name__ = name or "+".join(getattr(f, "__name__", type(f).__name__) for f in self.reward_funcs)

    def __call__(self, completions: list, **kwargs) -> list[float | None]:
        totals: list[float | None] = [None] * len(completions)
        for func, weight in zip(self.reward_funcs, self.weights):
            values = func(completions, **kwargs)
            if len(values) != len(completions):
                raise ValueError(f"reward function {getattr(func, '__name__', func)} returned {len(values)} values "
                                 f"for {len(completions)} completions")
            for i, value in enumerate(values):
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    continue
                totals[i] = (totals[i] or 0.0) + weight * float(value)
        return totals


def combine_rewards(
    reward_funcs: Sequence[Callable], weights: Sequence[float] | None = None, name: str | None = None
) -> CombinedReward:
    """One reward function computing the weighted sum of several (for use outside TRL; inside TRL pass
    `reward_funcs` and `GRPOConfig.reward_weights` instead)."""
    return CombinedReward(reward_funcs, weights, name)
