"""Each evaluation protocol against the reference tool's own code (verbatim copies in tests/protocol_reference/:
single functions and constants are lifted out with `ast`, so the tools' heavy imports never run)."""

import __future__
import ast
import json
import random
import re
import types
import warnings
from pathlib import Path

import pytest
import yaml

from grpo_ext.protocols import (
    LM_EVAL_FEWSHOT_SEED,
    LM_EVAL_FLEXIBLE,
    LM_EVAL_IGNORE,
    QWEN_STOP,
    get_protocol,
    load_exemplars,
    minerva_gold,
    minerva_normalize_final_answer,
    minerva_unnormalized_answer,
    qwen_extract_answer,
    regex_filter,
    render_prompts,
)

REFERENCE = Path(__file__).resolve().parent / "protocol_reference"


def lift(filename: str, names: list[str], namespace: dict | None = None) -> dict:
    """Execute only the named top-level functions/classes/assignments of a reference file, in `namespace`."""
    with warnings.catch_warnings():  # the verbatim copies have invalid escapes ("\d" in a plain string): theirs
        warnings.simplefilter("ignore", (DeprecationWarning, SyntaxWarning))
        tree = ast.parse((REFERENCE / filename).read_text())
    wanted = []
    for node in tree.body:
        name = getattr(node, "name", None)
        if name is None and isinstance(node, ast.Assign):
            name = getattr(node.targets[0], "id", None)
        if name in names:
            wanted.append(node)
    assert {getattr(n, "name", None) or n.targets[0].id for n in wanted} == set(names)
    namespace = {"re": re, "random": random, **(namespace or {})}
    module = ast.Module(body=wanted, type_ignores=[])
    code = compile(module, filename, "exec", flags=__future__.annotations.compiler_flag)
    exec(code, namespace)  # annotations stay unevaluated, as under the file's own imports
    return namespace


def task_yaml(name: str) -> dict:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: f"!function {node.value}")
    return yaml.load((REFERENCE / name).read_text(), Loader=Loader)


def jinja(template: str, **values) -> str:
    import jinja2

    return jinja2.Template(template, keep_trailing_newline=True).render(**values)


def lm_eval_regex_filter():
    ns = lift("lm_eval_filters_extraction.py", ["RegexFilter"],
              {"Filter": object, "register_filter": lambda name: (lambda cls: cls)})  # fmt: skip

    def apply(text, pattern, group_select=0):
        out = ns["RegexFilter"](regex_pattern=pattern, group_select=group_select).apply([[text]], None)[0][0]
        return None if out == "[invalid]" else out

    return apply


def lm_eval_exact_match(prediction: str, reference: str, regexes, ignore_case=True) -> bool:
    """lm-eval's `exact_match_hf_evaluate` (api/metrics.py) for one pair: the regexes removed from both, then
    lower-cased, then equality."""
    for pattern in regexes:
        prediction, reference = re.sub(pattern, "", prediction), re.sub(pattern, "", reference)
    if ignore_case:
        prediction, reference = prediction.lower(), reference.lower()
    return prediction == reference


COMPLETIONS = [
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72",
    "She has $1,234.50 left. The answer is 1,234.50.",
    "The answer is -3. Then #### 5 and 7",
    "no numbers here",
    "costs $18.\n#### 18\n\nQuestion: next",
    "So 2 + 2 = 4 and 10 - 4 = 6.",
    "x = 0.5, so 3",
]


# ---------------------------------------------------------------------------------------------------------------------
# lm-evaluation-harness gsm8k and gsm8k_cot
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, yaml_file", [("lm_eval_gsm8k", "lm_eval_gsm8k.yaml"),
                                             ("gsm8k_cot_8shot", "lm_eval_gsm8k-cot.yaml")])  # fmt: skip
def test_gsm8k_protocols_stop_and_extract_like_lm_eval(name, yaml_file):
    task = task_yaml(yaml_file)
    protocol = get_protocol(name)
    assert protocol.stop == tuple(task["generation_kwargs"]["until"])
    assert protocol.num_few_shot == task["num_fewshot"]
    assert task["generation_kwargs"]["do_sample"] is False
    filters = {f["name"]: f["filter"] for f in task["filter_list"]}
    (metric,) = task["metric_list"]
    assert tuple(metric["regexes_to_ignore"]) == LM_EVAL_IGNORE and metric["ignore_case"] is True
    assert filters["flexible-extract"][0]["regex_pattern"] == LM_EVAL_FLEXIBLE
    reference_filter = lm_eval_regex_filter()
    reference_target = task["doc_to_target"]
    strict, flexible = protocol.scores
    assert (strict.name, flexible.name) == ("strict-match", "flexible-extract")
    gold_row = {"solution": "Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 1,234", "answer": "1234"}
    for text in COMPLETIONS + ["The answer is 1,234.", "#### 1234.", "#### 1,234"]:
        for score, spec in ((strict, filters["strict-match"][0]), (flexible, filters["flexible-extract"][0])):
            theirs = reference_filter(text, spec["regex_pattern"], spec.get("group_select", 0))
            ours = score.extract(text)
            assert (ours is None) == (theirs is None), (text, score.name)
            if theirs is None:
                continue
            target = jinja(reference_target, answer=gold_row["solution"])
            expected = lm_eval_exact_match(theirs, target, metric["regexes_to_ignore"])
            assert (ours == score.gold(gold_row)) == expected, (text, score.name, theirs, ours)
    # hand-worked: strict reads "#### x" (or "The answer is x."), flexible the last number-looking run
    if name == "lm_eval_gsm8k":
        assert [strict.extract(t) for t in COMPLETIONS[:4]] == ["72", None, "5", None]
    else:
        assert [strict.extract(t) for t in COMPLETIONS[:4]] == [None, "1234.50", "-3", None]
    assert [flexible.extract(t) for t in COMPLETIONS[:4]] == ["72", "1234.50", "7", None]


def test_gsm8k_extraction_equals_lm_eval_on_the_real_model_solutions(shared_data):
    """Both lm-eval filters and its exact match, ours against theirs, on GSM8K's 5,276 real GPT-3 solutions."""
    task = task_yaml("lm_eval_gsm8k.yaml")
    filters = {f["name"]: f["filter"][0] for f in task["filter_list"]}
    regexes = task["metric_list"][0]["regexes_to_ignore"]
    reference_filter = lm_eval_regex_filter()
    strict, flexible = get_protocol("lm_eval_gsm8k").scores
    golds = {json.loads(line)["question"]: json.loads(line)["answer"]
             for line in (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()}  # fmt: skip
    checked = agree = 0
    for line in (shared_data / "gsm8k" / "example_model_solutions.jsonl").read_text().splitlines():
        row = json.loads(line)
        gold_row = {"solution": golds[row["question"]]}
        for system in ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"):
            text = row[system]["solution"]
            for score in (strict, flexible):
                spec = filters[score.name]
                theirs = reference_filter(text, spec["regex_pattern"], spec.get("group_select", 0))
                ours = score.extract(text)
                expected = theirs is not None and lm_eval_exact_match(theirs, gold_row["solution"], regexes)
                checked += 1
                agree += (ours is not None and ours == score.gold(gold_row)) == expected
    assert checked == 2 * 5276 and agree == checked


def lm_eval_context(doc_to_text: str, shots, question: str) -> str:
    """lm-eval's `fewshot_context` as plain text: each shot's `build_qa_turn` (user text + target_delimiter " ",
    assistant target + fewshot_delimiter "\\n\\n"), then the problem's user text with no delimiter."""
    text = "".join(jinja(doc_to_text, question=q) + " " + a + "\n\n" for q, a in shots)
    return text + jinja(doc_to_text, question=question)


def test_lm_eval_gsm8k_prompt_samples_shots_like_lm_eval(shared_data):
    from grpo_ext.data import load_math_dataset

    task = task_yaml("lm_eval_gsm8k.yaml")
    assert task["fewshot_split"] == "train" and task["test_split"] == "test"
    test = list(load_math_dataset("gsm8k", data_files=str(shared_data / "gsm8k" / "test.jsonl"), limit=3))
    train_path = shared_data / "gsm8k" / "train.jsonl"
    train = list(load_math_dataset("gsm8k", data_files=str(train_path)))
    raw_train = [json.loads(line) for line in train_path.read_text().splitlines() if line.strip()]
    # lm-eval's default ContextSampler over the raw train docs, seeded as simple_evaluate does, drawn doc by doc
    sampler_ns = lift("lm_eval_samplers.py", ["ContextSampler"], {"Random": random.Random, "eval_logger": None})
    sampler = sampler_ns["ContextSampler"](raw_train, rnd=None).set_rnd(LM_EVAL_FEWSHOT_SEED)
    expected = []
    for row in test:
        shots = sampler.sample(n=task["num_fewshot"], eval_doc=None)
        target = task["doc_to_target"].split("#")[0].strip()  # "{{answer}}" (the rest is a YAML comment)
        expected.append(lm_eval_context(task["doc_to_text"], [(s["question"], jinja(target, answer=s["answer"]))
                                                              for s in shots], row["question"]))  # fmt: skip
    ours = render_prompts(get_protocol("lm_eval_gsm8k"), test, train, 5)
    assert ours == expected
    assert ours[0].endswith(f"\n\nQuestion: {test[0]['question']}\nAnswer:") and ours[0].count("Question:") == 6
    # problem 2 alone (e.g. after --resume) gets the same shots: draws follow the problem's position, not the batch
    assert render_prompts(get_protocol("lm_eval_gsm8k"), test[2:], train, 5) == ours[2:]
    with pytest.raises(ValueError, match="--few_shot_data_files"):
        render_prompts(get_protocol("lm_eval_gsm8k"), test, [], 5)


def test_gsm8k_cot_exemplars_and_prompt_are_lm_eval_s():
    task = task_yaml("lm_eval_gsm8k-cot.yaml")
    assert task["fewshot_config"]["sampler"] == "first_n"
    assert list(load_exemplars("gsm8k_cot_8shot")) == task["fewshot_config"]["samples"]
    row = {"idx": 0, "question": "Janet has 3 apples. She eats one. How many are left?"}
    expected = lm_eval_context(task["doc_to_text"], [(s["question"], s["target"]) for s in
                                                     task["fewshot_config"]["samples"]], row["question"])  # fmt: skip
    assert render_prompts(get_protocol("gsm8k_cot_8shot"), [row], [], 8) == [expected]
    assert expected.startswith("Q: There are 15 trees in the grove.") and expected.endswith(
        "Q: Janet has 3 apples. She eats one. How many are left?\nA:"
    )
    assert render_prompts(get_protocol("gsm8k_cot_8shot"), [row], [], 2)[0].count("Q:") == 3
    with pytest.raises(ValueError, match="8 fixed exemplars"):
        render_prompts(get_protocol("gsm8k_cot_8shot"), [row], [], 9)


# ---------------------------------------------------------------------------------------------------------------------
# lm-evaluation-harness minerva_math
# ---------------------------------------------------------------------------------------------------------------------


def minerva_reference():
    return lift(
        "lm_eval_minerva_math_utils.py",
        ["doc_to_text", "list_fewshot_samples", "last_boxed_only_string", "remove_boxed", "get_unnormalized_answer",
         "SUBSTITUTIONS", "REMOVED_EXPRESSIONS", "normalize_final_answer"],
        {},
    )  # fmt: skip


def test_minerva_prompt_stop_and_exemplars_are_lm_eval_s(shared_data):
    from grpo_ext.data import load_math_dataset

    ref = minerva_reference()
    task = task_yaml("lm_eval_minerva_math_algebra.yaml")
    protocol = get_protocol("minerva_math_4shot")
    assert protocol.stop == tuple(task["generation_kwargs"]["until"]) and protocol.num_few_shot == task["num_fewshot"]
    samples = ref["list_fewshot_samples"]()
    assert list(load_exemplars("minerva_math_4shot")) == [{"problem": s["problem"], "solution": s["solution"]}
                                                           for s in samples]  # fmt: skip
    rows = list(load_math_dataset("math500", data_files=str(shared_data / "math500" / "test.jsonl"), limit=2))
    # doc_to_target is the solution for few-shot docs; target_delimiter " ", fewshot_delimiter "\n\n"
    expected = [
        "".join(ref["doc_to_text"](s) + " " + s["solution"] + "\n\n" for s in samples)
        + ref["doc_to_text"]({"problem": row["question"]})
        for row in rows
    ]
    assert render_prompts(protocol, rows, [], 4) == expected
    assert expected[0].endswith("\n\nSolution:") and expected[0].count("Problem:\n") == 5


def test_minerva_extraction_and_gold_are_lm_eval_s(shared_data):
    ref = minerva_reference()
    texts = [
        "So $x=2$.\nFinal Answer: The final answer is $\\frac{14}{3}$. I hope it is correct.",
        "Final Answer: The final answer is $10$ dollars. I hope it is correct.\n\nProblem: next",
        "Final Answer: The final answer is 1,000,000",
        "The answer is \\boxed{5}.",
        "Final Answer: The final answer is $\\text{(A)}$.",
        "Final Answer: The final answer is $x = \\sqrt3$. I hope it is correct.",
    ]
    for text in texts:
        raw = ref["get_unnormalized_answer"](text)
        expected = None if raw == "[invalidanswer]" else ref["normalize_final_answer"](raw)
        assert get_protocol("minerva_math_4shot").scores[0].extract(text) == expected, text
    assert minerva_unnormalized_answer(texts[3]) is None
    assert [get_protocol("minerva_math_4shot").scores[0].extract(t) for t in texts] == [
        "\\frac{14}{3}", "10", None, None, None, "\\sqrt{3}"
    ]  # fmt: skip
    rows = [json.loads(line) for line in (shared_data / "math500" / "test.jsonl").read_text().splitlines()]
    for row in rows:  # lm-eval's process_docs answer, on all 500 MATH-500 solutions
        boxed = ref["last_boxed_only_string"](row["solution"])
        expected = None if boxed is None else ref["normalize_final_answer"](ref["remove_boxed"](boxed))
        assert minerva_gold(row["solution"]) == expected
    assert minerva_normalize_final_answer("\\frac12 \\text{ inches}") == ref["normalize_final_answer"](
        "\\frac12 \\text{ inches}"
    )


# ---------------------------------------------------------------------------------------------------------------------
# Qwen2.5-Math evaluation
# ---------------------------------------------------------------------------------------------------------------------


def test_qwen_prompts_and_stop_words_are_qwen_s():
    ns = lift("qwen25_math_utils.py", ["PROMPT_TEMPLATES", "construct_prompt"],
              {"load_prompt": lambda data_name, prompt_type, num_shots: []})  # fmt: skip
    tree = ast.parse((REFERENCE / "qwen25_math_math_eval.py").read_text())
    (stop_words,) = [ast.literal_eval(n.value) for n in ast.walk(tree)
                     if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "stop_words"]  # fmt: skip
    assert QWEN_STOP == tuple(stop_words)
    question = "  What is $1+1$?\n"
    for ours, theirs in (("qwen25_math_cot", "qwen25-math-cot"), ("qwen_boxed", "qwen-boxed")):
        args = types.SimpleNamespace(prompt_type=theirs, num_shots=0, adapt_few_shot=False)
        # parse_question strips the question before construct_prompt
        expected = ns["construct_prompt"]({"question": question.strip(), "gt_ans": "2"}, "math", args)
        assert render_prompts(get_protocol(ours), [{"idx": 0, "question": question}], [], 0) == [expected]
        assert get_protocol(ours).stop == QWEN_STOP and get_protocol(ours).max_new_tokens == 2048
    assert expected.endswith("\\boxed{}.<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("dataset, data_name", [("gsm8k", "gsm8k"), ("math500", "math")])
def test_qwen_fewshot_cot_prompt_and_stop_words_are_qwen_s(dataset, data_name):
    examples = lift("qwen25_math_examples.py", ["get_examples"])["get_examples"]()
    ns = lift("qwen25_math_utils.py", ["PROMPT_TEMPLATES", "construct_prompt"],
              {"load_prompt": lambda name, prompt_type, num_shots: examples[name][:num_shots]})  # fmt: skip
    protocol = get_protocol("qwen25_math_fewshot_cot")
    source = (REFERENCE / "qwen25_math_math_eval.py").read_text()
    assert re.search(r'if args.prompt_type in \["cot"\]:\n\s+stop_words.append\("\\n\\nQuestion:"\)', source)
    assert protocol.stop == (*QWEN_STOP, "\n\nQuestion:")
    assert [(e["question"], e["answer"]) for e in load_exemplars(f"qwen25_math_fewshot_cot_{data_name}")] == examples[
        data_name
    ]
    row = {"idx": 0, "question": " What is $2+2$? "}
    for shots in (0, 1, 4):
        args = types.SimpleNamespace(prompt_type="cot", num_shots=shots, adapt_few_shot=False)
        expected = ns["construct_prompt"]({"question": row["question"].strip(), "gt_ans": "4"}, data_name, args)
        assert render_prompts(protocol, [row], [], shots, dataset) == [expected]
    assert expected.endswith("\n\n\nQuestion: What is $2+2$?\nAnswer:") and expected.count("Question: ") == 5
    with pytest.raises(ValueError, match="zero-shot"):
        render_prompts(get_protocol("qwen25_math_cot"), [row], [], 2)


def test_qwen_extraction_is_qwen_s_before_strip_string():
    ns = lift("qwen25_math_parser.py", ["extract_answer"],
              {"strip_string": lambda s, skip_unit=False: s, "choice_answer_clean": None})  # fmt: skip
    texts = [
        "so \\boxed{\\frac{1}{2}} and then \\boxed{3}.",
        "The answer is: 42.",
        "We get 1,234 and 5.5",
        "Final Answer: The final answer is $7$. I hope it is correct.",
        "no answer",
        "\\boxed{a\n  + b}",
        "\\boxed 9$ end",
    ]
    for text in texts:
        theirs = ns["extract_answer"](text, "math")
        assert qwen_extract_answer(text) == (theirs or None), text
    assert [qwen_extract_answer(t) for t in texts] == ["3", " 42", "5.5", "7", None, "a+ b", "9"]


def test_every_protocol_is_documented_and_unknown_names_are_refused():
    with pytest.raises(ValueError, match="--protocol must be one of"):
        get_protocol("lm_eval")
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    from grpo_ext.protocols import PROTOCOLS

    assert all(f"`{name}`" in readme for name in PROTOCOLS)
