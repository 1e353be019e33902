"""`accuracy_reward`: 1.0 when a completion's final answer equals the gold answer, bounded and batched."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from .equivalence import match_many, match_texts
from .extraction import completion_text, ends_in_a_loop, extract_answer, extract_gold, has_math
from .normalize import parse_number

__all__ = [
    "AccuracyRewardConfig",
    "AccuracyReward",
    "Grade",
    "accuracy_reward",
    "extract_prediction",
    "grade_completions",
]


@dataclass
class AccuracyRewardConfig:
    timeout: float = field(
        default=5.0,
        metadata={"help": "Per-item deadline in seconds for the sympy check; an item over it scores 0.0."},
    )
    last_number_fallback: bool | None = field(
        default=None,
        metadata={
            "help": "Use the last number of a completion when it has no \\boxed{}, '####' or 'the answer is'. "
            "None (default): only when the gold answer is a plain number (GSM8K-style), the last math span "
            "otherwise, and math-verify's own extraction when neither finds an answer. False: only marked answers."
        },
    )
    correct_reward: float = field(default=1.0, metadata={"help": "Reward of a correct answer."})
    wrong_reward: float = field(default=0.0, metadata={"help": "Reward of a wrong, missing or rejected answer."})

    def __post_init__(self):
        if not self.timeout > 0:
            raise ValueError(f"AccuracyRewardConfig.timeout must be positive, got {self.timeout}")


def extract_prediction(text: str, gold: str | None, last_number_fallback: bool | None = None) -> str | None:
    """The answer of `text` to score against the extracted `gold`. Without a conclusion (box, `####`, `# Answer`,
    "the answer is"), the fallback follows the gold as graders do: the last number or math span when
    `last_number_fallback` says so, where None (default) means for a plain-number gold (GSM8K-style); otherwise
    only the last LaTeX math span, so that a stray number never matches a symbolic MATH answer; and none when
    the text ends inside a search loop (a search cut off states no answer)."""
    if last_number_fallback is None:
        last_number_fallback = gold is not None and parse_number(gold) is not None
    return extract_answer(text, last_number_fallback, last_math_fallback=not last_number_fallback)




def _gold_texts(n: int, solution, answer) -> list:
    if answer is None and solution is None:
        raise ValueError(
            "accuracy_reward needs the gold answer: a dataset column named 'answer' (bare value or GSM8K "
            "rationale ending in '#### x') or 'solution' (MATH solution with \\boxed{})"
        )
    for name, column in (("answer", answer), ("solution", solution)):
        if column is not None and len(column) != n:
            raise ValueError(f"accuracy_reward got {n} completions but {len(column)} values in column '{name}'")
    return [
        answer[i] if answer is not None and answer[i] is not None else (solution[i] if solution is not None else None)
        for i in range(n)
    ]


def _extract_golds(texts: list) -> list[str | None]:
    """`extract_gold` of each text, once per distinct string (a group's completions share one gold)."""
    golds: dict[str, str | None] = {}
    return [
        (golds[text] if text in golds else golds.setdefault(text, extract_gold(text)))
        if isinstance(text, str)
        else extract_gold(text)
        for text in texts
    ]


@dataclass(frozen=True)
class Grade:
    """`grade_completions`' verdict on one (completion, gold column) pair."""

    gold: str | None  # the gold our extraction reads, None when it reads none
    prediction: str | None  # the completion's answer as our extraction reads it (what maj@k votes on), or None
    correct: bool | None  # the verdict; None when no gold can be read (TRL ignores the reward)


def grade_completions(
    texts: list[str],
    gold_texts: list[str | None],
    timeout: float = 5.0,
    last_number_fallback: bool | None = None,
) -> list[Grade]:
    r"""The verdict of `accuracy_reward` on each (completion text, gold column) pair, with what it read.

    1. The gold is `extract_gold(gold_text)`, the prediction `extract_prediction(text, gold, last_number_fallback)`.
    2. When both are found, `correct` is `match_many`'s verdict (exact fast path, then bounded math-verify).
    3. Otherwise math-verify's own extraction reads the whole texts in the bounded workers (`match_texts`): a gold
       our extraction cannot read, or a completion with a box or LaTeX math in which it found no answer (with
       `last_number_fallback=False`, only marked answers count; a completion that ends inside a search loop,
       `extraction.ends_in_a_loop`, states no answer). `correct` is None when no gold is found at all, or when
       `gold_text` is None.

    The one place of these rules: `accuracy_reward` maps `correct` to rewards, and `grpo_ext.evaluation`'s default
    scoring takes `correct` as its per-sample verdict and votes maj@k on `prediction`.

    >>> [g.correct for g in grade_completions([r"\boxed{3}", "$odd$"], [r"$\boxed{2}$ and $\boxed{3}$", r"\text{odd}"])]
    [False, True]
    """
    if len(texts) != len(gold_texts):
        raise ValueError(f"grade_completions got {len(texts)} completions but {len(gold_texts)} gold answers")
    golds = _extract_golds(gold_texts)
    preds = [extract_prediction(text, gold, last_number_fallback) for text, gold in zip(texts, golds)]
    correct: list[bool | None] = [None if t is None else False for t in gold_texts]
    to_check = [i for i, (p, g) in enumerate(zip(preds, golds)) if p is not None and g is not None]
    for i, ok in zip(to_check, match_many([(preds[i], golds[i]) for i in to_check], timeout=timeout)):
        correct[i] = bool(ok)
    # What our extraction cannot read (no answer found in the completion, or a gold column that is neither a
    # bare answer nor marked) is left to math-verify's own extraction, in the same bounded workers.
    for i, ok in zip(*_read_by_math_verify(texts, gold_texts, golds, preds, timeout, last_number_fallback)):
        correct[i] = ok
    return [Grade(gold, pred, ok) for gold, pred, ok in zip(golds, preds, correct)]


def _read_by_math_verify(
    texts, gold_texts, golds, preds, timeout: float, last_number_fallback: bool | None
) -> tuple[list[int], list[bool | None]]:
    """(indices, verdicts) of math-verify's reading of the whole texts for the items whose prediction or gold
    our extraction could not find; None where math-verify finds no gold in the column either."""
    unread_golds = sorted({t for t, g in zip(gold_texts, golds) if t is not None and g is None})
    gold_found = dict(zip(unread_golds, match_texts([(t, t) for t in unread_golds], timeout=timeout)))
    indices, pairs = [], []
    for i, (text, gold_text, gold, pred) in enumerate(zip(texts, gold_texts, golds, preds)):
        if gold_text is None or (gold is not None and pred is not None):
            continue
        if gold is None and not gold_found.get(gold_text, False):
            indices.append(i)  # no gold anywhere: the reward is None
            pairs.append(None)
        elif has_math(text) and (gold is None or last_number_fallback is None) and not ends_in_a_loop(text):
            # Only a completion with a box or LaTeX math is read again: bare words and numbers that our
            # extraction found nothing in hold no answer (a stray number never matches a symbolic gold),
            # last_number_fallback=False asks for marked answers only, and a completion cut off inside a search
            # loop states none (math-verify would take its last value).
            indices.append(i)
            pairs.append((text, gold_text if gold is None else "\\boxed{" + gold + "}"))
    checked = iter(match_texts([pair for pair in pairs if pair is not None], timeout=timeout))
    return indices, [None if pair is None else next(checked) for pair in pairs]


class AccuracyReward:
    """TRL reward function `fn(completions, solution=None, answer=None, **kwargs) -> list[float | None]`.

    A callable class rather than a closure so it pickles (TRL may send reward functions to other processes).
    """

    __name__ = "accuracy_reward"

    def __init__(self, config: AccuracyRewardConfig | None = None, **overrides):
        self.config = config or AccuracyRewardConfig(**overrides)
        if config is not None and overrides:
            self.config = AccuracyRewardConfig(**{**asdict(config), **overrides})

    def __call__(
        self,
        completions: list,
        solution: list[str] | None = None,
        answer: list[str] | None = None,
        log_extra: Callable[[str, list], None] | None = None,
        **kwargs,
    ) -> list[float | None]:
        cfg = self.config
        gold_texts = [None if t is None else str(t) for t in _gold_texts(len(completions), solution, answer)]
        texts = [completion_text(completion) for completion in completions]
        grades = grade_completions(texts, gold_texts, cfg.timeout, cfg.last_number_fallback)
        if log_extra is not None:
            log_extra("gold_answer", [g.gold if g.gold is not None else "[unparseable]" for g in grades])
            log_extra("pred_answer", [g.prediction if g.prediction is not None else "[none]" for g in grades])
        return [None if g.correct is None else cfg.correct_reward if g.correct else cfg.wrong_reward for g in grades]


_default = AccuracyReward()


def accuracy_reward(
    completions: list, solution: list[str] | None = None, answer: list[str] | None = None, **kwargs
) -> list[float | None]:
    r"""1.0 when a completion's final answer is mathematically equal to the gold answer, else 0.0.

    Gold comes from `answer` when given (a bare value such as `18` or `\frac{14}{3}`, or GSM8K's whole
    rationale ending in `#### 18`), else from `solution` (GSM8K rationale, or a MATH solution whose last
    `\boxed{}` holds the answer). The reward is None when no gold answer can be found (TRL ignores it).
    Completions are strings or conversations. Each item is bounded by a 5 s deadline in any calling
    context; use `AccuracyReward(timeout=..., ...)` for other settings.

    >>> accuracy_reward([r"so \boxed{\dfrac12}", "It is 18 dollars."], answer=["0.5", "18"])
    [1.0, 1.0]
    """
    return _default(completions, solution=solution, answer=answer, **kwargs)
