"""Evaluation protocols: the prompt, exemplars, stop sequences, decoding defaults and answer extraction of the
tools that published GSM8K / MATH figures, so that `launch/evaluate.py --protocol NAME` can be held against them.

Each protocol was read from the tool's own code: `tests/test_protocols.py` compares it with the installed `lm_eval`
package and with fixtures that Qwen2.5-Math's code produced (`tests/fixtures/qwen25_math.json`). Fixed exemplars are
data files beside this module, each naming its source.

| name | tool | prompt | scores |
| --- | --- | --- | --- |
| `chat` | this project | the tokenizer's chat template, `grpo_ext.data.make_prompt` | `accuracy` (`rewards`) |
| `lm_eval_gsm8k` | lm-evaluation-harness `gsm8k` | "Question: ...\\nAnswer:", 5 shots from train, seed 1234 | `strict-match`, `flexible-extract` |
| `gsm8k_cot_8shot` | lm-evaluation-harness `gsm8k_cot` | "Q: ...\\nA:", the 8 fixed chain-of-thought exemplars | `strict-match`, `flexible-extract` |
| `minerva_math_4shot` | lm-evaluation-harness `minerva_math_*` | "Problem:\\n...\\n\\nSolution:", the 4 Minerva exemplars | `exact_match`, `math_verify` |
| `qwen25_math_cot` | Qwen2.5-Math `evaluation/` prompt type `qwen25-math-cot` | fixed ChatML string, boxed instruction as system | `accuracy` |
| `qwen_boxed` | Qwen2.5-Math `evaluation/` prompt type `qwen-boxed` | fixed ChatML string, "You are a helpful assistant." | `accuracy` |
| `qwen25_math_fewshot_cot` | Qwen2.5-Math `evaluation/` prompt type `cot` (base models) | "Question: ...\nAnswer:", Qwen's GSM8K or MATH exemplars | `accuracy` |

The first score of a protocol is its primary one (`overall` in `summary.json`); all are under `scores`.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
LM_EVAL_FEWSHOT_SEED = 1234  # lm_eval.defaults.DEFAULT_OTHER_SEED, the fewshot_random_seed of simple_evaluate
LM_EVAL_MAX_GEN_TOKS = 256  # lm_eval.models.huggingface.HFLM.max_gen_toks
QWEN_MAX_TOKENS = 2048  # Qwen2.5-Math evaluation/math_eval.py --max_tokens_per_call
QWEN_STOP = ("</s>", "<|im_end|>", "<|endoftext|>")  # Qwen2.5-Math evaluation/math_eval.py stop_words


# --------------------------------------------------------------------------------------------------------------------
# lm-evaluation-harness: GSM8K filters and exact match
# --------------------------------------------------------------------------------------------------------------------

LM_EVAL_FLEXIBLE = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
LM_EVAL_IGNORE = (",", r"\$", r"(?s).*#### ", r"\.$")  # gsm8k.yaml metric_list regexes_to_ignore


def regex_filter(text: str, pattern: str, group_select: int = 0) -> str | None:
    """lm-eval's `RegexFilter`: `re.findall(pattern)[group_select]`, the first non-empty group of a tuple match,
    stripped; None where lm-eval returns its fallback "[invalid]"."""
    matches = re.findall(pattern, text)
    if not matches:
        return None
    match = matches[group_select]
    if isinstance(match, tuple):
        match = next((m for m in match if m), None)
        if match is None:
            return None
    return match.strip()


def lm_eval_exact_match_key(text: str) -> str:
    """Both sides of lm-eval's GSM8K `exact_match` after `regexes_to_ignore` and `ignore_case`: two strings
    match when their keys are equal."""
    for pattern in LM_EVAL_IGNORE:
        text = re.sub(pattern, "", text)
    return text.lower()


# --------------------------------------------------------------------------------------------------------------------
# lm-evaluation-harness: Minerva MATH (lm_eval/tasks/minerva_math/utils.py, from Lewkowycz et al. 2022 appendix D)
# --------------------------------------------------------------------------------------------------------------------

MINERVA_SUBSTITUTIONS = [
    ("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), (r"\ ", ""), (" ", ""), ("mbox", "text"),
    (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}"),
]  # fmt: skip
MINERVA_REMOVED_EXPRESSIONS = [
    "square", "ways", "integers", "dollars", "mph", "inches", "ft", "hours", "km", "units", "\\ldots", "sue",
    "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters", "meals", "edges",
    "students", "childrentickets", "multiples", "\\text{s}", "\\text{.}", "\\text{\ns}", "\\text{}^2", "\\text{}^3",
    "\\text{\n}", "\\text{}", r"\mathrm{th}", r"^\circ", r"^{\circ}", r"\;", r",\!", "{,}", '"', "\\dots",
]  # fmt: skip


def minerva_normalize_final_answer(final_answer: str) -> str:
    """lm-eval's `normalize_final_answer` (Minerva appendix D, as lm-eval 0.4.13 has it): last `=` side, unit
    words (whole words first, then outside TeX command names) and TeX spacing removed, `\\text{}`/`\\boxed{}`
    unwrapped, `\\fracab` -> `\\frac{a}{b}`, `\\sqrt[3]a` -> `\\sqrt[3]{a}`, `$` dropped, `100,000` -> `100000`
    (thousands groups only, so the tuple `0,1` stays)."""
    final_answer = final_answer.split("=")[-1]
    for expr in MINERVA_REMOVED_EXPRESSIONS:  # while whitespace still delimits words: "\\left" keeps its "ft"
        if expr.isalpha():
            final_answer = re.sub(rf"(?<!\\)\b{expr}\b", "", final_answer)
    for before, after in MINERVA_SUBSTITUTIONS:
        final_answer = final_answer.replace(before, after)
    for expr in MINERVA_REMOVED_EXPRESSIONS:
        if expr.isalpha():  # glued units, outside TeX command names
            segments = re.split(r"(\\[a-zA-Z]+)", final_answer)
            segments[::2] = [segment.replace(expr, "") for segment in segments[::2]]
            final_answer = "".join(segments)
        else:
            final_answer = final_answer.replace(expr, "")
    final_answer = re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", final_answer)
    final_answer = re.sub(r"(\\text\{)(.*?)(\})", "\\2", final_answer)
    final_answer = re.sub(r"(\\textbf\{)(.*?)(\})", "\\2", final_answer)
    final_answer = re.sub(r"(\\overline\{)(.*?)(\})", "\\2", final_answer)
    final_answer = re.sub(r"(\\boxed\{)(.*)(\})", "\\2", final_answer)
    final_answer = re.sub(r"(frac)([^{])(.)", "frac{\\2}{\\3}", final_answer)
    final_answer = re.sub(r"(sqrt)(\[[^\]]*\])(\w)", "\\1\\2{\\3}", final_answer)
    final_answer = re.sub(r"(sqrt)(?!\[)([^{])", "sqrt{\\2}", final_answer)
    final_answer = final_answer.replace("$", "")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+", final_answer):
        final_answer = final_answer.replace(",", "")
    return final_answer


def minerva_unnormalized_answer(text: str) -> str | None:
    """lm-eval's `get_unnormalized_answer`: the text of "Final Answer: The final answer is X. I hope it is
    correct." (None for its "[invalidanswer]")."""
    match = re.search(r"Final Answer: The final answer is(.*?). I hope it is correct.", text + "I hope it is correct.")
    return match.group(1).strip() if match else None


def minerva_last_boxed_only_string(string: str) -> str | None:
    """lm-eval's `last_boxed_only_string`: the last `\\boxed{...}` (or `\\boxed x`, `\\fbox{...}`) with braces."""
    idx = string.rfind("\\boxed")
    if "\\boxed " in string:
        return "\\boxed " + string.split("\\boxed ")[-1].split("$")[0]
    if idx < 0:
        idx = string.rfind("\\fbox")
        if idx < 0:
            return None
    depth = 0
    for i in range(idx, len(string)):
        if string[i] == "{":
            depth += 1
        if string[i] == "}":
            depth -= 1
            if depth == 0:
                return string[idx : i + 1]
    return None


def minerva_remove_boxed(s: str) -> str:
    """lm-eval's `remove_boxed`: the content of `\\boxed{...}` or `\\boxed x`."""
    if s.startswith("\\boxed "):
        return s[len("\\boxed ") :]
    if not (s.startswith("\\boxed{") and s.endswith("}")):
        raise ValueError(f"not a \\boxed{{}} expression: {s!r}")
    return s[len("\\boxed{") : -1]


def minerva_gold(solution: str) -> str | None:
    """lm-eval's `process_docs` answer: the normalised content of the solution's last `\\boxed{}`."""
    boxed = minerva_last_boxed_only_string(solution)
    return None if boxed is None else minerva_normalize_final_answer(minerva_remove_boxed(boxed))


# --------------------------------------------------------------------------------------------------------------------
# Qwen2.5-Math evaluation/parser.py
# --------------------------------------------------------------------------------------------------------------------


def qwen_extract_answer(pred_str: str) -> str | None:
    """Qwen2.5-Math's `extract_answer` for GSM8K/MATH, before its `strip_string` normalisation (equivalence is
    `rewards.answers_match` here): Minerva's "final answer is $x$. I hope", else the last `boxed` content, else
    after the last "he answer is" / "final answer is", else the last number; newlines with their indentation, a
    leading ":" and a trailing "." or "/" removed. None for its empty answer."""
    pred_str = pred_str.replace("\u043a\u0438", "")
    if "final answer is $" in pred_str and "$. I hope" in pred_str:
        pred = pred_str.split("final answer is $", 1)[1].split("$. I hope", 1)[0].strip()
    elif "boxed" in pred_str:
        ans = pred_str.split("boxed")[-1]
        if not ans:
            return None
        if ans[0] == "{":
            depth, pred = 1, ""
            for c in ans[1:]:
                if c == "{":
                    depth += 1
                elif c == "}":
                    depth -= 1
                    if depth == 0:
                        break
                pred += c
        else:
            pred = ans.split("$")[0].strip()
    elif "he answer is" in pred_str:
        pred = pred_str.split("he answer is")[-1].strip()
    elif "final answer is" in pred_str:
        pred = pred_str.split("final answer is")[-1].strip()
    else:
        numbers = re.findall(r"-?\d*\.?\d+", pred_str.replace(",", ""))
        pred = numbers[-1] if numbers else ""
    pred = re.sub(r"\n\s*", "", pred)
    if pred.startswith(":"):
        pred = pred[1:]
    if pred.endswith("."):
        pred = pred[:-1]
    if pred.endswith("/"):
        pred = pred[:-1]
    return pred or None


QWEN_TEMPLATES = {
    "qwen25_math_cot": (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{{}}.<|im_end|>\n"
        "<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n"
    ),
    "qwen_boxed": (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{input}\n"
        "Please reason step by step, and put your final answer within \\boxed{{}}.<|im_end|>\n"
        "<|im_start|>assistant\n"
    ),
}  # Qwen2.5-Math evaluation/utils.py PROMPT_TEMPLATES["qwen25-math-cot"], ["qwen-boxed"] (zero-shot: no demos)


# --------------------------------------------------------------------------------------------------------------------
# Protocols
# --------------------------------------------------------------------------------------------------------------------


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


def _gsm8k_scores(strict_pattern: str) -> tuple[Score, Score]:
    def gold(row: dict) -> str:
        return lm_eval_exact_match_key(row["solution"])

    def strict(text: str) -> str | None:
        found = regex_filter(text, strict_pattern)
        return None if found is None else lm_eval_exact_match_key(found)

    def flexible(text: str) -> str | None:
        found = regex_filter(text, LM_EVAL_FLEXIBLE, group_select=-1)
        return None if found is None else lm_eval_exact_match_key(found)

    return Score("strict-match", strict, gold), Score("flexible-extract", flexible, gold)


def render_lm_eval(question: str, shots: Sequence[tuple[str, str]], question_format: str) -> str:
    """lm-eval's plain-text context: each shot `doc_to_text + " " + target + "\\n\\n"`, then the problem's
    `doc_to_text` (target_delimiter " ", fewshot_delimiter "\\n\\n", no description)."""
    context = "".join(question_format.format(q) + " " + a + "\n\n" for q, a in shots)
    return context + question_format.format(question)


def _render_lm_eval_gsm8k(row: dict, shots: Sequence[dict]) -> str:
    # shots are train rows as `grpo_ext.data` maps them: `solution` is GSM8K's whole `answer` field (lm-eval's target)
    return render_lm_eval(row["question"], [(s["question"], s["solution"]) for s in shots], "Question: {}\nAnswer:")


def _render_gsm8k_cot(row: dict, shots: Sequence[dict]) -> str:
    return render_lm_eval(row["question"], [(s["question"], s["target"]) for s in shots], "Q: {}\nA:")


def _render_minerva(row: dict, shots: Sequence[dict]) -> str:
    fmt = "Problem:\n{}\n\nSolution:"
    return render_lm_eval(row["question"], [(s["problem"], s["solution"]) for s in shots], fmt)


def _qwen_render(name: str) -> Callable[[dict, Sequence[dict]], str]:
    def render(row: dict, shots: Sequence[dict]) -> str:
        # construct_prompt: input_template.format(input=question.strip()), then .strip(" ")
        return QWEN_TEMPLATES[name].format(input=row["question"].strip()).strip(" ")

    return render


def render_qwen_fewshot_cot(row: dict, shots: Sequence[dict]) -> str:
    """Qwen's `construct_prompt` for prompt type `cot`: demos `"Question: q\nAnswer: a"` joined by "\n\n\n", then
    "\n\n\n" and `"Question: {question}\nAnswer: "`, stripped of spaces at both ends."""
    demos = "\n\n\n".join(f"Question: {s['question']}\nAnswer: {s['answer']}" for s in shots)
    context = f"Question: {row['question'].strip()}\nAnswer: "
    return (demos + "\n\n\n" + context if demos else context).strip(" ")


def _qwen_score() -> Score:
    from rewards import extract_gold

    return Score("accuracy", qwen_extract_answer, lambda row: extract_gold(row["answer"]), exact=False)


def _minerva_score() -> Score:
    def extract(text: str) -> str | None:
        answer = minerva_unnormalized_answer(text)
        return None if answer is None else minerva_normalize_final_answer(answer)

    return Score("exact_match", extract, lambda row: minerva_gold(row["solution"]), exact=False)


# lm-eval's minerva_math process_results: math_verify = verify(gold=parse(doc["solution"]), target=parse(completion))
MINERVA_MATH_VERIFY = Score("math_verify", lambda text: None, lambda row: row["solution"], exact=False,
                            whole_text=True)


LM_EVAL = "lm-eval 0.4.13 (EleutherAI/lm-evaluation-harness)"
QWEN = "QwenLM/Qwen2.5-Math evaluation/ @ a45202bd16f1ec06f433442dc1152d0074773465"

def _qwen_instruct_protocol(name: str, template: str) -> Protocol:
    """One of Qwen2.5-Math's zero-shot chat prompts (`PROMPT_TEMPLATES[template]`): they differ only in the prompt."""
    return Protocol(
        name=name,
        source=f"{QWEN} utils.py PROMPT_TEMPLATES['{template}'], math_eval.py, parser.py",
        datasets=("gsm8k", "math", "math500"),
        render=_qwen_render(name),
        stop=QWEN_STOP,
        max_new_tokens=QWEN_MAX_TOKENS,
        scores=(_qwen_score(),),
        notes="extraction is parser.extract_answer before strip_string; equivalence is rewards.answers_match "
        "(math-verify) instead of grader.math_equal",
    )


PROTOCOLS: dict[str, Protocol] = {
    "chat": Protocol(
        name="chat",
        source="this project: the tokenizer's chat template and grpo_ext.data.make_prompt; rewards' scoring",
        datasets=("gsm8k", "math", "math500", "custom"),
        render=None,
        stop=(),
        max_new_tokens=1024,
        scores=(),  # rewards.grade_completions (accuracy_reward's verdicts), in grpo_ext.evaluation.score_problems
    ),
    "lm_eval_gsm8k": Protocol(
        name="lm_eval_gsm8k",
        source=f"{LM_EVAL} lm_eval/tasks/gsm8k/gsm8k.yaml",
        datasets=("gsm8k",),
        render=_render_lm_eval_gsm8k,
        stop=("Question:", "</s>", "<|im_end|>"),
        max_new_tokens=LM_EVAL_MAX_GEN_TOKS,
        scores=_gsm8k_scores(r"#### (\-?[0-9\.\,]+)"),
        num_few_shot=5,
        samples_train_shots=True,
        notes="shots drawn from the train split with random.Random(1234), one draw per test problem in order",
    ),
    "gsm8k_cot_8shot": Protocol(
        name="gsm8k_cot_8shot",
        source=f"{LM_EVAL} lm_eval/tasks/gsm8k/gsm8k-cot.yaml",
        datasets=("gsm8k",),
        render=_render_gsm8k_cot,
        stop=("Q:", "</s>", "<|im_end|>"),
        max_new_tokens=LM_EVAL_MAX_GEN_TOKS,
        scores=_gsm8k_scores(r"The answer is (\-?[0-9\.\,]+)."),
        num_few_shot=8,
        fixed_exemplars="gsm8k_cot_8shot",
    ),
    "minerva_math_4shot": Protocol(
        name="minerva_math_4shot",
        source=f"{LM_EVAL} lm_eval/tasks/minerva_math/utils.py, minerva_math_algebra.yaml",
        datasets=("math", "math500"),
        render=_render_minerva,
        stop=("Problem:",),
        max_new_tokens=LM_EVAL_MAX_GEN_TOKS,
        scores=(_minerva_score(), MINERVA_MATH_VERIFY),
        num_few_shot=4,
        fixed_exemplars="minerva_math_4shot",
        notes="exact_match's is_equiv (sympy parse_latex) is replaced by rewards.answers_match (math-verify); "
        "math_verify is lm-eval's second score, math-verify on the whole completion and solution, here bounded in "
        "time and reading the last 100,000 characters of each (rewards.match_texts)",
    ),
    "qwen25_math_cot": _qwen_instruct_protocol("qwen25_math_cot", "qwen25-math-cot"),
    "qwen_boxed": _qwen_instruct_protocol("qwen_boxed", "qwen-boxed"),
}


PROTOCOLS["qwen25_math_fewshot_cot"] = Protocol(
    name="qwen25_math_fewshot_cot",
    source=f"{QWEN} utils.py PROMPT_TEMPLATES['cot'] and construct_prompt, examples.py, math_eval.py, parser.py",
    datasets=("gsm8k", "math", "math500"),
    render=render_qwen_fewshot_cot,
    stop=(*QWEN_STOP, "\n\nQuestion:"),
    max_new_tokens=QWEN_MAX_TOKENS,
    scores=(_qwen_score(),),
    num_few_shot=4,
    fixed_exemplars="qwen25_math_fewshot_cot_{kind}",  # Qwen's load_prompt: GSM8K's 8 or MATH's 5, first N
    notes="the shot count is Qwen's --num_shots (its default is 0; 4 here, the base-model few-shot setting as "
    "we read the Qwen2.5-Math report, not re-checked offline); extraction and equivalence as qwen25_math_cot",
)


def get_protocol(name: str) -> Protocol:
    """The protocol called `name`; a ValueError naming the known ones otherwise."""
    if name not in PROTOCOLS:
        raise ValueError(f"--protocol must be one of {list(PROTOCOLS)}, got {name!r}")
    return PROTOCOLS[name]


def lm_eval_fewshot_indices(num_docs: int, pool_size: int, k: int, seed: int = LM_EVAL_FEWSHOT_SEED) -> list[list[int]]:
    """The train-split indices of lm-eval's default sampler for the first `num_docs` test problems: one
    `Random(seed).sample(range(pool_size), k)` draw per problem, in test order, from one generator (the
    sampler's `rnd`, seeded by `set_fewshot_seed` and shared across a task's documents)."""
    rnd = random.Random(seed)
    population = range(pool_size)
    return [rnd.sample(population, k) for _ in range(num_docs)]


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
    if num_few_shot == 0:
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
