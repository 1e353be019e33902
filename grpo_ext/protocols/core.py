"""What every protocol is made of: `Score` (how a completion is read and judged) and `Protocol` (prompt, exemplars,
stop strings, budget, scores), and the fixed exemplar files beside this module. The tools' own rules live in one
module each (`lm_eval_harness`, `qwen25_math`); `grpo_ext.protocols` keeps the registry."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent


@lru_cache(maxsize=None)
def load_exemplars(name: str) -> tuple[dict, ...]:
    """The fixed exemplars of a protocol, from `grpo_ext/protocols/<name>.json` (each file names its source)."""
    with open(DATA_DIR / f"{name}.json", encoding="utf-8") as handle:
        return tuple(json.load(handle)["exemplars"])


@dataclass(frozen=True)
class Score:
    """One way of scoring a completion, as a tool scores it. `extract(text, row)` gives the answer (None: no
    answer); `gold(row)` the reference; `judge(pairs, timeout)` decides each (answer, gold) pair, every pair bounded
    by `timeout` seconds from any thread (None: the answer must equal the gold string). Majority votes group
    answers by the same test. `whole_text`: the verdict is math-verify's own reading of the whole completion
    against `gold(row)`, `verify(parse(gold), parse(text))` (`rewards.match_texts`, bounded in time); `extract` is
    then unused and there is no answer to vote on, so no maj@k. `timeout` is the tool's own bound per pair, used
    unless `--answer_timeout` is given. `needs_latex_parser`: the judge reads LaTeX with sympy's `parse_latex`
    (antlr4 4.11), checked before a run starts."""

    name: str
    extract: Callable[[str, dict], Any]
    gold: Callable[[dict], Any]
    judge: Callable[[list[tuple[Any, Any]], float], list[bool]] | None = None
    whole_text: bool = False
    timeout: float | None = None
    needs_latex_parser: bool = False


def answers_match_judge(pairs: list[tuple[str, str]], timeout: float) -> list[bool]:
    """This project's equivalence, `rewards.answers_match` on each pair (exact fast path, bounded math-verify)."""
    from rewards import match_many

    return match_many(pairs, timeout=timeout)


@dataclass(frozen=True)
class Protocol:
    """A published evaluation set-up. `render(row, shots)` gives the prompt text from a dataset row (`question`,
    and `shots`, the exemplar rows for this problem); `stop` are the tool's stop strings (the backends add the
    model's EOS and the chat template's end of turn); `scores[0]` is the primary score. `num_few_shot` None: the
    user must choose (no source fixes a default; `notes` say which counts the tool uses). `variant(dataset,
    num_few_shot)`, when set, gives the protocol as the tool runs it on that dataset with that many shots (its
    scores read the dataset's gold, its prompt and stops may change with the shots); `resolve` applies it.
    `tallies` are (name, test) pairs counted over the samples and reported beside the scores: what the tool would
    have done with a sample that is not reproduced here."""

    name: str
    source: str
    datasets: tuple[str, ...]
    render: Callable[[dict, Sequence[dict]], str] | None
    stop: tuple[str, ...]
    max_new_tokens: int
    scores: tuple[Score, ...]
    num_few_shot: int | None = 0
    fixed_exemplars: str | None = None  # data file name ("{kind}": gsm8k or math)
    samples_train_shots: bool = False  # shots drawn from the train split as lm-eval's default sampler does
    shots_in_render: bool = False  # the tool's exemplars are one fixed block that `render` writes itself
    notes: str = ""
    variant: Callable[[str, int], Protocol] | None = None
    tallies: tuple[tuple[str, Callable[[str], bool]], ...] = ()
    add_special_tokens: bool = True  # the prompt text gets the tokenizer's BOS, as every tool's backend gives it

    @property
    def uses_chat_template(self) -> bool:
        return self.render is None

    def resolve(self, dataset: str, num_few_shot: int) -> Protocol:
        """The protocol as run on `dataset` (`gsm8k`, `math`, `math500`) with `num_few_shot` shots."""
        return self if self.variant is None else self.variant(dataset, num_few_shot)
