r"""DeepSeek-Math's own evaluation harness (deepseek-ai/DeepSeek-Math `evaluation/` @ b8b0f8c), which produced the
paper's figures (`evaluation/evaluation_results.json`): the few-shot chain-of-thought prompts of the base model
(`configs/few_shot_test_configs.json`: GSM8K 8 shots, MATH 4 Minerva shots) and the zero-shot prompt of the
instruct and RL models (`configs/zero_shot_test_configs.json`, `run_subset_parallel.py` `markup_question`,
`infer/run_cot_eval.py` with `--prompt_format sft`), with that harness's answer extraction
(`data_processing/answer_extraction.py`) and verdicts (`eval/eval_script.py`, `eval/eval_utils.py` `math_equal`).
`tests/test_protocols.py` compares prompts, extraction and verdicts with outputs of that code
(`tests/fixtures/deepseek_math_verdicts.json`).

The pure rules are here; the sympy part of `math_equal` (`symbolic_equal`) runs in bounded worker processes
(`grpo_ext.protocols.symbolic`, `workers`), reached only by pairs that these rules leave undecided.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import lru_cache
from typing import Any

from .core import DATA_DIR, Protocol, Score
from .qwen25_math import NeedsSympy, _fix_a_slash_b, _fix_fracs, _needs_sympy, parse_digits, parts_equal

DEEPSEEK = "deepseek-ai/DeepSeek-Math evaluation/ @ b8b0f8ce093d80bf8e9a641e44142f06d092c305"
DEEPSEEK_MAX_TOKENS = 1024  # infer/run_cot_eval.py: vLLM SamplingParams(temperature=0, top_p=1.0, max_tokens=1024)
DEEPSEEK_TIMEOUT = 15.0  # infer/run_cot_eval.py evaluate(): ProcessPool.map(eval_fn, ..., timeout=15); then wrong
BOXED_INSTRUCTION = "\nPlease reason step by step, and put your final answer within \\boxed{}."  # markup_question


@lru_cache(maxsize=None)
def few_shot_block(kind: str) -> dict:
    """The fixed few-shot prompt of `kind` (`gsm8k`, `math`), its shot count and stop words, from
    `grpo_ext/protocols/deepseek_math_<kind>.json` (written from `evaluation/few_shot_prompts/`)."""
    with open(DATA_DIR / f"deepseek_math_{kind}.json", encoding="utf-8") as handle:
        return json.load(handle)


# --------------------------------------------------------------------------------------------------------------------
# Prompts: few_shot_prompts/*.py format_prompt, infer/run_cot_eval.py (prompt_format sft)
# --------------------------------------------------------------------------------------------------------------------


def render_few_shot(row: dict, kind: str) -> str:
    """`CoTGSMPrompt` / `MinervaMathPrompt` `format_prompt(question, "")`: the fixed block, then "\n\n\nQ: {q}\nA: "
    (GSM8K) or "\n\nProblem:\n{q}\n\nSolution:\n" (MATH), right-stripped; the question as the dataset has it."""
    block = few_shot_block(kind)["few_shot_prompt"]
    if kind == "gsm8k":
        return f"{block}\n\n\nQ: {row['question']}\nA: ".rstrip().lstrip()
    return f"{block}\n\nProblem:\n{row['question']}\n\nSolution:\n".rstrip().lstrip()


def render_zero_shot(row: dict) -> str:
    """The instruct/RL models' prompt: `markup_question` appends the boxed instruction to the question, and
    `run_cot_eval.py` (`--prompt_format sft`) writes `"User: {content.strip()}\n\nAssistant:"`, its leading EOS
    dropped. The tokenizer's BOS is added at tokenization, as vLLM does there."""
    return f"User: {(row['question'] + BOXED_INSTRUCTION).strip()}\n\nAssistant:"


# --------------------------------------------------------------------------------------------------------------------
# Extraction: data_processing/answer_extraction.py
# --------------------------------------------------------------------------------------------------------------------


def deepseek_strip_string(string: Any) -> str:
    r"""DeepSeek-Math `answer_extraction.py` `strip_string`, step by step: newlines and trailing "." dropped, `\!`
    removed; a whole `\text{...}` unwrapped; `tfrac`/`dfrac`/`cfrac` -> `frac`; `\left`/`\right` dropped; a
    trailing `\text{...}` unit dropped when something is left; degrees, `{cm}^2`-style units, "p.m." and a trailing
    "t" removed; dollars and `x\in` removed; `\%` -> `%`; ` .5` -> ` 0.5`; `\cdot`, `\mathbf`, `\mathrm` removed,
    `\mbox{...}` dropped; `infinity`/`inf` -> `\infty`; `j` -> `i` when there is no `i`; `2.000` -> `2`; a leading
    "." gets a 0; `\sqrt2` -> `\sqrt{2}`, `\tan x` -> `\tan{x}`; spaces removed; `\frac12` -> `\frac{1}{2}`,
    `1/2` -> `\frac{1}{2}`; trailing backslashes, commas and dots removed."""
    string = str(string).strip().replace("\n", "").rstrip(".").replace("\\!", "")
    if string.startswith("\\text{") and string.endswith("}"):
        string = string.split("{", 1)[1][:-1]
    string = string.replace("tfrac", "frac").replace("dfrac", "frac").replace("cfrac", "frac")
    string = string.replace("\\left", "").replace("\\right", "")
    without_unit = re.sub(r"\\text{.*?}$", "", string).strip()
    if without_unit != "" and without_unit != string:
        string = without_unit
    string = string.replace("^{\\circ}", "").strip().replace("^\\circ", "").strip()
    string = re.sub(r"\{(c|m)?m\}(\^(2|3))?", "", string).strip()
    string = re.sub(r"p\.m\.$", "", string).strip()
    string = re.sub(r"(\d)\s*t$", r"\1", string).strip()
    string = string.replace("\\$", "").replace("$", "").replace("x\\in", "").replace("\\%", "%")
    string = string.replace(" .", " 0.").replace("{.", "{0.").replace("\\cdot", "")
    string = string.replace("infinity", "\\infty")
    if "\\infty" not in string:
        string = string.replace("inf", "\\infty")
    string = string.replace("+\\inity", "\\infty").replace("\\mathbf", "").replace("\\mathrm", "")
    string = re.sub(r"\\mbox{.*?}", "", string)
    if "j" in string and "i" not in string:
        string = string.replace("j", "i")
    string = re.sub(r"(\d+)\.0+([^\d])", r"\1\2", string)
    string = re.sub(r"(\d+)\.0+$", r"\1", string)
    if not string:
        return string
    if string[0] == ".":
        string = "0" + string
    for command in ("sqrt", "tan"):  # _fix_sqrt, _fix_tan
        string = re.sub(rf"\\{command}(-?[0-9.a-zA-Z]+)", rf"\\{command}{{\1}}", string)
        string = re.sub(rf"\\{command}\s+(\w+)$", rf"\\{command}{{\1}}", string)
    string = _fix_a_slash_b(_fix_fracs(string.replace(" ", "")))
    return re.sub(r"(\\|,|\.)+$", "", string)


def extract_boxed_answers(text: str) -> list[str]:
    r"""`answer_extraction.py` `extract_boxed_answers`: the content of every closed `boxed{...}`, in order, with a
    `%` right after the closing brace kept (as `...}`)."""
    answers = []
    for piece in text.split("boxed{")[1:]:
        depth = 0
        for i, c in enumerate(piece):
            depth += {"{": 1, "}": -1}.get(c, 0)
            if depth < 0:
                answers.append(piece[: i + 1] if piece[i + 1 : i + 2] == "%" else piece[:i])
                break
    return answers


def _program_output(text: str) -> str:
    """`extract_program_output`: the text between the last "```output" and the next "```", stripped."""
    if "```output" not in text:
        return ""
    return text.split("```output")[-1].split("```")[0].strip()


def extract_answers(text: str) -> list[str]:
    """`answer_extraction.py` `extract_answer(text, exhaust=True)`: Minerva's "final answer is $x$. I hope", else
    every boxed answer, else after the last "he answer is", else a program's output block, else the last number;
    each cut to its first line, without a leading ":" or trailing "." / "/", through `deepseek_strip_string`."""
    if "final answer is $" in text and "$. I hope" in text:
        found = [text.split("final answer is $", 1)[1].split("$. I hope", 1)[0].strip()]
    elif "boxed" in text:
        found = extract_boxed_answers(text)
    elif "he answer is" in text:
        found = [text.split("he answer is")[-1].strip()]
    else:
        output = _program_output(text)
        numbers = re.findall(r"-?\d*\.?\d+", text.replace(",", ""))
        found = [output] if output else numbers[-1:]
    return [deepseek_strip_string(a.strip().split("\n")[0].lstrip(":").rstrip(".").rstrip("/")) for a in found]


def extract_last_single_answer(text: str) -> str:
    """`extract_last_single_answer` (`extract_answer(text, exhaust=False)`): the last answer, "" when none."""
    answers = extract_answers(text)
    return answers[-1] if answers else ""


def extract_math_answer(question: str, text: str) -> list[str]:
    r"""`extract_math_answer`: every answer of the text; split at commas when the question asks for answers
    "separated by commas" (and the answer has no brackets), or at `\text{and}`."""
    answers: list[str] = []
    for answer in extract_answers(text):
        if "separated by commas" in question and not any(c in answer for c in "()[]"):
            answers.extend(a.strip() for a in answer.split(","))
        elif re.search(r"\\text\{\s*and\s*\}", answer):
            answers.extend(a.strip() for a in re.sub(r"\\text\{\s*and\s*\}", "[SEP]", answer).split("[SEP]"))
        else:
            answers.append(answer.strip())
    return answers


def extract_gsm_few_shot_answer(text: str) -> str:
    """`extract_gsm_few_shot_cot_answer`: the text up to the first "Q: ", its last number (with a "." that ends it,
    commas not removed), "[invalid]" when there is none."""
    numbers = re.findall(r"-?\d+\.?\d*", text.split("Q: ", 1)[0])
    return numbers[-1] if numbers else "[invalid]"


def extract_math_few_shot_answer(question: str, text: str) -> list[str]:
    """`extract_math_few_shot_cot_answer`: `extract_math_answer` on the text up to the first "Problem:"."""
    return extract_math_answer(question, text.split("Problem:", 1)[0])


# --------------------------------------------------------------------------------------------------------------------
# Verdicts: eval/eval_utils.py math_equal, eval/eval_script.py is_correct, eval_math, eval_last_single_answer
# --------------------------------------------------------------------------------------------------------------------


def math_equal(prediction: str, reference: str, symbolic: Callable[[str, str], bool] = _needs_sympy) -> bool:
    r"""DeepSeek-Math `eval/eval_utils.py` `math_equal` with its defaults, `symbolic` being its `symbolic_equal`:
    equal strings; two numbers (commas dropped, `x%` = x/100) within an absolute 1e-3 of the reference, its /100
    or its x100 (when both are numbers nothing else is tried); an empty prediction is wrong; bracketed lists equal
    part by part; matrices entry by entry; equations as `lhs - (rhs)` either way round, or a short `x=` side
    dropped; then `symbolic`. The default `symbolic` raises `NeedsSympy` (decide here or send the pair whole)."""
    if str(prediction) == str(reference):
        return True
    pred_number, ref_number = parse_digits(prediction), parse_digits(reference)
    if pred_number is not None and ref_number is not None:
        return any(_isclose_abs(item, pred_number) for item in (ref_number / 100, ref_number, ref_number * 100))
    if not prediction:
        return False
    reference, prediction = str(reference).strip(), str(prediction).strip()
    return parts_equal(prediction, reference, lambda p, r: math_equal(p, r, symbolic), symbolic)


def _isclose_abs(reference: float, prediction: float) -> bool:
    try:
        return math.isclose(reference, prediction, abs_tol=1e-3)
    except Exception:
        return False


def is_correct(pred: str | list, answer: str | list, symbolic: Callable[[str, str], bool] = _needs_sympy) -> bool:
    r"""`eval/eval_script.py` `is_correct` (prec 1e-3): two lists match when every prediction equals some answer
    and every answer some prediction (all pairs are compared); two strings that both hold `\cup` are compared as
    the lists of their pieces; otherwise numbers within 1e-3 (commas dropped), an equal non-empty answer, or
    `math_equal`."""
    if isinstance(pred, list) and isinstance(answer, list):
        matched = [(i, j) for i, p in enumerate(pred) for j, a in enumerate(answer) if is_correct(p, a, symbolic)]
        return len({i for i, _ in matched}) == len(pred) and len({j for _, j in matched}) == len(answer)
    if "\\cup" in pred and "\\cup" in answer:
        return is_correct(pred.split("\\cup"), answer.split("\\cup"), symbolic)
    try:
        if abs(float(pred.replace(",", "")) - float(answer.replace(",", ""))) < 1e-3:
            return True
    except ValueError:
        pass
    return bool(answer and pred == answer) or math_equal(pred, answer, symbolic)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def eval_math_pair(pred: list[str], answer: list[str]) -> tuple[list[str], list[str]]:
    """`eval_math`'s preparation: both lists without repeats, and only the last `len(answer)` predictions ("some
    predictions mistakenly box non-answer strings"; all of them when the answer list is empty)."""
    answer = _unique(answer)
    return _unique(pred)[-len(answer) :], answer


def deepseek_judge(pairs: list[tuple[Any, Any]], timeout: float) -> list[bool]:
    """`is_correct` on each (prediction, answer) pair, answer lists first prepared as `eval_math` does: decided here
    when the pure rules suffice, else whole in a bounded worker (`run_checks("deepseek_is_correct")`); past
    `timeout` seconds a pair is wrong, as in run_cot_eval.py."""
    from .workers import run_checks

    pairs = [eval_math_pair(p, a) if isinstance(p, list) else (p, a) for p, a in pairs]
    verdicts: list[bool | None] = []
    for pred, answer in pairs:
        try:
            verdicts.append(is_correct(pred, answer))
        except NeedsSympy:
            verdicts.append(None)
    todo = [i for i, v in enumerate(verdicts) if v is None]
    for i, verdict in zip(todo, run_checks("deepseek_is_correct", [pairs[i] for i in todo], timeout)):
        verdicts[i] = verdict
    return verdicts  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------------------------------


def deepseek_gold(row: dict, kind: str) -> str | list[str]:
    """The harness's gold: GSM8K, the text after `####` without commas (`process_gsm8k_test`); MATH,
    `extract_math_answer(problem, solution)` (`process_math_test`)."""
    if kind == "gsm8k":
        return row["solution"].split("####")[-1].strip().replace(",", "")
    return extract_math_answer(row["question"], row["solution"])


def deepseek_score(kind: str, few_shot: bool) -> Score:
    """`accuracy`, the harness's verdict: the config's answer extraction (`extract_gsm_few_shot_cot_answer` /
    `extract_math_few_shot_cot_answer` for the base model, `extract_last_single_answer` / `extract_math_answer`
    for instruct and RL) and eval function (`eval_last_single_answer` / `eval_math`), 15 s per pair."""
    if kind == "gsm8k":
        extract = extract_gsm_few_shot_answer if few_shot else extract_last_single_answer

        def prediction(text: str, row: dict) -> Any:
            return extract(text)

    else:
        extract_math = extract_math_few_shot_answer if few_shot else extract_math_answer

        def prediction(text: str, row: dict) -> Any:
            return extract_math(row["question"], text)

    return Score("accuracy", prediction, lambda row: deepseek_gold(row, kind), judge=deepseek_judge,
                 timeout=DEEPSEEK_TIMEOUT, needs_latex_parser=True)  # fmt: skip


DEEPSEEK_NOTES = (
    "--num_few_shot 0 is the instruct/RL models' zero-shot prompt (User: ... boxed instruction ... Assistant:, "
    "stop at EOS), 8 (GSM8K) or 4 (MATH) the base model's fixed few-shot block (stop at \\nQ: / \\nProblem:); "
    "greedy, 1024 new tokens. accuracy is the harness's own extraction and is_correct/math_equal, its sympy part in "
    "bounded workers (15 s per pair, as its process pool); sympy's parse_expr (eval) is read without eval "
    "(grpo_ext.protocols.symbolic.literal_parse_expr). Published figures: evaluation/evaluation_results.json "
    "(GSM8K / MATH: base 64.2 / 36.2, instruct 82.9 / 46.8, RL 88.2 / 51.7, on the full 5,000-problem MATH test)"
)


def _variant(dataset: str, num_few_shot: int) -> Protocol:
    kind = "gsm8k" if dataset == "gsm8k" else "math"
    shots = few_shot_block(kind)["num_shots"]
    if num_few_shot not in (0, shots):
        raise ValueError(
            f"--num_few_shot {num_few_shot}: protocol deepseek_math on {dataset} takes 0 (the instruct and RL models' "
            f"zero-shot prompt) or {shots} (the base model's fixed {shots}-shot prompt)"
        )
    few_shot = num_few_shot > 0

    def render(row: dict, shots: Sequence[dict]) -> str:
        return render_few_shot(row, kind) if few_shot else render_zero_shot(row)

    stop = tuple(few_shot_block(kind)["stop_words"]) if few_shot else ()
    return replace(DEEPSEEK_MATH, render=render, stop=stop, scores=(deepseek_score(kind, few_shot),),
                   num_few_shot=num_few_shot, shots_in_render=few_shot, variant=None)  # fmt: skip


DEEPSEEK_MATH = Protocol(
    name="deepseek_math",
    source=f"{DEEPSEEK} configs/*_test_configs.json, few_shot_prompts/, run_subset_parallel.py, "
    "infer/run_cot_eval.py, data_processing/, eval/",
    datasets=("gsm8k", "math", "math500"),
    render=render_zero_shot,
    stop=(),
    max_new_tokens=DEEPSEEK_MAX_TOKENS,
    scores=(deepseek_score("gsm8k", False),),
    num_few_shot=None,  # the user says which model kind: 0 (instruct, RL) or the dataset's shots (base)
    notes=DEEPSEEK_NOTES,
    variant=_variant,
)
