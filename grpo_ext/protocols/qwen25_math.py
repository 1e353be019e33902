"""Qwen2.5-Math's `evaluation/` protocols (QwenLM/Qwen2.5-Math @ a45202bd): the zero-shot chat prompts of its
instruct models (`qwen25-math-cot`, `qwen-boxed`) and the few-shot `cot` prompt of its base models, read from
`utils.py`, `examples.py`, `math_eval.py` and `parser.py`; `tests/test_protocols.py` compares them with outputs
of that code (`tests/fixtures/qwen25_math.json`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from .core import Protocol, Score, answers_match_judge

QWEN = "QwenLM/Qwen2.5-Math evaluation/ @ a45202bd16f1ec06f433442dc1152d0074773465"
QWEN_MAX_TOKENS = 2048  # Qwen2.5-Math evaluation/math_eval.py --max_tokens_per_call
QWEN_STOP = ("</s>", "<|im_end|>", "<|endoftext|>")  # Qwen2.5-Math evaluation/math_eval.py stop_words


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

    return Score("accuracy", lambda text, row: qwen_extract_answer(text), lambda row: extract_gold(row["answer"]),
                 judge=answers_match_judge)


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


QWEN_PROTOCOLS = (
    _qwen_instruct_protocol("qwen25_math_cot", "qwen25-math-cot"),
    _qwen_instruct_protocol("qwen_boxed", "qwen-boxed"),
    Protocol(
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
    ),
)
