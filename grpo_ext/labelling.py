"""Automatic reward-model labels from policy samples (no humans).

* ORM labels: the rule-based correctness of each completion, `label = scorer([completion], [gold]) >= 0.5`
  (by default the project's `rewards.accuracy_reward`, math-verify based).
* PRM labels, Math-Shepherd style (Wang et al., 2023): for a solution with steps s_1..s_n and gold answer a,
  from every step prefix (the solution's text up to the end of s_i, i < n; see `solution_prefixes`) sample k
  continuations with the current policy and score each completed solution against a. With c_i of the k reaching a,

      hard:  label_i = 1[c_i >= 1]          (the step can still lead to the answer)
      soft:  label_i = c_i / k              (estimated probability of reaching the answer)

  The last step needs no sampling: its prefix is the whole solution, so label_n is the solution's own
  correctness (1 or 0 in both modes).

Scorers have the signature `scorer(completions: list[str], golds: list[str]) -> list[float | None]`; None (or
NaN) means unscorable, as `rewards.accuracy_reward` says of a gold answer it cannot read. An unscorable rollout
carries no information about its correctness, so it gets no label (None) and stays out of RM training, rather than
teaching the RM that it is wrong; a continuation scored None counts as not reaching the answer (its solution's own
score decides whether the rollout is labelled at all). Continuation samplers are
`generate(prefixes: list[str], k) -> list[list[str]]`.
Both are injectable, so the labeller is tested with a scripted policy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from tqdm.auto import tqdm

from .reward_models import DEFAULT_STEP_SEPARATOR

Scorer = Callable[[list[str], list[str]], list]
ContinuationSampler = Callable[[list[str], int], list[list[str]]]


def accuracy_scorer(completions: list[str], golds: list[str]) -> list:
    """The project's rule-based scorer: `rewards.accuracy_reward` with the gold answers (1.0 / 0.0 / None)."""
    from rewards import accuracy_reward

    return accuracy_reward(completions, answer=golds)


def strict_accuracy_scorer(completions: list[str], golds: list[str]) -> list:
    """`accuracy_scorer` without the last-number fallback: the answer must be in `\\boxed{}`, after `####` or
    after "the answer is" (a stray number at the end of a solution never counts)."""
    from rewards import AccuracyReward

    return AccuracyReward(last_number_fallback=False)(completions, answer=golds)


# Labelling scorers selectable by name (`rm_label_scorer`); a name is looked up, never evaluated.
LABEL_SCORERS: dict[str, Scorer] = {"accuracy": accuracy_scorer, "strict_accuracy": strict_accuracy_scorer}


def get_label_scorer(name: str) -> Scorer:
    """The scorer registered as `name` in `LABEL_SCORERS`; an unknown name is an error listing the known ones."""
    if name not in LABEL_SCORERS:
        raise ValueError(f"rm_label_scorer: unknown scorer {name!r}; expected one of {', '.join(LABEL_SCORERS)}")
    return LABEL_SCORERS[name]


def _is_correct(score) -> bool:
    return not _unscorable(score) and float(score) >= 0.5


def _unscorable(score) -> bool:
    return score is None or score != score  # None or NaN


@dataclass
class LabellingCost:
    """What automatic labelling cost: continuations sampled, tokens generated (when the sampler counts them),
    scorer calls, wall-clock seconds, and the rollouts left unlabelled because they were unscorable."""

    num_continuations: int = 0
    num_generated_tokens: int = 0
    num_scored: int = 0
    seconds: float = 0.0
    num_unscorable: int = 0

    def __iadd__(self, other: "LabellingCost"):
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)
        return self

    def as_metrics(self, prefix: str = "rm/label_") -> dict[str, float]:
        return {prefix + k: float(v) for k, v in asdict(self).items()}


def orm_labels(
    prompts: Sequence, completions: Sequence[str], golds: Sequence[str], scorer: Scorer = accuracy_scorer
) -> tuple[list[int | None], LabellingCost]:
    """0/1 outcome labels: 1 when the completion's answer matches the gold answer, None when the scorer cannot
    score it (no label). `prompts` are unused by the rule-based scorer but kept so the signature matches the rows
    it labels."""
    if not (len(prompts) == len(completions) == len(golds)):
        raise ValueError(f"lengths differ: {len(prompts)} prompts, {len(completions)} completions, {len(golds)} golds")
    start = time.perf_counter()
    scores = scorer(list(completions), list(golds))
    labels = [None if _unscorable(s) else int(_is_correct(s)) for s in scores]
    return labels, LabellingCost(num_scored=len(labels), seconds=time.perf_counter() - start,
                                 num_unscorable=labels.count(None))


def step_prefix(prompt: str, steps: Sequence[str], i: int, separator: str = DEFAULT_STEP_SEPARATOR) -> str:
    """`prompt + s_1 + sep + ... + s_i + sep`, the text the policy continues from after step i (1-based)."""
    return prompt + "".join(s + separator for s in steps[:i])


def solution_prefixes(steps: Sequence[str], completion: str | None = None,
                      separator: str = DEFAULT_STEP_SEPARATOR) -> tuple[list[str], str]:
    """The solution text after each step, and the whole solution text.

    With the original `completion` (steps being its substrings, in order, as a step splitter returns them), the text
    after step i is `completion[:end of step i]`, so the policy continues its own text; without it, steps are
    re-joined as `s_1 + sep + ... + s_i + sep`."""
    if completion is None:
        return ["".join(s + separator for s in steps[: i + 1]) for i in range(len(steps))], separator.join(steps)
    ends, cursor = [], 0
    for j, step in enumerate(steps):
        at = completion.find(step, cursor)
        if at < 0:
            raise ValueError(f"step {j} ({step[:40]!r}) is not a substring of the completion after offset {cursor}")
        cursor = at + len(step)
        ends.append(cursor)
    return [completion[:end] for end in ends], completion


def math_shepherd_labels_batch(
    examples: Sequence[tuple],
    generate_continuations: ContinuationSampler,
    k: int = 8,
    mode: str = "hard",
    scorer: Scorer = accuracy_scorer,
    separator: str = DEFAULT_STEP_SEPARATOR,
) -> tuple[list[list[float] | None], LabellingCost]:
    """Math-Shepherd step labels for many `(prompt, steps, gold)` or `(prompt, steps, gold, completion)` at once
    (one sampler call for all prefixes). See the module docstring for the formula and `solution_prefixes` for the
    prefix text: the policy continues `prompt + prefix_i`, and the scorer sees `prefix_i + continuation`. An
    example whose whole solution is unscorable gets None instead of labels."""
    if mode not in ("hard", "soft"):
        raise ValueError(f"rm_label_mode must be 'hard' or 'soft', got {mode!r}")
    if k < 1:
        raise ValueError(f"the number of continuations k must be >= 1, got {k}")
    start = time.perf_counter()
    tokens_before = getattr(generate_continuations, "num_generated_tokens", 0)
    solved = [solution_prefixes(ex[1], ex[3] if len(ex) > 3 else None, separator) for ex in examples]
    prefixes, owners = [], []  # owners[j] = (example index, step index) of prefixes[j]
    for e, (ex, (done, _)) in enumerate(zip(examples, solved)):
        for i in range(len(ex[1]) - 1):  # the last step needs no continuation
            prefixes.append(ex[0] + done[i])
            owners.append((e, i))
    continuations = generate_continuations(prefixes, k) if prefixes else []
    if len(continuations) != len(prefixes) or any(len(c) != k for c in continuations):
        raise ValueError(f"the continuation sampler must return {k} continuations for each of {len(prefixes)} prefixes")

    texts, golds = [], []
    for (e, i), conts in zip(owners, continuations):
        texts.extend(solved[e][0][i] + c for c in conts)
        golds.extend([examples[e][2]] * k)
    for ex, (_, full) in zip(examples, solved):  # the last step: the whole solution's own correctness
        texts.append(full)
        golds.append(ex[2])
    scores = scorer(texts, golds) if texts else []
    correct = [_is_correct(s) for s in scores]

    labels = [[0.0] * len(ex[1]) for ex in examples]
    for j, (e, i) in enumerate(owners):
        hits = sum(correct[j * k : (j + 1) * k])
        labels[e][i] = float(hits >= 1) if mode == "hard" else hits / k
    last = len(owners) * k  # the whole solutions' scores follow the continuations'
    for e, ex in enumerate(examples):
        labels[e][len(ex[1]) - 1] = float(correct[last + e])
    labels = [None if _unscorable(score) else example for example, score in zip(labels, scores[last:])]

    cost = LabellingCost(
        num_continuations=len(prefixes) * k,
        num_generated_tokens=getattr(generate_continuations, "num_generated_tokens", 0) - tokens_before,
        num_scored=len(texts),
        seconds=time.perf_counter() - start,
        num_unscorable=labels.count(None),
    )
    return labels, cost


def math_shepherd_labels(
    prompt: str,
    steps: Sequence[str],
    gold: str,
    generate_continuations: ContinuationSampler,
    k: int = 8,
    mode: str = "hard",
    scorer: Scorer = accuracy_scorer,
    separator: str = DEFAULT_STEP_SEPARATOR,
) -> tuple[list[float] | None, LabellingCost]:
    """Math-Shepherd step labels for one solution (None when it is unscorable); see `math_shepherd_labels_batch`."""
    labels, cost = math_shepherd_labels_batch(
        [(prompt, steps, gold)], generate_continuations, k, mode, scorer, separator
    )
    return labels[0], cost


class TransformersContinuationSampler:
    """Sample k continuations per prefix with a (policy) causal LM via `model.generate`; counts generated tokens
    in `num_generated_tokens`. Prefixes are left-padded and batched `batch_size` at a time; `show_progress` draws a
    tqdm bar over the prefixes."""

    def __init__(self, model, tokenizer, max_new_tokens: int = 512, temperature: float = 1.0, top_p: float = 1.0,
                 batch_size: int = 8, show_progress: bool = False):
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.num_generated_tokens = 0

    def __call__(self, prefixes: list[str], k: int) -> list[list[str]]:
        with tqdm(total=len(prefixes), desc=f"labelling: {k} continuations per step", disable=not self.show_progress,
                  leave=False, dynamic_ncols=True) as bar:
            return self._generate(prefixes, k, bar)

    def _generate(self, prefixes: list[str], k: int, bar) -> list[list[str]]:
        import torch

        out: list[list[str]] = []
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        for b in range(0, len(prefixes), self.batch_size):
            chunk = prefixes[b : b + self.batch_size]
            enc = self.tokenizer(
                chunk, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False
            )
            enc = {key: v.to(device) for key, v in enc.items()}
            with torch.no_grad():
                seqs = self.model.generate(
                    **enc, do_sample=True, temperature=self.temperature, top_p=self.top_p,
                    max_new_tokens=self.max_new_tokens, num_return_sequences=k, pad_token_id=pad, eos_token_id=eos,
                    synced_gpus=False,  # each process samples its own prefixes with the whole policy (no collective)
                )
            new = seqs[:, enc["input_ids"].shape[1] :]
            # generated tokens up to and including the first eos
            not_pad = new != pad if pad != eos else torch.ones_like(new, dtype=torch.bool)
            is_eos = new == eos
            before_eos = (is_eos.cumsum(1) - is_eos.long()) == 0
            self.num_generated_tokens += int((before_eos & (not_pad | is_eos)).sum())
            texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            out.extend(texts[i * k : (i + 1) * k] for i in range(len(chunk)))
            bar.update(len(chunk))
        self.model.train(was_training)
        return out
