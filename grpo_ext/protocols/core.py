"""What every protocol is made of: `Score` (how a completion is read and judged) and `Protocol` (prompt, exemplars,
stop strings, budget, scores), and the fixed exemplar files beside this module. The tools' own rules live in one
module each (`lm_eval_harness`, `qwen25_math`); `grpo_ext.protocols` keeps the registry."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent


@lru_cache(maxsize=None)
def load_exemplars(name: str) -> tuple[dict, ...]:
    """The fixed exemplars of a protocol, from `grpo_ext/protocols/<name>.json` (each file names its source)."""
    with open(DATA_DIR / f"{name}.json", encoding="utf-8") as handle:
        return tuple(json.load(handle)["exemplars"])


@dataclass(frozen=True)
class Score:
    """One way of scoring a completion: `extract(text)` gives the answer (None: no answer); `gold(row)` the
    reference; `match(pred, gold)` decides. `exact` = matching is equality of the extracted strings (so majority
    votes group by equality); otherwise votes group by `rewards.answers_match`. `whole_text` = the verdict is
    math-verify's own reading of the whole completion against `gold(row)`, `verify(parse(gold), parse(text))`
    (`rewards.match_texts`, bounded in time); `extract` is then unused and there is no answer to vote on, so no
    maj@k."""

    name: str
    extract: Callable[[str], str | None]
    gold: Callable[[dict], str | None]
    exact: bool = True
    whole_text: bool = False


@dataclass(frozen=True)
class Protocol:
    """A published evaluation set-up. `render(row, shots)` gives the prompt text from a dataset row (`question`,
    and `shots`, the exemplar rows for this problem); `stop` are the tool's stop strings (the backends add the
    model's EOS and the chat template's end of turn); `scores[0]` is the primary score."""

    name: str
    source: str
    datasets: tuple[str, ...]
    render: Callable[[dict, Sequence[dict]], str] | None
    stop: tuple[str, ...]
    max_new_tokens: int
    scores: tuple[Score, ...]
    num_few_shot: int = 0
    fixed_exemplars: str | None = None  # data file name ("{kind}": gsm8k or math)
    samples_train_shots: bool = False  # shots drawn from the train split as lm-eval's default sampler does
    notes: str = ""

    @property
    def uses_chat_template(self) -> bool:
        return self.render is None
