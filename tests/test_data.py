import json

import pytest

from grpo_ext.data import (
    DEFAULT_INSTRUCTION,
    DatasetFormatError,
    gsm8k_final_answer,
    gsm8k_rationale_as_boxed,
    load_math_dataset,
    make_prompt,
    parse_level,
    resolve_dataset_name,
)


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def test_make_prompt_zero_and_few_shot():
    assert make_prompt("1+1?") == [{"role": "user", "content": f"1+1?\n{DEFAULT_INSTRUCTION}"}]
    messages = make_prompt("Q2", instruction="Box it.", system_prompt="sys", few_shot=[("Q1", "A1")])
    assert messages == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "Q1\nBox it."},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2\nBox it."},
    ]
    assert make_prompt("Q", instruction=None) == [{"role": "user", "content": "Q"}]


def test_gsm8k_answer_parsing():
    assert gsm8k_final_answer("2 + 2 = <<2+2=4>>4\n#### 4") == "4"
    assert gsm8k_final_answer("...\n####  1,080 ") == "1080"
    assert gsm8k_final_answer("a #### 3 then #### -5") == "-5"
    for bad in ("no marker here", "ends with ####  ", None):
        with pytest.raises(ValueError):
            gsm8k_final_answer(bad)
    assert gsm8k_rationale_as_boxed("2 + 2 = <<2+2=4>>4\n#### 4") == "2 + 2 = 4\nThe final answer is \\boxed{4}."


def test_parse_level():
    assert [parse_level(v) for v in (3, "3", "Level 5", "level 1", "Level ?")] == [3, 3, 5, 1, None]
    with pytest.raises(ValueError):
        parse_level("hard")


def test_resolve_dataset_name():
    assert resolve_dataset_name("openai/gsm8k") == "gsm8k"
    assert resolve_dataset_name("HuggingFaceH4/MATH-500") == "math500"
    assert resolve_dataset_name("MATH") == "math"
    with pytest.raises(ValueError, match="Unknown dataset 'svamp'"):
        resolve_dataset_name("svamp")


def test_load_shared_gsm8k(shared_data):
    ds = load_math_dataset("gsm8k", data_files=str(shared_data / "gsm8k" / "test.jsonl"))
    assert len(ds) == 1319
    assert ds[0]["answer"] == "18" and ds[0]["idx"] == 0
    assert ds[0]["prompt"][0]["role"] == "user" and ds[0]["prompt"][0]["content"].startswith("Janet")
    assert ds[0]["solution"].endswith("#### 18")
    assert all("," not in a for a in ds["answer"])


def test_load_shared_math500(shared_data):
    ds = load_math_dataset("math500", data_files=str(shared_data / "math500" / "test.jsonl"))
    assert len(ds) == 500
    assert ds[0]["answer"] == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert ds[0]["subject"] == "Precalculus" and ds[0]["level"] == 2
    # level counts stated in shared/data/README.md
    assert [ds["level"].count(level) for level in range(1, 6)] == [43, 90, 105, 128, 134]


def test_few_shot_comes_from_its_own_source(shared_data):
    train, test = str(shared_data / "gsm8k" / "train.jsonl"), str(shared_data / "gsm8k" / "test.jsonl")
    ds = load_math_dataset("gsm8k", data_files=test, num_few_shot=2, few_shot_data_files=train, limit=3)
    assert len(ds) == 3 and ds["idx"] == [0, 1, 2] and ds[0]["answer"] == "18"  # evaluated rows untouched
    prompt = ds[0]["prompt"]
    assert [m["role"] for m in prompt] == ["user", "assistant", "user", "assistant", "user"]
    assert prompt[0]["content"].startswith("Natalia")  # first train question
    assert prompt[1]["content"].endswith("The final answer is \\boxed{72}.") and "<<" not in prompt[1]["content"]
    assert prompt[-1]["content"].startswith("Janet")
    with pytest.raises(ValueError, match="needs few_shot_data_files"):
        load_math_dataset("gsm8k", data_files=test, num_few_shot=2)


def test_hendrycks_style_rows_get_answer_from_boxed(tmp_path):
    path = write_jsonl(
        tmp_path / "math.jsonl",
        [{"problem": "What is 1/2 + 1/2?", "solution": "It is $\\boxed{1}$.", "level": "Level 1", "type": "Algebra"}],
    )
    row = load_math_dataset("math", data_files=path)[0]
    assert (row["answer"], row["subject"], row["level"]) == ("1", "Algebra", 1)


@pytest.mark.parametrize(
    "name, rows, message",
    [
        (
            "gsm8k",
            [{"question": "q", "answer": "#### 1"}, {"question": "q"}],
            r"line 2: missing column\(s\) \['answer'\]",
        ),
        ("gsm8k", [{"question": "q", "answer": "#### 1"}, "{not json"], r"line 2: not valid JSON"),
        ("gsm8k", [{"question": "q", "answer": "#### 1"}, {"question": "q", "answer": "7"}], r"line 2: .*####"),
        ("gsm8k", [[1, 2]], r"line 1: expected a JSON object"),
        ("math500", [{"problem": "p", "solution": "s", "answer": "1", "level": "x"}], r"line 1: level must be"),
        ("math500", [{"problem": "p", "solution": "s", "answer": ""}], r"line 1: column 'answer' must be"),
        ("math500", [{"problem": "", "solution": "s", "answer": "1"}], r"line 1: column 'problem' must be"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, name, rows, message):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DatasetFormatError, match=message) as info:
        load_math_dataset(name, data_files=path)
    assert "bad.jsonl" in str(info.value)


def test_non_utf8_line_and_negative_limit_are_clear_errors(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"question": "q", "answer": "#### 1"}\n{"question": "caf\xe9", "answer": "#### 2"}\n')
    with pytest.raises(DatasetFormatError, match=r"latin1\.jsonl, line 2: not UTF-8"):
        load_math_dataset("gsm8k", data_files=path)
    good = write_jsonl(tmp_path / "good.jsonl", [{"question": "q", "answer": "#### 1"}] * 3)
    with pytest.raises(ValueError, match="limit must be >= 0"):
        load_math_dataset("gsm8k", data_files=good, limit=-1)  # [:-1] would silently drop the last row


def test_rows_are_numbered_across_files(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"question": "q0", "answer": "#### 0"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"question": "q1", "answer": "#### 1"}, {"question": "q2"}])
    with pytest.raises(DatasetFormatError, match=r"b\.jsonl, line 2"):
        load_math_dataset("gsm8k", data_files=[a, b])
    b = write_jsonl(tmp_path / "b.jsonl", [{"question": "q1", "answer": "#### 1"}])
    ds = load_math_dataset("gsm8k", data_files=[a, b])
    assert ds["idx"] == [0, 1] and ds["answer"] == ["0", "1"]


def test_custom_dataset_columns(tmp_path):
    path = write_jsonl(
        tmp_path / "custom.jsonl",
        [
            {"q": "What is 2+3?", "gold": 5},
            {"q": [{"role": "user", "content": "Chat prompt"}], "gold": "x"},
        ],
    )
    ds = load_math_dataset("custom", data_files=path, question_column="q", answer_column="gold")
    assert ds["answer"] == ["5", "x"]
    assert ds[0]["prompt"] == make_prompt("What is 2+3?")
    assert ds[1]["prompt"] == [{"role": "user", "content": "Chat prompt"}]
    with pytest.raises(DatasetFormatError, match=r"custom\.jsonl, line 1: missing column\(s\) \['answer'\]"):
        load_math_dataset("custom", data_files=path, question_column="q")


def test_mixture_concatenates_sources(shared_data):
    from grpo_ext.data import load_mixture

    mixture = load_mixture(
        [
            {"name": "gsm8k", "data_files": str(shared_data / "gsm8k" / "train.jsonl"), "limit": 3},
            {"name": "math500", "data_files": str(shared_data / "math500" / "test.jsonl"), "limit": 2},
        ]
    )
    assert mixture["source"] == ["gsm8k"] * 3 + ["math500"] * 2
    assert mixture["answer"][0] == "72" and mixture["answer"][3] == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert set(mixture.column_names) == {"idx", "prompt", "answer", "solution", "source"}
    with pytest.raises(ValueError, match=r"entry 1 \(gsm8k\): unknown keys \['limt'\]"):
        load_mixture([{"name": "math500", "data_files": "x"}, {"name": "gsm8k", "limt": 3}])
    with pytest.raises(ValueError, match="entry 0: expected a mapping with a `name`"):
        load_mixture([{"split": "train"}])


def test_hub_sources_are_the_documented_ids(monkeypatch):
    import datasets

    calls = []
    hub = {
        "openai/gsm8k": [{"question": "q", "answer": "r\n#### 1,234"}],
        "DigitalLearningGmbH/MATH-lighteval": [
            {"problem": "p", "solution": r"so \boxed{\frac{1}{2}}", "level": "Level 3", "type": "Algebra"}
        ],
        "HuggingFaceH4/MATH-500": [
            {"problem": "p", "solution": "s", "answer": "7", "subject": "Prealgebra", "level": 2, "unique_id": "u"}
        ],
    }

    def fake_load_dataset(source, config=None, split=None):
        calls.append((source, config, split))
        return hub[source]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    gsm8k = load_math_dataset("gsm8k", split="test")
    math = load_math_dataset("math")
    math500 = load_math_dataset("math500", split="train")  # MATH-500 has only a test split
    assert calls == [("openai/gsm8k", "main", "test"), ("DigitalLearningGmbH/MATH-lighteval", None, "train"),
                     ("HuggingFaceH4/MATH-500", None, "test")]  # fmt: skip
    assert gsm8k[0]["answer"] == "1234"
    assert (math[0]["answer"], math[0]["subject"], math[0]["level"]) == (r"\frac{1}{2}", "Algebra", 3)
    assert (math500[0]["answer"], math500[0]["subject"], math500[0]["level"]) == ("7", "Prealgebra", 2)
    hub["openai/gsm8k"] = [{"question": "q"}]
    with pytest.raises(DatasetFormatError, match=r"openai/gsm8k \[train\], row 0: missing column"):
        load_math_dataset("gsm8k")
