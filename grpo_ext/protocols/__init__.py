"""Evaluation protocols: the prompt, exemplars, stop strings, decoding defaults, answer extraction and verdict of the
tools that published GSM8K / MATH figures, so that `launch/evaluate.py --protocol NAME` can be held against them.

Each protocol was read from the tool's own code, one module per tool (`lm_eval_harness`, `qwen25_math`,
`deepseek_math`; the dataclasses are in `core`, the tools' sympy work in `symbolic`, run in the bounded worker
processes of `workers`); this package keeps the registry. `tests/test_protocols.py` compares each protocol with the
installed `lm_eval` package and with fixtures that Qwen2.5-Math's and DeepSeek-Math's code produced
(`tests/fixtures/`). Fixed exemplars are data files beside these modules, each naming its source.

| name | tool | prompt | scores |
| --- | --- | --- | --- |
| `chat` | this project | the tokenizer's chat template, `grpo_ext.data.make_prompt` | `accuracy` (`rewards`) |
| `lm_eval_gsm8k` | lm-evaluation-harness `gsm8k` | "Question: ...\\nAnswer:", 5 shots from train, seed 1234 | `strict-match`, `flexible-extract` |
| `gsm8k_cot_8shot` | lm-evaluation-harness `gsm8k_cot` | "Q: ...\\nA:", the 8 fixed chain-of-thought exemplars | `strict-match`, `flexible-extract` |
| `minerva_math_4shot` | lm-evaluation-harness `minerva_math_*` | "Problem:\\n...\\n\\nSolution:", the 4 Minerva exemplars | `exact_match` (`is_equiv`), `math_verify`, `answers_match` |
| `qwen25_math_cot` | Qwen2.5-Math `evaluation/` prompt type `qwen25-math-cot` | fixed ChatML string, boxed instruction as system | `accuracy` (`math_equal`), `answers_match` |
| `qwen_boxed` | Qwen2.5-Math `evaluation/` prompt type `qwen-boxed` | fixed ChatML string, "You are a helpful assistant." | `accuracy`, `answers_match` |
| `qwen25_math_fewshot_cot` | Qwen2.5-Math `evaluation/` prompt type `cot` (base models) | "Question: ...\nAnswer:", `--num_few_shot` of Qwen's exemplars | `accuracy`, `answers_match` |
| `deepseek_math` | DeepSeek-Math `evaluation/` (the paper's figures) | 0 shots "User: ...\\n\\nAssistant:", or its fixed 8 (GSM8K) / 4 (MATH) | `accuracy` (`is_correct`) |

The first score of a protocol is its primary one (`overall` in `summary.json`), the tool's own verdict; all are
under `scores`.
"""

from __future__ import annotations

from collections.abc import Sequence

from .core import DATA_DIR, Protocol, Score, load_exemplars
from .deepseek_math import DEEPSEEK, DEEPSEEK_MATH, DEEPSEEK_MAX_TOKENS
from .lm_eval_harness import (
    LM_EVAL,
    LM_EVAL_FEWSHOT_SEED,
    LM_EVAL_FLEXIBLE,
    LM_EVAL_IGNORE,
    LM_EVAL_MAX_GEN_TOKS,
    LM_EVAL_PROTOCOLS,
    MINERVA_MATH_VERIFY,
    MINERVA_REMOVED_EXPRESSIONS,
    MINERVA_SUBSTITUTIONS,
    lm_eval_exact_match_key,
    lm_eval_fewshot_indices,
    minerva_gold,
    minerva_last_boxed_only_string,
    minerva_normalize_final_answer,
    minerva_remove_boxed,
    minerva_unnormalized_answer,
    regex_filter,
    render_lm_eval,
)
from .qwen25_math import (
    QWEN,
    QWEN_MAX_TOKENS,
    QWEN_PROTOCOLS,
    QWEN_STOP,
    QWEN_TEMPLATES,
    qwen_extract_answer,
    render_qwen_fewshot_cot,
)

CHAT = Protocol(
    name="chat",
    source="this project: the tokenizer's chat template and grpo_ext.data.make_prompt; rewards' scoring",
    datasets=("gsm8k", "math", "math500", "custom"),
    render=None,
    stop=(),
    max_new_tokens=1024,
    scores=(),  # rewards.grade_completions (accuracy_reward's verdicts), in grpo_ext.evaluation.score_problems
    add_special_tokens=False,  # the chat template renders its own BOS; training tokenizes prompts this way too
)

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (CHAT, *LM_EVAL_PROTOCOLS, *QWEN_PROTOCOLS, DEEPSEEK_MATH)}


def get_protocol(name: str) -> Protocol:
    """The protocol called `name`; a ValueError naming the known ones otherwise."""
    if name not in PROTOCOLS:
        raise ValueError(f"--protocol must be one of {list(PROTOCOLS)}, got {name!r}")
    return PROTOCOLS[name]


def render_prompts(
    protocol: Protocol, rows: Sequence[dict], pool: Sequence[dict], num_few_shot: int, dataset: str = "gsm8k"
) -> list[str]:
    """The protocol's prompt for each row. `pool` is the few-shot source (the train split) for protocols that
    sample their shots; rows are identified by `idx`, their position in the test split (lm-eval's doc order).
    `dataset` (`gsm8k`, `math`, `math500`) picks the exemplar file of protocols that have one per dataset."""
    if protocol.render is None:
        raise ValueError(f"protocol {protocol.name!r} renders with the tokenizer's chat template")
    if protocol.fixed_exemplars is not None:
        kind = "gsm8k" if dataset == "gsm8k" else "math"
        exemplars = load_exemplars(protocol.fixed_exemplars.format(kind=kind))
        if num_few_shot > len(exemplars):
            raise ValueError(
                f"--num_few_shot {num_few_shot}: protocol {protocol.name} has {len(exemplars)} fixed exemplars"
            )
        shots = list(exemplars[:num_few_shot])  # lm-eval's first_n sampler
        return [protocol.render(row, shots) for row in rows]
    if num_few_shot == 0 or protocol.shots_in_render:
        return [protocol.render(row, []) for row in rows]
    if not protocol.samples_train_shots:
        raise ValueError(f"protocol {protocol.name} is zero-shot: --num_few_shot must be 0, got {num_few_shot}")
    if not pool:
        raise ValueError(
            f"protocol {protocol.name} samples {num_few_shot} shots from the train split: pass "
            "--few_shot_data_files (e.g. gsm8k/train.jsonl) or allow the hub"
        )
    draws = lm_eval_fewshot_indices(max(row["idx"] for row in rows) + 1, len(pool), num_few_shot)
    return [protocol.render(row, [pool[i] for i in draws[row["idx"]]]) for row in rows]


__all__ = [
    "DATA_DIR", "DEEPSEEK", "DEEPSEEK_MATH", "DEEPSEEK_MAX_TOKENS", "LM_EVAL", "LM_EVAL_FEWSHOT_SEED",
    "LM_EVAL_FLEXIBLE", "LM_EVAL_IGNORE", "LM_EVAL_MAX_GEN_TOKS",
    "MINERVA_MATH_VERIFY", "MINERVA_REMOVED_EXPRESSIONS", "MINERVA_SUBSTITUTIONS", "PROTOCOLS", "Protocol", "QWEN",
    "QWEN_MAX_TOKENS", "QWEN_STOP", "QWEN_TEMPLATES", "Score", "get_protocol", "lm_eval_exact_match_key",
    "lm_eval_fewshot_indices", "load_exemplars", "minerva_gold", "minerva_last_boxed_only_string",
    "minerva_normalize_final_answer", "minerva_remove_boxed", "minerva_unnormalized_answer", "qwen_extract_answer",
    "regex_filter", "render_lm_eval", "render_prompts", "render_qwen_fewshot_cot",
]  # fmt: skip
