"""Qwen2.5-Math's `evaluation/` protocols (QwenLM/Qwen2.5-Math @ a45202bd): the zero-shot chat prompts of its
instruct models (`qwen25-math-cot`, `qwen-boxed`) and the few-shot `cot` prompt of its base models, read from
`utils.py`, `examples.py`, `math_eval.py`, `parser.py`, `grader.py` and `evaluate.py`, and scored as that code
scores: `extract_answer`, `strip_string` (twice for predictions, as `math_eval.py` applies it again) and
`math_equal`. `tests/test_protocols.py` compares prompts, extraction and verdicts with outputs of that code
(`tests/fixtures/qwen25_math.json`, `tests/fixtures/qwen25_math_verdicts.json`).

The pure rules are here; the sympy part of `math_equal` (`symbolic_equal`) runs in bounded worker processes
(`grpo_ext.protocols.symbolic`, `workers`), reached only by pairs that these rules leave undecided.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from .core import Protocol, Score, answers_match_judge

QWEN = "QwenLM/Qwen2.5-Math evaluation/ @ a45202bd16f1ec06f433442dc1152d0074773465"
QWEN_MAX_TOKENS = 2048  # Qwen2.5-Math evaluation/math_eval.py --max_tokens_per_call
QWEN_STOP = ("</s>", "<|im_end|>", "<|endoftext|>")  # Qwen2.5-Math evaluation/math_eval.py stop_words
QWEN_TIMEOUT = 3.0  # evaluate.py: ProcessPool.map(math_equal_process, ..., timeout=3); past it the sample is wrong
CHOICES = ("A", "B", "C", "D", "E")


class NeedsSympy(Exception):
    """Raised by the `symbolic` stand-in of the in-process pass: the verdict needs sympy (a worker)."""


def _needs_sympy(a: str, b: str) -> bool:
    raise NeedsSympy


# --------------------------------------------------------------------------------------------------------------------
# Extraction: parser.py extract_answer
# --------------------------------------------------------------------------------------------------------------------


def qwen_extract_answer(pred_str: str) -> str | None:
    """Qwen2.5-Math `parser.py` `extract_answer` for GSM8K/MATH, before its `strip_string` normalisation: Minerva's
    "final answer is $x$. I hope", else the last `boxed` content, else after the last "he answer is" / "final answer
    is", else after the first "答案是", else the last number; newlines with their indentation, a leading ":" and a
    trailing "." or "/" removed. None for its empty answer."""
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
    elif "答案是" in pred_str:
        pred = pred_str.split("答案是")[1].strip().split("\n\n")[0].strip()
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


# --------------------------------------------------------------------------------------------------------------------
# Normalisation: parser.py strip_string
# --------------------------------------------------------------------------------------------------------------------

# parser.py `unit_texts` (units mainly from MathQA), then each with an "s"; each is pasted into a regex as it is,
# so its "." matches any character
_UNITS = (
    "east", "degree", "mph", "kmph", "ft", "m sqaure", " m east", "sq m", "deg", "mile", "q .", "monkey", "prime",
    "ratio", "profit of rs", "rd", "o", "gm", "p . m", "lb", "tile", "per", "dm", "lt", "gain", "ab", "way", "west",
    "a .", "b .", "c .", "d .", "e .", "f .", "g .", "h .", "t", "a", "h", "no change", "men", "soldier", "pie", "bc",
    "excess", "st", "inches", "noon", "percent", "by", "gal", "kmh", "c", "acre", "rise", "a . m", "th", "π r 2",
    "sq", "mark", "l", "toy", "coin", "sq . m", "gallon", "° f", "profit", "minw", "yr", "women", "feet", "am", "pm",
    "hr", "cu cm", "square", "v â € ™", "are", "rupee", "rounds", "cubic", "cc", "mtr", "s", "ohm", "number", "kmph",
    "day", "hour", "minute", "min", "second", "man", "woman", "sec", "cube", "mt", "sq inch", "mp", "∏ cm ³",
    "hectare", "more", "sec", "unit", "cu . m", "cm 2", "rs .", "rs", "kg", "g", "month", "km", "m", "cm", "mm",
    "apple", "liter", "loss", "yard", "pure", "year", "increase", "decrease", "d", "less", "Surface", "litre",
    "pi sq m", "s .", "metre", "meter", "inch",
)  # fmt: skip
QWEN_UNIT_TEXTS = _UNITS + tuple(unit + "s" for unit in _UNITS)
# each pattern with the literal pieces it cannot match without (its text split at the wildcard "."): most answers
# hold none of most units, and a substring test is far cheaper than the regex; every unit has an ASCII letter, so
# an answer without one (a number) is left as it is
_UNIT_PATTERNS = tuple(
    (re.compile(r"(^|\W)" + unit + r"($|\W)"), tuple(piece for piece in unit.split(".") if piece))
    for unit in QWEN_UNIT_TEXTS
)

# word2number 1.1 `w2n.american_number_system`
_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000, "million": 10**6,
    "billion": 10**9,
}  # fmt: skip
_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _group_value(words: list[str]) -> int:
    """word2number's `number_formation`: 4 words a*b+c+d, 3 words a*b+c, 2 words a*b with a hundred else a+b, one
    word itself (an empty group raises, as indexing it does there)."""
    values = [_NUMBER_WORDS[w] for w in words]
    if len(values) == 4:
        return values[0] * values[1] + values[2] + values[3]
    if len(values) == 3:
        return values[0] * values[1] + values[2]
    if len(values) == 2:
        return values[0] * values[1] if 100 in values else values[0] + values[1]
    return values[0]


def word_to_number(text: str) -> int | float:
    """word2number 1.1 `w2n.word_to_num`, the reading `parser.py` `convert_word_number` applies to every answer:
    hyphens are spaces and case is ignored; a string of digits is that integer; otherwise only the words that are
    number words (and "point") count, wherever they are ("the eighteen apples" -> 18), read as billions, millions,
    thousands and a last group, each by `_group_value`, then the digit words after "point" as decimals. Raises
    ValueError when no number word is found or a scale word repeats or comes out of order."""
    text = text.replace("-", " ").lower()
    if text.isdigit():
        return int(text)
    words = [w for w in text.strip().split() if w in _NUMBER_WORDS or w == "point"]
    if not words:
        raise ValueError("no number words")
    if any(words.count(w) > 1 for w in ("thousand", "million", "billion", "point")):
        raise ValueError("a scale word repeats")
    decimals: list[str] = []
    if "point" in words:
        at = words.index("point")
        words, decimals = words[:at], words[at + 1 :]
    index = {w: (words.index(w) if w in words else -1) for w in ("billion", "million", "thousand")}
    b, m, t = index["billion"], index["million"], index["thousand"]
    if (t > -1 and (t < m or t < b)) or (m > -1 and m < b):
        raise ValueError("scale words out of order")
    total: int | float = 0
    if len(words) == 1:
        total += _NUMBER_WORDS[words[0]]
    elif words:
        if b > -1:
            total += _group_value(words[:b]) * 10**9
        if m > -1:
            total += _group_value(words[b + 1 : m] if b > -1 else words[:m]) * 10**6
        if t > -1:
            start = m + 1 if m > -1 else (b + 1 if b > -1 else 0)
            total += _group_value(words[start:t]) * 1000
        if t > -1 and t != len(words) - 1:
            total += _group_value(words[t + 1 :])
        elif m > -1 and m != len(words) - 1:
            total += _group_value(words[m + 1 :])
        elif b > -1 and b != len(words) - 1:
            total += _group_value(words[b + 1 :])
        elif t == m == b == -1:
            total += _group_value(words)
    if decimals:  # get_decimal_sum: only digit words count, any other word makes the decimal part 0
        total += float("0." + "".join(str(_NUMBER_WORDS[w]) for w in decimals)) if set(decimals) <= set(
            _DIGIT_WORDS
        ) else 0  # fmt: skip
    return total


def convert_word_number(text: str) -> str:
    """`parser.py` `convert_word_number`: `str(word_to_number(text))`, or the text unchanged when that fails."""
    try:
        return str(word_to_number(text))
    except Exception:  # there: a bare except
        return text


def _fix_fracs(string: str) -> str:
    r"""`parser.py` `_fix_fracs` (Hendrycks' MATH): `\frac12` -> `\frac{1}{2}`, `\frac1{72}` -> `\frac{1}{72}`,
    `\frac{a}b` kept; a `\frac` with fewer than two characters after it leaves the whole string unchanged."""
    head, *rest = string.split("\\frac")
    out = head
    for part in rest:
        out += "\\frac"
        if part[:1] == "{":
            out += part
            continue
        if len(part) < 2:
            return string
        a, b, tail = part[0], part[1], part[2:]
        out += "{" + a + "}" + b + tail if b == "{" else "{" + a + "}{" + b + "}" + tail
    return out


def _fix_a_slash_b(string: str) -> str:
    r"""`parser.py` `_fix_a_slash_b`: `a/b` of two integers written plainly -> `\frac{a}{b}` (a side with "sqrt"
    is kept as text); anything else unchanged."""
    parts = string.split("/")
    if len(parts) != 2:
        return string
    try:
        a = parts[0] if "sqrt" in parts[0] else int(parts[0])
        b = parts[1] if "sqrt" in parts[1] else int(parts[1])
        if string != f"{a}/{b}":
            return string
        return "\\frac{" + str(a) + "}{" + str(b) + "}"
    except Exception:
        return string


def qwen_strip_string(string: Any, skip_unit: bool = False) -> str:
    r"""Qwen2.5-Math `parser.py` `strip_string`, its answer normalisation, step by step: newlines and trailing "."
    dropped, `\!` removed; `array`/`bmatrix` -> `pmatrix`; `tfrac`/`dfrac` -> `frac`; `\neq \leq \geq` -> `\ne
    \le \ge`; `\left`/`\right` dropped, `\{ \}` -> `{ }`; a trailing `\text{...}` unit dropped when something is
    left; (unless `skip_unit`) its MathQA unit words removed twice over; degrees, dollars and `\( \)` removed;
    number words read as numbers (`word_to_number`); `\text{x}` -> `x`; `x=`, `x\in`, `x\to` (and y, z)
    removed; `\emptyset` -> `{}`, `(-\infty,\infty)` -> `\mathbb{R}`; percent signs removed; ` .5` -> ` 0.5`;
    `infinity`/`inf` -> `\infty`; every "and" and `\mathbf` removed, `\mbox{...}` dropped; `j` -> `i` when there is
    no `i`; `2.000` -> `2`; a leading "." gets a 0; a short `k=` prefix dropped; `\sqrtx` -> `\sqrt{x}`; spaces
    removed; `\frac12` -> `\frac{1}{2}`; `1/2` -> `\frac{1}{2}`."""
    string = str(string).strip().replace("\n", "").rstrip(".").replace("\\!", "")
    string = re.sub(r"\\begin\{array\}\{.*?\}", r"\\begin{pmatrix}", string)
    string = re.sub(r"\\end\{array\}", r"\\end{pmatrix}", string).replace("bmatrix", "pmatrix")
    string = string.replace("tfrac", "frac").replace("dfrac", "frac")
    string = string.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge")
    string = string.replace("\\left", "").replace("\\right", "").replace("\\{", "{").replace("\\}", "}")
    without_unit = re.sub(r"\\text{.*?}$", "", string).strip()
    if without_unit != "" and without_unit != string:
        string = without_unit
    if not skip_unit and re.search("[A-Za-z]", string):
        for _ in range(2):
            for pattern, pieces in _UNIT_PATTERNS:
                if not all(piece in string for piece in pieces):
                    continue
                replaced = pattern.sub(r"\1\2", string)
                if replaced != "":
                    string = replaced
    string = string.replace("^{\\circ}", "").replace("^\\circ", "")
    string = string.replace("\\$", "").replace("$", "").replace("\\(", "").replace("\\)", "")
    string = convert_word_number(string)
    string = re.sub(r"\\text\{(.*?)\}", r"\1", string)
    for key in ("x=", "y=", "z=", "x\\in", "y\\in", "z\\in", "x\\to", "y\\to", "z\\to"):
        string = string.replace(key, "")
    string = string.replace("\\emptyset", "{}").replace("(-\\infty,\\infty)", "\\mathbb{R}")
    string = string.replace("\\%", "").replace("%", "")
    string = string.replace(" .", " 0.").replace("{.", "{0.")
    # (a bracketed alphanumeric string would lose its brackets here, but no string with a bracket is alphanumeric)
    string = string.replace("infinity", "\\infty")
    if "\\infty" not in string:
        string = string.replace("inf", "\\infty")
    string = string.replace("+\\inity", "\\infty").replace("and", "").replace("\\mathbf", "")
    string = re.sub(r"\\mbox{.*?}", "", string)
    if "j" in string and "i" not in string:
        string = string.replace("j", "i")
    string = re.sub(r"(\d+)\.0*([^\d])", r"\1\2", string)
    string = re.sub(r"(\d+)\.0*$", r"\1", string)
    if not string:
        return string
    if string[0] == ".":
        string = "0" + string
    sides = string.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        string = sides[1]
    string = re.sub(r"\\sqrt(\w+)", r"\\sqrt{\1}", string).replace(" ", "")
    return _fix_a_slash_b(_fix_fracs(string))


# --------------------------------------------------------------------------------------------------------------------
# Equivalence: grader.py math_equal
# --------------------------------------------------------------------------------------------------------------------


def parse_digits(num: Any) -> float | None:
    """`grader.py` `parse_digits`: the float of `num` with commas removed, or of `x%` / `x\\%` divided by 100."""
    num = str(num).replace(",", "")
    try:
        return float(num)
    except ValueError:
        if num.endswith("%"):
            num = num[:-1]
            if num.endswith("\\"):
                num = num[:-1]
            try:
                return float(num) / 100
            except ValueError:
                pass
    return None


def _grader_choice_clean(pred: str) -> str:
    """`grader.py` `choice_answer_clean`: the last standalone letter A-E of the upper-cased answer, else the
    answer itself, without surrounding punctuation."""
    pred = pred.strip("\n").rstrip(".").rstrip("/").strip(" ").lstrip(":")
    letters = re.findall(r"\b(A|B|C|D|E)\b", pred.upper())
    pred = letters[-1] if letters else pred.strip().strip(".")
    return pred.rstrip(".").rstrip("/")


def _str_to_pmatrix(text: str) -> str:
    r"""`grader.py` `str_to_pmatrix`: each `{a,b,...}` group of the text as a `\begin{pmatrix}` column."""
    groups = re.findall(r"\{.*,.*\}", text.strip())
    return ", ".join(r"\begin{pmatrix}" + g.strip("{}").replace(",", "\\") + r"\end{pmatrix}" for g in groups)


def _is_matrix(text: str) -> bool:
    return text.startswith(("\\begin{pmatrix}", "\\begin{bmatrix}")) and text.endswith(
        ("\\end{pmatrix}", "\\end{bmatrix}")
    )


def math_equal(
    prediction: str | None, reference: str | None, symbolic: Callable[[str, str], bool] = _needs_sympy
) -> bool:
    r"""Qwen2.5-Math `grader.py` `math_equal(prediction, reference)` with its defaults (percentages and relative
    closeness on), `symbolic` being its `symbolic_equal`. In order: equal ignoring case and outer spaces; a choice
    letter A-E; two numbers (commas dropped, `x%` = x/100) equal to a relative 1e-4 to the reference, its /100 or
    its x100 (when both are numbers nothing else is tried); an empty prediction is wrong; equal once brackets and
    braces are dropped; bracketed lists equal part by part (order counts); matrices equal entry by entry; for
    equations, `lhs - (rhs)` equal either way round, or a short `x=` side dropped against a plain answer; then
    `symbolic`. The default `symbolic` raises `NeedsSympy`, so that a pair can be decided here or sent whole to a
    worker (`grpo_ext.protocols.workers`)."""
    if prediction is None or reference is None:
        return False
    if prediction.strip().lower() == reference.strip().lower():
        return True
    if reference in CHOICES and _grader_choice_clean(prediction) == reference:
        return True
    pred_number, ref_number = parse_digits(prediction), parse_digits(reference)
    if pred_number is not None and ref_number is not None:
        return any(
            _isclose(pred_number, item) for item in (ref_number / 100, ref_number, ref_number * 100)
        )  # numeric_equal: isclose(reference, prediction, rel_tol=1e-4)
    if not prediction:
        return False
    reference, prediction = reference.strip(), prediction.strip()
    if "pmatrix" in prediction and "pmatrix" not in reference:
        reference = _str_to_pmatrix(reference)
    pred_str, ref_str = prediction, reference
    if (prediction.startswith("[") and prediction.endswith("]") and not reference.startswith("(")) or (
        prediction.startswith("(") and prediction.endswith(")") and not reference.startswith("[")
    ):
        pred_str, ref_str = pred_str.strip("[]()"), ref_str.strip("[]()")
    for bracket in "{}()":
        ref_str, pred_str = ref_str.replace(bracket, ""), pred_str.replace(bracket, "")
    if pred_str.lower() == ref_str.lower():
        return True
    return parts_equal(prediction, reference, lambda p, r: math_equal(p, r, symbolic), symbolic)


def parts_equal(
    prediction: str, reference: str, equal: Callable[[str, str], bool], symbolic: Callable[[str, str], bool]
) -> bool:
    r"""The tail that Qwen2.5-Math's `math_equal` shares with DeepSeek-Math's (the same grader lineage), after their
    own number and string checks: bracketed lists equal part by part (order counts), matrices entry by entry, for
    equations `lhs - (rhs)` equal either way round or a short `x=` side dropped against a plain answer, then
    `symbolic`. `equal` is the calling tool's own `math_equal`, for the parts."""
    bracketed = r"(\(|\[).+(\)|\])"
    if re.match(bracketed, prediction) and re.match(bracketed, reference):
        pred_parts, ref_parts = prediction[1:-1].split(","), reference[1:-1].split(",")
        # every part is compared (a list, not a generator, there), so every part's sympy work is done
        if len(pred_parts) == len(ref_parts) and all([equal(p, r) for p, r in zip(pred_parts, ref_parts)]):
            return True
    if _is_matrix(prediction) and _is_matrix(reference) and _matrices_equal(prediction, reference, equal):
        return True
    if prediction.count("=") == 1 and reference.count("=") == 1:
        pred_lhs, pred_rhs = prediction.split("=")
        ref_lhs, ref_rhs = reference.split("=")
        pred_zero = f"{pred_lhs.strip()} - ({pred_rhs.strip()})"
        ref_zero = f"{ref_lhs.strip()} - ({ref_rhs.strip()})"
        if symbolic(pred_zero, ref_zero) or symbolic(f"-({pred_zero})", ref_zero):
            return True
    elif prediction.count("=") == 1 and len(prediction.split("=")[0].strip()) <= 2 and "=" not in reference:
        if equal(prediction.split("=")[1], reference):
            return True
    elif reference.count("=") == 1 and len(reference.split("=")[0].strip()) <= 2 and "=" not in prediction:
        if equal(prediction, reference.split("=")[1]):
            return True
    return bool(symbolic(prediction, reference))


def _isclose(prediction: float, reference: float) -> bool:
    try:
        return math.isclose(reference, prediction, rel_tol=1e-4)
    except Exception:  # there: the comparison's error skips that candidate
        return False


def _matrices_equal(prediction: str, reference: str, equal: Callable[[str, str], bool]) -> bool:
    """`math_equal`'s matrix test (Qwen's and DeepSeek's alike): as many non-empty rows (split at `\\\\`), each
    with as many `&` entries, all `equal` (both strings cut as if they were `pmatrix`, as there)."""
    start, end = len("\\begin{pmatrix}"), -len("\\end{pmatrix}")
    pred_rows = [row.strip() for row in prediction[start:end].split("\\\\") if row.strip()]
    ref_rows = [row.strip() for row in reference[start:end].split("\\\\") if row.strip()]
    if len(pred_rows) != len(ref_rows):
        return False
    for pred_row, ref_row in zip(pred_rows, ref_rows):
        pred_parts, ref_parts = pred_row.split("&"), ref_row.split("&")
        if len(pred_parts) != len(ref_parts) or not all([equal(p, r) for p, r in zip(pred_parts, ref_parts)]):
            return False
    return True


# --------------------------------------------------------------------------------------------------------------------
# The pipeline of math_eval.py and evaluate.py: prediction, gold, verdict
# --------------------------------------------------------------------------------------------------------------------


def _choice_clean_completion(pred: str) -> str:
    """`parser.py` `choice_answer_clean` (math_eval.py's, not grader.py's): with the trigger "answer is" (or
    "choice is") repeated, only the first paragraph; the text after the last trigger; its standalone letters A-E,
    the first after a trigger, else the last; else the text itself; no trailing "." or "/"."""
    pred = pred.strip("\n")
    triggers = ("choice is", "answer is")
    if any(pred.count(t) > 1 for t in triggers):
        pred = pred.split("\n\n")[0]
    pieces = re.split("|".join(triggers), pred)
    after_trigger = len(pieces) > 1
    if after_trigger:
        pred = pieces[-1]
    pred = pred.strip("\n").rstrip(".").rstrip("/").strip(" ").lstrip(":")
    letters = re.findall(r"\b(A|B|C|D|E)\b", pred.upper()) or [pred.strip().strip(".")]
    pred = letters[0] if after_trigger else letters[-1]
    return pred.rstrip(".").rstrip("/")


def qwen_prediction(text: str, gold: str, stop: Sequence[str] = ()) -> str | None:
    """What Qwen's `math_eval.py` scores for one completion: the text stripped and cut at each stop word in turn;
    None when nothing is left (`run_execute`); else `strip_string(extract_answer(text))` (extract_answer already
    ends with `strip_string`, so it is applied twice). Against a choice-letter gold, a prediction that is not one
    is re-read from the completion (`choice_answer_clean`); against a gold made only of letters A-E (or an empty
    one), its other characters are dropped."""
    code = text.strip()
    for word in stop:
        if word in code:
            code = code.split(word)[0].strip()
    if not code:
        return None
    pred = qwen_strip_string(qwen_strip_string(qwen_extract_answer(code) or ""))
    if gold in CHOICES and pred not in CHOICES:
        pred = _choice_clean_completion(code)
    elif all(c in CHOICES for c in gold) and not all(c in CHOICES for c in pred):
        pred = "".join(c for c in pred if c in CHOICES)
    return pred


def qwen_gold(row: dict, dataset: str) -> str:
    """Qwen's gold answer as `evaluate.py` computes it: GSM8K, the text after `####` normalised by `strip_string`
    twice (`parse_ground_truth` in math_eval.py, then again in evaluate.py); MATH, `extract_answer` of the stripped
    solution (its last `boxed`, normalised once)."""
    if dataset == "gsm8k":
        _, answer = row["solution"].split("####")  # exactly one "####", as the unpacking there requires
        return qwen_strip_string(qwen_strip_string(answer))
    extracted = qwen_extract_answer(row["solution"].strip())
    return "" if extracted is None else qwen_strip_string(extracted)


def qwen_judge(pairs: list[tuple[str | None, str]], timeout: float) -> list[bool]:
    """`math_equal` on each (prediction, gold) pair: decided here when the pure rules suffice, else whole in a
    bounded worker (`run_checks("qwen_math_equal")`); past `timeout` seconds a pair is wrong, as in evaluate.py."""
    from .workers import run_checks

    verdicts: list[bool | None] = []
    for pred, gold in pairs:
        try:
            verdicts.append(math_equal(pred, gold))
        except NeedsSympy:
            verdicts.append(None)
    todo = [i for i, v in enumerate(verdicts) if v is None]
    for i, verdict in zip(todo, run_checks("qwen_math_equal", [pairs[i] for i in todo], timeout)):
        verdicts[i] = verdict
    return verdicts  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------------------------
# Prompts and protocols
# --------------------------------------------------------------------------------------------------------------------

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


def ends_in_unanswered_code_fence(text: str) -> bool:
    """`math_eval.py` main(): for every prompt type but `cot` and `pal` an output with no "boxed" that ends (right-
    stripped) in a code fence has its code executed and the model continues, up to 4 rounds."""
    return "boxed" not in text and text.rstrip().endswith("```")


CODE_FENCE_NOTE = (
    "Qwen's math_eval.py gives these prompts up to 4 rounds: an output with no 'boxed' that ends in a code fence "
    "has its code executed and the model continues after the output; nothing here executes text a model wrote, so "
    "that continuation is not reproduced, and tallies.unanswered_code_fence counts the outputs it would have "
    "continued (at most that many verdicts can differ from Qwen's); "
)


def _qwen_kind(dataset: str) -> str:
    """Qwen's data name for our dataset: `gsm8k`, or `math` for MATH and its MATH-500 subset (same fields)."""
    return "gsm8k" if dataset == "gsm8k" else "math"


def qwen_scores(dataset: str, stop: Sequence[str]) -> tuple[Score, Score]:
    """Qwen's own verdict (`accuracy`: `qwen_prediction`, `qwen_gold`, `math_equal`, 3 s per pair), then this
    project's reading of the same extraction (`answers_match`: `extract_answer` before `strip_string`, the
    dataset's answer column, `rewards.answers_match`)."""
    from rewards import extract_gold

    kind = _qwen_kind(dataset)

    def gold(row: dict) -> str:
        return qwen_gold(row, kind)

    qwen = Score(
        "accuracy", lambda text, row: qwen_prediction(text, gold(row), stop), gold, judge=qwen_judge,
        timeout=QWEN_TIMEOUT, needs_latex_parser=True,
    )  # fmt: skip
    ours = Score("answers_match", lambda text, row: qwen_extract_answer(text), lambda row: extract_gold(row["answer"]),
                 judge=answers_match_judge)  # fmt: skip
    return qwen, ours


QWEN_SCORING_NOTE = (
    "accuracy is Qwen's own verdict: parser.extract_answer, strip_string (twice on predictions, as math_eval.py "
    "applies it again) and grader.math_equal, its sympy part in bounded workers (3 s per pair, as evaluate.py); "
    "sympy's parse_expr (eval) is read without eval (grpo_ext.protocols.symbolic.literal_parse_expr) and Qwen's "
    "bundled latex2sympy is stood in for by latex2sympy2_extended; answers_match is this project's equivalence on "
    "the same extraction"
)


def _with_scores(protocol: Protocol) -> Callable[[str, int], Protocol]:
    def variant(dataset: str, num_few_shot: int) -> Protocol:
        return replace(protocol, scores=qwen_scores(dataset, protocol.stop), variant=None)

    return variant


def _qwen_protocol(**fields) -> Protocol:
    protocol = Protocol(datasets=("gsm8k", "math", "math500"), max_new_tokens=QWEN_MAX_TOKENS,
                        scores=qwen_scores("gsm8k", fields["stop"]), **fields)  # fmt: skip
    return replace(protocol, variant=_with_scores(protocol))


def _qwen_instruct_protocol(name: str, template: str) -> Protocol:
    """One of Qwen2.5-Math's zero-shot chat prompts (`PROMPT_TEMPLATES[template]`): they differ only in the prompt."""
    return _qwen_protocol(
        name=name,
        source=f"{QWEN} utils.py PROMPT_TEMPLATES['{template}'], math_eval.py, parser.py, grader.py, evaluate.py",
        render=_qwen_render(name),
        stop=QWEN_STOP,
        notes=CODE_FENCE_NOTE + QWEN_SCORING_NOTE,
        tallies=(("unanswered_code_fence", ends_in_unanswered_code_fence),),
    )


QWEN_PROTOCOLS = (
    _qwen_instruct_protocol("qwen25_math_cot", "qwen25-math-cot"),
    _qwen_instruct_protocol("qwen_boxed", "qwen-boxed"),
    _qwen_protocol(
        name="qwen25_math_fewshot_cot",
        source=f"{QWEN} utils.py PROMPT_TEMPLATES['cot'] and construct_prompt, examples.py, math_eval.py, parser.py, "
        "grader.py, evaluate.py",
        render=render_qwen_fewshot_cot,
        stop=(*QWEN_STOP, "\n\nQuestion:"),
        num_few_shot=None,  # no source states the base models' count: the user gives it
        fixed_exemplars="qwen25_math_fewshot_cot_{kind}",  # Qwen's load_prompt: GSM8K's 8 or MATH's 5, first N
        notes="--num_few_shot is required: it is Qwen's --num_shots (0 to 8 on GSM8K, 0 to 5 on MATH), which its "
        "sh/eval.sh leaves at 0 and for which no source states a base-model value; one round (cot), as Qwen's code; "
        + QWEN_SCORING_NOTE,
    ),
)
