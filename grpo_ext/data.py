"""Math datasets mapped to the columns that the trainer, the rewards and the evaluator read.

Every loader returns a `datasets.Dataset` with

- `prompt`: chat messages (`[{"role": "user", "content": ...}]`, with a system turn and few-shot turns when asked),
- `answer`: the gold final answer as text (GSM8K: the part after `####`; MATH: the dataset's `answer` column, or
  the last `\\boxed{}` of the reference solution when the source has no such column),
- `solution`: the reference solution (GSM8K rationale, MATH worked solution),
- `idx`: the row's position in the source (stable, used by `evaluate.py --resume`),
- MATH only: `subject` and `level` (an int 1-5, or None when the source says "Level ?").

Sources: the hub (`openai/gsm8k` config `main`; a hendrycks MATH mirror; `HuggingFaceH4/MATH-500`) or local JSONL
files (`data_files=`) in the same shapes as the hub rows. A local file with a missing column or a malformed row
raises `DatasetFormatError` naming the file and the 1-based line.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from functools import partial
from typing import Any

DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

GSM8K_HUB_ID = "openai/gsm8k"
GSM8K_HUB_CONFIG = "main"
MATH_HUB_ID = "DigitalLearningGmbH/MATH-lighteval"  # all 7 subjects of Hendrycks MATH in one config (7,500/5,000 rows)
MATH500_HUB_ID = "HuggingFaceH4/MATH-500"

# Aliases accepted by `load_math_dataset(name=...)`.
DATASET_ALIASES = {
    "gsm8k": "gsm8k",
    GSM8K_HUB_ID: "gsm8k",
    "math": "math",
    MATH_HUB_ID: "math",
    "EleutherAI/hendrycks_math": "math",
    "math500": "math500",
    "math-500": "math500",
    MATH500_HUB_ID: "math500",
    "custom": "custom",
}

_LEVEL = re.compile(r"^\s*(?:level\s*)?(\d+)\s*$", re.IGNORECASE)


class DatasetFormatError(ValueError):
    """A source row does not have the shape a loader expects; the message names the file (or source) and row."""


class HubUnreachableError(ConnectionError):
    """A hub dataset could not be read: offline mode (`HF_HUB_OFFLINE`, at once) with no copy in the datasets cache,
    or no network (after the hub client's retries). `source` and `split` name it, `offline` says which of the two,
    `few_shot` that it was the few-shot source (`load_few_shot`), so that a command line can name its own option."""

    def __init__(self, source: str, split: str, reason: str, offline: bool, few_shot: bool = False):
        super().__init__(f"{source} [{split}]: the Hugging Face hub could not be reached ({reason})")
        self.source, self.split, self.reason, self.offline, self.few_shot = source, split, reason, offline, few_shot


# --------------------------------------------------------------------------------------------------------------------
# Pure row mappers
# --------------------------------------------------------------------------------------------------------------------


def make_prompt(
    question: str,
    instruction: str | None = DEFAULT_INSTRUCTION,
    system_prompt: str | None = None,
    few_shot: Sequence[tuple[str, str]] = (),
) -> list[dict[str, str]]:
    """Chat messages for one problem.

    The user turn is `question + "\\n" + instruction` (the zero-shot prompt of the Qwen2.5-Math / DeepSeekMath
    evaluations); `few_shot` pairs `(question, worked answer)` are prepended as earlier user/assistant turns with the
    same instruction, so the model sees the answer format before the real question.
    """

    def user(text: str) -> dict[str, str]:
        return {"role": "user", "content": f"{text}\n{instruction}" if instruction else text}

    messages: list[dict[str, str]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    for shot_question, shot_answer in few_shot:
        messages.append(user(shot_question))
        messages.append({"role": "assistant", "content": shot_answer})
    messages.append(user(question))
    return messages


def gsm8k_final_answer(answer_field: str) -> str:
    """The text after the last `####` of a GSM8K `answer` field, with thousands separators removed.

    Raises ValueError when there is no `####` marker or nothing after it.
    """
    if not isinstance(answer_field, str) or "####" not in answer_field:
        raise ValueError("GSM8K `answer` must end with '#### <final answer>'")
    final = answer_field.rsplit("####", 1)[1].strip()
    if not final:
        raise ValueError("GSM8K `answer` has nothing after '####'")
    return final.replace(",", "")


def gsm8k_rationale_as_boxed(answer_field: str) -> str:
    """A GSM8K rationale rewritten into the evaluation format: `<<calc>>` annotations dropped and the `#### x`
    line replaced by `The final answer is \\boxed{x}.` (used for few-shot examples and SFT targets)."""
    final = gsm8k_final_answer(answer_field)
    rationale = re.sub(r"<<[^>]*>>", "", answer_field.rsplit("####", 1)[0]).strip()
    return f"{rationale}\nThe final answer is \\boxed{{{final}}}."


def parse_level(value: Any) -> int | None:
    """MATH level as an int: accepts 3, "3", "Level 3"; "Level ?" (present in the MATH train split) -> None."""
    if isinstance(value, bool):
        raise ValueError(f"level must be an int or 'Level N', got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if value.strip().lower() in ("level ?", "?", ""):
            return None
        match = _LEVEL.match(value)
        if match:
            return int(match.group(1))
    raise ValueError(f"level must be an int or 'Level N', got {value!r}")


def _require(row: dict, columns: Sequence[str], where: str) -> None:
    missing = [c for c in columns if c not in row]
    if missing:
        raise DatasetFormatError(f"{where}: missing column(s) {missing}; the row has {sorted(row)}")
    for c in columns:
        if not isinstance(row[c], str) or not row[c].strip():
            raise DatasetFormatError(f"{where}: column {c!r} must be a non-empty string, got {row[c]!r}")


def map_gsm8k_row(row: dict, idx: int, where: str, prompt_kwargs: dict | None = None) -> dict:
    """One GSM8K row (question/answer) -> prompt/answer/solution/idx."""
    _require(row, ("question", "answer"), where)
    try:
        final = gsm8k_final_answer(row["answer"])
    except ValueError as err:
        raise DatasetFormatError(f"{where}: {err}") from None
    return {
        "idx": idx,
        "prompt": make_prompt(row["question"], **(prompt_kwargs or {})),
        "question": row["question"],
        "solution": row["answer"],
        "answer": final,
    }


def map_math_row(row: dict, idx: int, where: str, prompt_kwargs: dict | None = None) -> dict:
    """One MATH row (problem/solution, and answer/subject/level when present) -> prompt/answer/solution/...

    The subject is read from `subject` (MATH-500) or `type` (hendrycks mirrors). Without an `answer` column the gold
    answer is the last `\\boxed{}` of the solution, found with `rewards.extract_gold` (the same code as training).
    """
    _require(row, ("problem", "solution"), where)
    answer = row.get("answer")
    if answer is None:
        from rewards import extract_gold

        answer = extract_gold(row["solution"])
        if answer is None:
            raise DatasetFormatError(f"{where}: no `answer` column and no \\boxed{{}} answer in `solution`")
    elif not isinstance(answer, str) or not answer.strip():
        raise DatasetFormatError(f"{where}: column 'answer' must be a non-empty string, got {answer!r}")
    try:
        level = parse_level(row.get("level", "?"))
    except ValueError as err:
        raise DatasetFormatError(f"{where}: {err}") from None
    return {
        "idx": idx,
        "prompt": make_prompt(row["problem"], **(prompt_kwargs or {})),
        "question": row["problem"],
        "solution": row["solution"],
        "answer": answer,
        "subject": row.get("subject", row.get("type")) or "unknown",
        "level": level,
    }


def map_custom_row(
    row: dict,
    idx: int,
    where: str,
    prompt_kwargs: dict | None = None,
    question_column: str = "question",
    answer_column: str = "answer",
) -> dict:
    """Any dataset with a question and a gold final answer. A question column that already holds chat messages
    (a list of `{"role", "content"}` dicts) is used as the prompt unchanged; `solution` is kept when present."""
    missing = [c for c in (question_column, answer_column) if c not in row]
    if missing:
        raise DatasetFormatError(f"{where}: missing column(s) {missing}; the row has {sorted(row)}")
    question, answer = row[question_column], row[answer_column]
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str) or not answer.strip():
        raise DatasetFormatError(f"{where}: column {answer_column!r} must be a non-empty string, got {answer!r}")
    if isinstance(question, list) and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in question):
        prompt = question
    elif isinstance(question, str) and question.strip():
        prompt = make_prompt(question, **(prompt_kwargs or {}))
    else:
        raise DatasetFormatError(
            f"{where}: column {question_column!r} must be a non-empty string or a list of chat messages"
        )
    return {"idx": idx, "prompt": prompt, "answer": answer, "solution": row.get("solution") or answer}


_MAPPERS = {"gsm8k": map_gsm8k_row, "math": map_math_row, "math500": map_math_row, "custom": map_custom_row}


# --------------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------------


def read_jsonl(path: str | os.PathLike) -> list[tuple[int, dict]]:
    """(1-based line number, row) for each non-blank line of a JSONL file; a line that is not a JSON object raises
    DatasetFormatError naming the file and line."""
    rows = []
    with open(path, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DatasetFormatError(f"{path}, line {line_number}: not UTF-8 text ({err.reason})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetFormatError(f"{path}, line {line_number}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise DatasetFormatError(
                    f"{path}, line {line_number}: expected a JSON object, got {type(row).__name__}"
                )
            rows.append((line_number, row))
    return rows


def resolve_dataset_name(name: str) -> str:
    """`gsm8k`, `math`, `math500` or `custom` for any accepted alias; raises ValueError naming the accepted ones."""
    key = DATASET_ALIASES.get(name, DATASET_ALIASES.get(name.lower()))
    if key is None:
        raise ValueError(f"Unknown dataset {name!r}; expected one of {sorted(DATASET_ALIASES)}")
    return key


def load_math_dataset(
    name: str,
    split: str = "train",
    data_files: str | Sequence[str] | None = None,
    limit: int | None = None,
    hub_id: str | None = None,
    instruction: str | None = DEFAULT_INSTRUCTION,
    system_prompt: str | None = None,
    num_few_shot: int = 0,
    question_column: str = "question",
    answer_column: str = "answer",
    few_shot_data_files: str | Sequence[str] | None = None,
):
    """Load GSM8K, MATH, MATH-500 or a custom question/answer dataset as prompt/answer/solution rows.

    Args:
        name: `gsm8k`, `math`, `math500` or one of their hub ids (see `DATASET_ALIASES`); `custom` for any other
            source with a question (or chat-messages) column and a gold-answer column, read from `data_files` or
            the hub dataset `hub_id`.
        split: hub split (`train`/`test`); ignored with `data_files`.
        data_files: local JSONL file(s) in the hub rows' shape; rows are numbered across files in order.
        limit: keep the first `limit` rows.
        hub_id: override the hub dataset id (e.g. another MATH mirror).
        instruction, system_prompt: see `make_prompt`.
        num_few_shot: prepend this many worked examples as earlier chat turns (see `load_few_shot`).
        few_shot_data_files: where the worked examples come from (needed with `data_files`).
        question_column, answer_column: column names for `custom`.
    """
    from datasets import Dataset

    kind = resolve_dataset_name(name)
    if data_files is not None:
        files = [data_files] if isinstance(data_files, (str, os.PathLike)) else list(data_files)
        sources = [(f"{path}, line {line}", row) for path in files for line, row in read_jsonl(path)]
    else:
        sources = _hub_rows(kind, split, hub_id)

    if limit is not None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        sources = sources[:limit]
    few_shot = load_few_shot(kind, num_few_shot, few_shot_data_files, data_files is not None)
    prompt_kwargs = {"instruction": instruction, "system_prompt": system_prompt, "few_shot": few_shot}
    mapper = _MAPPERS[kind]
    if kind == "custom":
        mapper = partial(map_custom_row, question_column=question_column, answer_column=answer_column)
    rows = [mapper(row, i, where, prompt_kwargs) for i, (where, row) in enumerate(sources)]
    if not rows:
        raise DatasetFormatError(f"{data_files or name}: no rows")
    return Dataset.from_list(rows)


def load_few_shot(
    kind: str, num: int, few_shot_data_files: str | Sequence[str] | None = None, local: bool = False
) -> list[tuple[str, str]]:
    """The first `num` (question, worked answer) pairs of the few-shot source: `few_shot_data_files`, or the hub
    train split (GSM8K train for GSM8K, MATH train for MATH and MATH-500). Never the evaluated rows themselves.
    GSM8K answers are rewritten to end in `\\boxed{}` (`gsm8k_rationale_as_boxed`)."""
    if num <= 0:
        return []
    if few_shot_data_files is not None:
        files = [few_shot_data_files] if isinstance(few_shot_data_files, (str, os.PathLike)) else few_shot_data_files
        shots = [(f"{path}, line {line}", row) for path in files for line, row in read_jsonl(path)]
    elif local:
        raise ValueError("num_few_shot with local data_files needs few_shot_data_files (e.g. a train split file)")
    else:
        shots = _hub_rows("gsm8k" if kind == "gsm8k" else "math", "train", None, few_shot=True)
    if len(shots) < num:
        raise ValueError(f"num_few_shot={num} but the few-shot source has only {len(shots)} rows")
    return [_few_shot_pair(kind, row, where) for where, row in shots[:num]]


def _few_shot_pair(kind: str, row: dict, where: str) -> tuple[str, str]:
    if kind == "gsm8k":
        _require(row, ("question", "answer"), where)
        return row["question"], gsm8k_rationale_as_boxed(row["answer"])
    if kind == "custom":
        raise ValueError("num_few_shot is not supported for custom datasets")
    _require(row, ("problem", "solution"), where)
    return row["problem"], row["solution"]


def _hub_rows(kind: str, split: str, hub_id: str | None, few_shot: bool = False) -> list[tuple[str, dict]]:
    from datasets import config as datasets_config
    from datasets import load_dataset

    if kind == "custom":
        if hub_id is None:
            raise ValueError("dataset 'custom' needs data_files (local JSONL) or a hub id")
        source, config = hub_id, None
    elif kind == "gsm8k":
        source, config = hub_id or GSM8K_HUB_ID, GSM8K_HUB_CONFIG
    elif kind == "math":
        source, config = hub_id or MATH_HUB_ID, None
    else:
        source, config = hub_id or MATH500_HUB_ID, None
        split = "test"  # MATH-500 only has a test split
    try:
        # offline, a copy in the datasets cache is used (the hub's file cache is not looked at)
        dataset = load_dataset(source, config, split=split)
    except ConnectionError as err:
        raise HubUnreachableError(source, split, str(err), bool(datasets_config.HF_HUB_OFFLINE), few_shot) from err
    return [(f"{source} [{split}], row {i}", dict(row)) for i, row in enumerate(dataset)]


MIXTURE_KEYS = ("name", "split", "data_files", "hub_id", "limit", "question_column", "answer_column")
MIXTURE_COLUMNS = ("idx", "prompt", "answer", "solution")


def load_mixture(
    entries: Sequence[dict],
    instruction: str | None = DEFAULT_INSTRUCTION,
    system_prompt: str | None = None,
):
    """Several sources concatenated for training (DeepSeekMath trains on GSM8K and MATH questions together).

    Each entry takes the keys of `load_math_dataset`: `name` (required), `split`, `data_files`, `hub_id`, `limit`,
    `question_column`, `answer_column`. The result keeps the columns every source has (`idx`, `prompt`, `answer`,
    `solution`) plus `source` (the entry's name), in entry order; shuffling is the trainer's job.
    """
    from datasets import concatenate_datasets

    if not entries:
        raise ValueError("dataset_mixture is empty")
    for number, entry in enumerate(entries):  # check every entry before loading any
        if not isinstance(entry, dict) or "name" not in entry:
            raise ValueError(f"dataset_mixture entry {number}: expected a mapping with a `name`, got {entry!r}")
        unknown = sorted(set(entry) - set(MIXTURE_KEYS))
        if unknown:
            raise ValueError(
                f"dataset_mixture entry {number} ({entry['name']}): unknown keys {unknown}; "
                f"expected some of {list(MIXTURE_KEYS)}"
            )
    parts = []
    for entry in entries:
        part = load_math_dataset(**entry, instruction=instruction, system_prompt=system_prompt)
        part = part.select_columns(list(MIXTURE_COLUMNS))
        parts.append(part.add_column("source", [entry["name"]] * len(part)))
    return concatenate_datasets(parts)
