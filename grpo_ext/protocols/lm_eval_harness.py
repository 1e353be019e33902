"""lm-evaluation-harness 0.4.13's protocols: `gsm8k` (5 shots sampled from train), `gsm8k_cot` (8 fixed
chain-of-thought exemplars) and `minerva_math` (4 Minerva exemplars), read from the installed package's task yaml,
filters, metric, sampler and `tasks/minerva_math/utils.py`; `tests/test_protocols.py` compares each with it."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from rewards.equivalence import MAX_RAW_CHARS

from .core import Protocol, Score, answers_match_judge

LM_EVAL = "lm-eval 0.4.13 (EleutherAI/lm-evaluation-harness)"
LM_EVAL_FEWSHOT_SEED = 1234  # lm_eval.defaults.DEFAULT_OTHER_SEED, the fewshot_random_seed of simple_evaluate
LM_EVAL_MAX_GEN_TOKS = 256  # lm_eval.models.huggingface.HFLM.max_gen_toks


# --------------------------------------------------------------------------------------------------------------------
# GSM8K filters and exact match
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
# Minerva MATH (lm_eval/tasks/minerva_math/utils.py, from Lewkowycz et al. 2022 appendix D)
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
# Prompts and protocols
# --------------------------------------------------------------------------------------------------------------------


def _gsm8k_scores(strict_pattern: str) -> tuple[Score, Score]:
    def gold(row: dict) -> str:
        return lm_eval_exact_match_key(row["solution"])

    def strict(text: str, row: dict | None = None) -> str | None:
        found = regex_filter(text, strict_pattern)
        return None if found is None else lm_eval_exact_match_key(found)

    def flexible(text: str, row: dict | None = None) -> str | None:
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


LM_EVAL_IS_EQUIV_TIMEOUT = 5.0  # minerva_math/utils.py is_equiv: `with timeout(seconds=5)`, then not equal


def lm_eval_is_equiv_judge(pairs: list[tuple[str, str]], timeout: float) -> list[bool]:
    """lm-eval's Minerva `is_equiv` on each (normalised answer, normalised gold) pair: identical non-empty strings
    here, the rest (sympy's `parse_latex` and `simplify`) in bounded workers (`grpo_ext.protocols.symbolic`)."""
    from .workers import run_checks

    verdicts: list[bool | None] = [True if pred and pred == gold else None for pred, gold in pairs]
    todo = [i for i, v in enumerate(verdicts) if v is None]
    for i, verdict in zip(todo, run_checks("lm_eval_is_equiv", [pairs[i] for i in todo], timeout)):
        verdicts[i] = verdict
    return verdicts  # type: ignore[return-value]


def minerva_extract(text: str, row: dict | None = None) -> str | None:
    """lm-eval's Minerva prediction: `normalize_final_answer(get_unnormalized_answer(text))`; None for its
    "[invalidanswer]" (no "Final Answer: The final answer is ... I hope it is correct." sentence)."""
    answer = minerva_unnormalized_answer(text)
    return None if answer is None else minerva_normalize_final_answer(answer)


def _minerva_gold(row: dict) -> str | None:
    return minerva_gold(row["solution"])


MINERVA_EXACT_MATCH = Score("exact_match", minerva_extract, _minerva_gold, judge=lm_eval_is_equiv_judge,
                            timeout=LM_EVAL_IS_EQUIV_TIMEOUT, needs_latex_parser=True)  # fmt: skip
# lm-eval's minerva_math process_results: math_verify = verify(gold=parse(doc["solution"]), target=parse(completion))
MINERVA_MATH_VERIFY = Score("math_verify", lambda text, row: None, lambda row: row["solution"], whole_text=True)
# this project's equivalence on lm-eval's extraction: the column exact_match used to be
MINERVA_ANSWERS_MATCH = Score("answers_match", minerva_extract, _minerva_gold, judge=answers_match_judge)


def lm_eval_fewshot_indices(num_docs: int, pool_size: int, k: int, seed: int = LM_EVAL_FEWSHOT_SEED) -> list[list[int]]:
    """The train-split indices of lm-eval's default sampler for the first `num_docs` test problems: one
    `Random(seed).sample(range(pool_size), k)` draw per problem, in test order, from one generator (the
    sampler's `rnd`, seeded by `set_fewshot_seed` and shared across a task's documents)."""
    rnd = random.Random(seed)
    population = range(pool_size)
    return [rnd.sample(population, k) for _ in range(num_docs)]


LM_EVAL_PROTOCOLS = (
    Protocol(
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
    Protocol(
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
    Protocol(
        name="minerva_math_4shot",
        source=f"{LM_EVAL} lm_eval/tasks/minerva_math/utils.py, minerva_math_algebra.yaml",
        datasets=("math", "math500"),
        render=_render_minerva,
        stop=("Problem:",),
        max_new_tokens=LM_EVAL_MAX_GEN_TOKS,
        scores=(MINERVA_EXACT_MATCH, MINERVA_MATH_VERIFY, MINERVA_ANSWERS_MATCH),
        num_few_shot=4,
        fixed_exemplars="minerva_math_4shot",
        notes="exact_match is lm-eval's is_equiv (sympy parse_latex and simplify, antlr4 4.11) in bounded workers "
        "(5 s per pair, as its SIGALRM); math_verify is lm-eval's second score, math-verify on the whole completion "
        f"and solution, here bounded in time and reading the last {MAX_RAW_CHARS:,} characters of each "
        "(rewards.match_texts; a completion of the protocol's 256 tokens is far shorter, a longer --max_new_tokens "
        "may be cut); answers_match is this "
        "project's equivalence (rewards.answers_match) on the same extraction",
    ),
)
