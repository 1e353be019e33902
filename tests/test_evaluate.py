import itertools
import json
import math
from dataclasses import replace

import pytest

from grpo_ext.evaluation import (
    MathEvalCallback,
    SamplingParams,
    TransformersGenerator,
    equal_shard,
    majority_vote,
    markdown_table,
    pass_at_k,
    summarize,
)
from grpo_ext.protocols import PROTOCOLS
from launch.common import InputError
from launch.evaluate import evaluate

# ---------------------------------------------------------------------------------------------------------------------
# Pure metrics
# ---------------------------------------------------------------------------------------------------------------------


def test_pass_at_k_hand_worked():
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 - C(3,2)/C(4,2)
    assert pass_at_k(5, 2, 3) == pytest.approx(1 - 1 / 10)  # 1 - C(3,3)/C(5,3)
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 = c/n
    assert pass_at_k(10, 0, 5) == 0.0 and pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(4, 2, 3) == 1.0  # fewer than k wrong samples: every k-subset holds a correct one
    for bad in [(4, 5, 1), (4, 1, 0), (4, 1, 5)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)


@pytest.mark.parametrize("n, c, k", [(6, 2, 3), (7, 3, 2), (8, 1, 4), (5, 4, 1)])
def test_pass_at_k_matches_enumeration_of_subsets(n, c, k):
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(samples, k))
    assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))
    assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))


def test_majority_vote():
    assert majority_vote(["3", "4", "4", None]) == 1
    assert majority_vote(["3", "4"]) == 0  # tie: the group seen first
    assert majority_vote([None, None]) is None
    assert majority_vote([None, "7"]) == 1  # no-answer samples do not vote
    assert majority_vote(["x = 2", "x=2", "3", "3", "3"]) == 2
    assert majority_vote(["x = 2", "x=2", "3"]) == 0  # whitespace-normalised answers vote together
    assert majority_vote(["1 2", "12", "7", "7"]) == 2  # digits apart are not a number run together

    def numerically_equal(a, b):
        return float(a) == float(b)

    # without equivalence "0.5" and ".50" are separate groups and "2" wins the tie with the first seen ("0.5")
    assert majority_vote(["0.5", "2", "2", ".50"]) == 1
    assert majority_vote(["0.5", "2", "2", ".50", "0.500"], same=numerically_equal) == 0


def test_majority_vote_groups_equivalent_latex_with_rewards():
    from rewards import answers_match

    assert majority_vote(["1/3", "0.5", "\\frac{1}{2}"], same=lambda a, b: answers_match(a, b)) == 1


def test_scoring_extracts_like_the_training_reward():
    from grpo_ext.evaluation import score_problems
    from rewards import accuracy_reward

    completions = ["\\boxed{18}", "so it is 2", "She pays 7 dollars.", "\\boxed{x^2}"]
    golds = ["Natalia sold 9 + 9 = 18 clips.\n#### 18", "\\sqrt{4}", "7", "x^2"]
    # a GSM8K rationale is read to its `#### x`; no last-number fallback against a non-numeric gold
    expected = [1.0, 0.0, 1.0, 1.0]
    assert accuracy_reward(completions, answer=golds) == expected
    records = score_problems([[c] for c in completions], golds, ks=[1])
    assert [float(r["correct"]) for r in records] == expected
    assert [r["extracted_answer"] for r in records] == ["18", None, "7", "x^2"]


# (completion, gold column, verdict by hand): answers our extraction cannot read and math-verify's own extraction
# can, on either side; the cases are math-verify's own (tests/data/grader_cases.jsonl) and issue 10's
ONLY_MATH_VERIFY_READS = [
    ("$odd$", r"$\text{odd}$", 1.0),  # a bare word in math against \text{}: no fast-path prediction
    (r"The distance is $\boxed{125\textnormal{ miles}}.$", "$125$ miles", 1.0),  # gold in prose
    (r"$\boxed{1,2,3}$", "$1$ and $2$ and $3$", 1.0),  # a multi-answer gold in prose: all three given
    (r"$\boxed{1,2}$", "$1$ and $2$ and $3$", 0.0),  # one of its answers missing
    (r"\boxed{3}", r"The solutions are $\boxed{2}$ and $\boxed{3}$.", 0.0),  # several boxed golds, one given
    (r"$\boxed{2}$ and $\boxed{3}$", r"The solutions are $\boxed{2}$ and $\boxed{3}$.", 1.0),
]


def test_scoring_gives_the_training_reward_verdict_where_only_math_verify_reads_the_answer():
    from grpo_ext.evaluation import score_problems
    from rewards import accuracy_reward

    completions, golds, expected = (list(column) for column in zip(*ONLY_MATH_VERIFY_READS))
    assert accuracy_reward(completions, answer=golds) == expected
    records = score_problems([[c] for c in completions], golds, ks=[1])
    assert [float(r["correct"]) for r in records] == expected


def test_scoring_agrees_with_the_training_reward_where_only_math_verify_reads_the_public_grader_corpus():
    from pathlib import Path

    from grpo_ext.evaluation import score_problems
    from rewards import AccuracyReward, extract_gold, extract_prediction
    from rewards.agreement import load_cases

    # the cases of math-verify's, lighteval's, NeMo-Skills', hendrycks', Qwen's and TRL's own suites in which our
    # extraction misses the gold or the prediction (where the two scorings used to part: 6 of math-verify's did).
    # A generous deadline: only the verdicts are compared, and a loaded machine must not time one side out.
    cases = load_cases(Path(__file__).resolve().parent / "data" / "grader_cases.jsonl")
    unread = [c for c in cases if (g := extract_gold(c.gold)) is None or extract_prediction(c.prediction, g) is None]
    predictions, golds = [c.prediction for c in unread], [c.gold for c in unread]
    rewarded = AccuracyReward(timeout=30.0)(predictions, answer=golds)
    assert len(unread) >= 10 and rewarded.count(1.0) >= 6
    records = score_problems([[p] for p in predictions], golds, ks=[1], timeout=30.0)
    assert [float(r["correct"]) for r in records] == [float(bool(r)) for r in rewarded]


def test_majority_vote_counts_samples_read_against_a_gold_only_math_verify_reads():
    from grpo_ext.evaluation import score_problems

    # our extraction cannot read the gold; every sample still votes with its extracted answer, and the winner's
    # verdict is math-verify's reading of the whole texts, as in training
    samples = [r"$\boxed{1,2,3}$", r"so $\boxed{4}$", r"$\boxed{3, 2, 1}$"]
    (record,) = score_problems([samples], ["$1$ and $2$ and $3$"], ks=[1, 3])
    assert record["corrects"] == [True, False, True]
    assert record["extracted_answers"] == ["1,2,3", "4", "3, 2, 1"]
    assert record["maj"] == {"1": True, "3": True}


def test_summarize_and_table():
    records = [
        {"corrects": [True, False], "maj": {"1": True, "2": True}, "level": 1},
        {"corrects": [False, True], "maj": {"1": False, "2": False}, "level": 2},
    ]
    metrics = summarize(records, ks=[1, 2])
    assert metrics == {"count": 2, "pass@1": 0.5, "pass@2": 1.0, "maj@1": 0.5, "maj@2": 0.5}
    table = markdown_table(
        {
            "dataset": "d",
            "model": "m",
            "generation": {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8, "num_samples": 2},
            "overall": metrics,
            "by_level": {"1": summarize(records[:1], [1, 2])},
        }
    )
    assert "| group | problems | pass@1 | pass@2 | maj@1 | maj@2 |" in table
    assert (
        "| all | 2 | 50.0 | 100.0 | 50.0 | 50.0 |" in table
        and "| level 1 | 1 | 50.0 | 100.0 | 100.0 | 100.0 |" in table
    )


# ---------------------------------------------------------------------------------------------------------------------
# Scripted generator: answers are known, so accuracies are computed by hand
# ---------------------------------------------------------------------------------------------------------------------


def render_last_user_turn(messages):
    return messages[-1]["content"]


class ScriptedGenerator:
    """Returns fixed completions per prompt (looked up by the question text) and records what it was asked."""

    def __init__(self, by_question, fail_after_calls=None):
        self.by_question = by_question
        self.asked = []
        self.fail_after_calls = fail_after_calls

    def generate(self, prompts, n, params, seeds=None):
        if self.fail_after_calls is not None and len(self.asked) >= self.fail_after_calls:
            raise KeyboardInterrupt("simulated crash")
        self.asked.append(list(prompts))
        out = []
        for prompt in prompts:
            question = prompt.split("\n")[0]
            completions = self.by_question[question]
            assert len(completions) == n
            out.append(completions)
        return out


def read_rows(path, n=8):
    with open(path) as handle:
        return [json.loads(line) for line in itertools.islice(handle, n)]


def gsm8k_golds(shared_data):
    return [
        (r["question"].split("\n")[0], r["answer"].split("####")[-1].strip())
        for r in read_rows(shared_data / "gsm8k" / "test.jsonl")
    ]


def eval_args(data_files, out, *extra):
    return ["--data_files", str(data_files), "--limit", "8", "--output_dir", str(out), "--save_every", "3", *extra]


def test_greedy_gsm8k_exact_accuracy(shared_data, tmp_path, capsys):
    golds = gsm8k_golds(shared_data)
    by_question = {}
    for i, (question, gold) in enumerate(golds):
        if i == 4:
            completion = f"She pays {gold} dollars in total."  # no \boxed: the last-number fallback finds it
        elif i % 2 == 0:
            completion = f"Step by step... so the answer is \\boxed{{{gold}}}."
        elif i == 7:
            completion = "I cannot solve this."  # no answer at all
        else:
            completion = f"The answer is \\boxed{{{int(gold) + 1}}}."
        by_question[question] = [completion]
    out = tmp_path / "gsm8k"
    summary = evaluate(
        eval_args(shared_data / "gsm8k" / "test.jsonl", out, "--dataset_name", "gsm8k"),
        generator=ScriptedGenerator(by_question),
        render=render_last_user_turn,
    )
    assert summary["overall"] == {"count": 8, "pass@1": 4 / 8}
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["idx"] for r in records] == list(range(8))
    assert [r["correct"] for r in records] == [True, False, True, False, True, False, True, False]
    assert records[4]["extracted_answer"] == "20" and records[7]["extracted_answer"] is None
    assert records[1]["gold"] == "3" and records[1]["extracted_answer"] == "4"
    assert set(records[0]) >= {"prompt", "completion", "extracted_answer", "gold", "correct"}
    assert json.loads((out / "summary.json").read_text())["overall"]["pass@1"] == 0.5
    assert "| all | 8 | 50.0 |" in (out / "summary.md").read_text()
    # the table is printed, then where each output went, as full paths
    printed = capsys.readouterr().out
    assert (out / "summary.md").read_text() in printed
    for name in ("summary.json", "summary.md", "samples.jsonl", "run_config.json"):
        assert f"  {out / name}  (" in printed and (out / name).is_file()  # tmp_path is absolute


def test_greedy_math500_exact_accuracy_per_level_and_subject(shared_data, tmp_path):
    rows = read_rows(shared_data / "math500" / "test.jsonl")
    by_question = {}
    for i, row in enumerate(rows):
        gold = row["answer"]
        if i == 2:
            gold = "\\dfrac{14}{3}"  # equivalent form of \frac{14}{3}
        answer = gold if i % 2 == 0 else "12345"
        by_question[row["problem"].split("\n")[0]] = [f"Reasoning.\nThe final answer is $\\boxed{{{answer}}}$."]
    out = tmp_path / "math500"
    summary = evaluate(
        eval_args(shared_data / "math500" / "test.jsonl", out, "--dataset_name", "math500"),
        generator=ScriptedGenerator(by_question),
        render=render_last_user_turn,
    )
    # levels of rows 0-7: 2 5 3 3 2 2 3 4; rows 0, 2, 4, 6 are correct
    assert summary["overall"] == {"count": 8, "pass@1": 0.5}
    assert {k: (v["count"], v["pass@1"]) for k, v in summary["by_level"].items()} == {
        "2": (3, 2 / 3),
        "3": (3, 2 / 3),
        "4": (1, 0.0),
        "5": (1, 0.0),
    }
    assert {k: (v["count"], v["pass@1"]) for k, v in summary["by_subject"].items()} == {
        "Algebra": (2, 1.0),
        "Intermediate Algebra": (1, 0.0),
        "Number Theory": (2, 0.5),
        "Prealgebra": (1, 0.0),
        "Precalculus": (2, 0.5),
    }
    assert "| level 2 | 3 | 66.7 |" in (out / "summary.md").read_text()


def test_sampling_pass_at_k_and_maj_at_k_exact(shared_data, tmp_path):
    golds = gsm8k_golds(shared_data)
    by_question = {}
    for i, (question, gold) in enumerate(golds):
        g, w1, w2, none = (
            f"\\boxed{{{gold}}}",
            f"\\boxed{{{int(gold) + 1}}}",
            f"\\boxed{{{int(gold) + 2}}}",
            "no idea",
        )
        patterns = {
            0: [g, g, g, g],
            1: [w1, w1, w1, w1],
            2: [g, w1, w1, none],
            3: [w1, g, g, w2],
            4: [none, none, none, g],
        }
        by_question[question] = patterns.get(i, [w1, w2, w1, g])
    summary = evaluate(
        eval_args(shared_data / "gsm8k" / "test.jsonl", tmp_path / "s", "--temperature", "0.7", "--num_samples", "4")
        + ["--k", "1", "2", "4"],
        generator=ScriptedGenerator(by_question),
        render=render_last_user_turn,
    )
    # per problem (c of 4): 4, 0, 1, 2, 1, 1, 1, 1
    expected = {
        "count": 8,
        "pass@1": (1 + 0 + 0.25 + 0.5 + 0.25 + 3 * 0.25) / 8,
        "pass@2": (1 + 0 + 0.5 + 5 / 6 + 0.5 + 3 * 0.5) / 8,
        "pass@4": (1 + 0 + 1 + 1 + 1 + 3 * 1) / 8,
        "maj@1": 2 / 8,  # first sample correct: problems 0 and 2
        "maj@2": 2 / 8,  # ties go to the first answer seen: 0 and 2
        "maj@4": 3 / 8,  # problem 0, 3 (g twice), 4 (g the only vote)
    }
    assert summary["overall"].keys() == expected.keys()
    for key, value in expected.items():
        assert summary["overall"][key] == pytest.approx(value), key


def test_resume_continues_a_partial_run(shared_data, tmp_path):
    golds = gsm8k_golds(shared_data)
    by_question = {q: [f"\\boxed{{{g}}}" if i < 3 else "\\boxed{0}"] for i, (q, g) in enumerate(golds)}
    out = tmp_path / "resume"
    args = eval_args(shared_data / "gsm8k" / "test.jsonl", out)
    crashing = ScriptedGenerator(by_question, fail_after_calls=2)  # save_every 3: two chunks (6 rows) then a crash
    with pytest.raises(KeyboardInterrupt):
        evaluate(args, generator=crashing, render=render_last_user_turn)
    assert len((out / "samples.jsonl").read_text().splitlines()) == 6
    with pytest.raises(InputError, match="samples.jsonl exists: pass --resume"):
        evaluate(args, generator=ScriptedGenerator(by_question), render=render_last_user_turn)
    # one line naming what changed, not the two whole settings dicts
    with pytest.raises(InputError, match=r"different settings: generation\.max_new_tokens: \d+ -> 7$"):
        evaluate(
            args + ["--resume", "--max_new_tokens", "7"],
            generator=ScriptedGenerator(by_question),
            render=render_last_user_turn,
        )
    resumed = ScriptedGenerator(by_question)
    summary = evaluate(args + ["--resume"], generator=resumed, render=render_last_user_turn)
    assert [p.split("\n")[0] for batch in resumed.asked for p in batch] == [q for q, _ in golds[6:]]
    assert summary["overall"] == {"count": 8, "pass@1": 3 / 8}
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted(r["idx"] for r in records) == list(range(8))


def test_refuses_to_run_as_several_processes(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(InputError, match="single process"):
        evaluate(["--dataset_name", "gsm8k"])


def test_bad_options_are_rejected(tmp_path):
    # a misspelt option is named with the closest valid one, before the other options' values are checked
    with pytest.raises(InputError, match=r"^unknown option --num_sample; did you mean --num_samples\?$"):
        evaluate(["--num_sample", "4", "--k", "4"])
    with pytest.raises(InputError, match=r"^unknown option --tempreature; did you mean --temperature\?$"):
        evaluate(["--tempreature=0.5"])
    with pytest.raises(InputError, match=r"unrecognized arguments: 4$"):
        evaluate(["--limit", "2", "4"])
    config = tmp_path / "c.yaml"
    config.write_text("dataset_name: gsm8k\ntemprature: 0.5\n")
    with pytest.raises(InputError, match=r"c\.yaml: unknown option temprature; did you mean temperature\?$"):
        evaluate(["--config", str(config)])
    with pytest.raises(InputError, match=r"--config .*missing\.yaml: no such file"):
        evaluate(["--config", str(tmp_path / "missing.yaml")])
    with pytest.raises(ValueError, match="needs sampling"):
        evaluate(["--num_samples", "4", "--k", "1"])
    with pytest.raises(ValueError, match="k values"):
        evaluate(["--num_samples", "4", "--temperature", "1", "--k", "8"])
    for option, value in [("--limit", "-1"), ("--temperature", "-1"), ("--top_p", "0"), ("--max_new_tokens", "0"),
                          ("--batch_size", "0"), ("--save_every", "0"), ("--answer_timeout", "0")]:
        with pytest.raises(ValueError, match=option):
            evaluate([option, value])


# ---------------------------------------------------------------------------------------------------------------------
# Bad input and unreachable hub data: one line, before any model loads
# ---------------------------------------------------------------------------------------------------------------------


class ModelLoaded(Exception):
    """Raised where evaluate.py loads the tokenizer or the model: an error a test expects must come before it."""


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """Offline mode with an empty datasets cache (returned, for tests to fill), and no model loading."""
    import datasets
    import transformers

    cache = tmp_path / "datasets-cache"
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))

    def load(*args, **kwargs):
        raise ModelLoaded

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", load)
    monkeypatch.setattr(TransformersGenerator, "from_pretrained", load)
    return cache


def cache_hub_dataset(cache, repo_id, config_name, splits):
    """`repo_id` laid out in a datasets cache as a download leaves it (namespace___name/config/version/hash, an Arrow
    file per split), built by datasets' own JSON builder from local files; offline, load_dataset falls back to it."""
    from datasets.data_files import DataFilesDict
    from datasets.naming import camelcase_to_snakecase
    from datasets.packaged_modules.json.json import Json, JsonConfig

    namespace, name = repo_id.split("/")
    files = DataFilesDict.from_local_or_remote({split: [str(path)] for split, path in splits.items()})

    class Builder(Json):
        BUILDER_CONFIGS = (JsonConfig(name=config_name, data_files=files),)

    Builder(cache_dir=str(cache), dataset_name=name, config_name=config_name, hash="local").download_and_prepare()
    (cache / camelcase_to_snakecase(name)).rename(cache / f"{namespace}___{camelcase_to_snakecase(name)}")


def required_shots(name, dataset):
    """--num_few_shot for the protocols with no default (the base-model set-ups)."""
    return {"qwen25_math_fewshot_cot": ["--num_few_shot", "4"],
            "deepseek_math": ["--num_few_shot", "8" if dataset == "gsm8k" else "4"]}.get(name, [])  # fmt: skip


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_offline_each_protocol_names_the_option_for_hub_data_before_a_model_loads(
    name, offline_hub, shared_data, tiny_model_path, tmp_path
):
    """Issue 19: offline, a protocol's hub reads fail at once (no retries), before the model, with the option that
    reads a local file instead: the problems (--data_files), and lm_eval_gsm8k's shots, which it samples from
    GSM8K's train split (--few_shot_data_files). The other protocols' exemplars are built in: with --data_files
    they get as far as the model."""
    from grpo_ext.data import GSM8K_HUB_ID

    protocol = PROTOCOLS[name]
    dataset = "gsm8k" if "gsm8k" in protocol.datasets else "math500"
    common = ["--protocol", name, "--dataset_name", dataset, "--model_name_or_path", tiny_model_path, "--limit", "2",
              "--output_dir", str(tmp_path / "out"), *required_shots(name, dataset)]  # fmt: skip
    offline = r"which offline mode cannot reach \(and the datasets cache holds no copy\)"
    with pytest.raises(InputError, match=rf"^--dataset_name {dataset} reads its problems from \S+'s test split on "
                                         rf"the hub, {offline}: pass --data_files path/to/{dataset}/test\.jsonl$"):  # fmt: skip
        evaluate(common)
    local = [*common, "--data_files", str(shared_data / dataset / "test.jsonl")]
    if protocol.samples_train_shots:
        with pytest.raises(InputError, match=rf"^--protocol {name} takes its few-shot examples from {GSM8K_HUB_ID}'s "
                                             rf"train split on the hub, {offline}: pass --few_shot_data_files "
                                             r"path/to/gsm8k/train\.jsonl$"):  # fmt: skip
            evaluate(local)
        local += ["--few_shot_data_files", str(shared_data / "gsm8k" / "train.jsonl")]
    with pytest.raises(ModelLoaded):
        evaluate(local)


class AnswersZero:
    def generate(self, prompts, n, params, seeds=None):
        return [["#### 0"] * n for _ in prompts]


def test_offline_hub_data_in_the_datasets_cache_is_used_not_refused(offline_hub, shared_data, tmp_path):
    """Offline, load_dataset reads a dataset its cache holds, so that is not refused: lm_eval_gsm8k with GSM8K's
    test and train splits cached runs with no file given. Chat few-shot turns on MATH-500 come from MATH's train
    split, which is not cached: that read is the one named."""
    from grpo_ext import data

    gsm8k = shared_data / "gsm8k"
    cache_hub_dataset(offline_hub, data.GSM8K_HUB_ID, data.GSM8K_HUB_CONFIG,
                      {"train": gsm8k / "train.jsonl", "test": gsm8k / "test.jsonl"})  # fmt: skip
    out = tmp_path / "cached"
    summary = evaluate(["--protocol", "lm_eval_gsm8k", "--limit", "2", "--output_dir", str(out)],
                       generator=AnswersZero())  # fmt: skip
    assert summary["overall"]["count"] == 2 and summary["data_files"] is None
    first = json.loads((out / "samples.jsonl").read_text().splitlines()[0])
    assert first["prompt"].count("Question: ") == PROTOCOLS["lm_eval_gsm8k"].num_few_shot + 1
    assert first["prompt"].endswith(f"Question: {read_rows(gsm8k / 'test.jsonl', 1)[0]['question']}\nAnswer:")

    cache_hub_dataset(offline_hub, data.MATH500_HUB_ID, "default", {"test": shared_data / "math500" / "test.jsonl"})
    with pytest.raises(InputError, match=rf"^--num_few_shot 2 takes its examples from {data.MATH_HUB_ID}'s train "
                                         r"split on the hub, which offline mode cannot reach .*: pass "
                                         r"--few_shot_data_files path/to/math/train\.jsonl$"):  # fmt: skip
        evaluate(["--dataset_name", "math500", "--num_few_shot", "2", "--output_dir", str(tmp_path / "m")],
                 generator=AnswersZero(), render=render_last_user_turn)  # fmt: skip


def test_hub_unreachable_online_is_one_line_naming_the_option(monkeypatch, offline_hub, shared_data, tmp_path):
    """Online with no network, datasets raises a ConnectionError after its retries: the same one line, with the
    reason instead of offline mode (simulated: the retries take half a minute)."""
    import datasets

    def unreachable(path, *args, **kwargs):
        raise ConnectionError(f"Couldn't reach '{path}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    args = ["--protocol", "lm_eval_gsm8k", "--data_files", str(shared_data / "gsm8k" / "test.jsonl"), "--limit", "2",
            "--output_dir", str(tmp_path / "out")]  # fmt: skip
    with pytest.raises(InputError, match=r"^--protocol lm_eval_gsm8k takes its few-shot examples from \S+'s train "
                                         r"split on the hub, which could not be reached \(Couldn't reach '\S+' on the "
                                         r"Hub \(LocalEntryNotFoundError\)\): pass --few_shot_data_files "
                                         r"path/to/gsm8k/train\.jsonl$"):  # fmt: skip
        evaluate(args, generator=AnswersZero())


def test_bad_input_ends_the_command_with_one_line_before_a_model_loads(
    offline_hub, shared_data, tiny_model_path, tmp_path, capsys
):
    """Through main() (launch.common.run_entry_point): each bad input ends with exit status 2 and one line,
    `grpo-ext-evaluate: error: ...`, before the model loads (issue 19: a bad model path printed 15 lines)."""
    from launch.evaluate import main

    bad_rows = tmp_path / "bad.jsonl"
    bad_rows.write_text('{"question": "1 + 1?", "answer": "#### 2"}\n{"question": \n')
    used = tmp_path / "used"
    used.mkdir()
    (used / "samples.jsonl").write_text("")
    model, data = ["--model_name_or_path", tiny_model_path], ["--data_files", str(shared_data / "gsm8k" / "test.jsonl")]
    no_model = tmp_path / "no-model"
    cases = [
        (["--num_sample", "4"], "unknown option --num_sample; did you mean --num_samples?"),
        (["--model_name_or_path", str(no_model), *data], f"--model_name_or_path {no_model}: no such file"),
        ([*model, "--protocol", "lm_eval"], "--protocol must be one of "),
        ([*model, "--data_files", str(tmp_path / "missing.jsonl")], f"--data_files {tmp_path / 'missing.jsonl'}: "),
        ([*model, "--data_files", str(bad_rows)], f"{bad_rows}, line 2: not valid JSON"),
        ([*model, *data, "--output_dir", str(used)], f"{used / 'samples.jsonl'} exists: pass --resume"),
        ([*model, *data, "--dataset_name", "gsm9k"], "Unknown dataset 'gsm9k'"),
        ([*model, *data, "--protocol", "deepseek_math", "--num_few_shot", "3"], "--num_few_shot 3: protocol "),
        ([*model, *data, "--protocol", "minerva_math_4shot"], "--protocol minerva_math_4shot is for "),
    ]
    for argv, start in cases:
        with pytest.raises(SystemExit) as exited:
            main(["--output_dir", str(tmp_path / "out"), *argv])
        err = capsys.readouterr().err
        assert exited.value.code == 2 and len(err.splitlines()) == 1, err
        assert err.startswith(f"grpo-ext-evaluate: error: {start}"), err


def test_command_errors_are_one_line_on_stderr(shared_data, tiny_model_path, tmp_path):
    """The real command in a fresh process, offline with an empty Hugging Face home: lm_eval_gsm8k without a
    few-shot file (issue 19: 20 lines of ConnectionError) and a model path that does not exist (15 lines of
    traceback) each end with exit status 2 and one line on stderr."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    data = ["--data_files", str(shared_data / "gsm8k" / "test.jsonl"), "--output_dir", str(tmp_path / "out")]
    cases = {
        "--protocol lm_eval_gsm8k takes its few-shot examples from ": ["--protocol", "lm_eval_gsm8k", *data,
                                                                       "--model_name_or_path", tiny_model_path],
        f"--model_name_or_path {tmp_path / 'no-model'}: no such": ["--model_name_or_path", str(tmp_path / "no-model"),
                                                                   *data],
    }  # fmt: skip
    for start, args in cases.items():
        result = subprocess.run([sys.executable, "-m", "launch.evaluate", *args], cwd=Path(__file__).parent.parent,
                                env=env, capture_output=True, text=True, check=False)  # fmt: skip
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr[-3000:]
        assert result.stderr.startswith(f"grpo-ext-evaluate: error: {start}"), result.stderr


# ---------------------------------------------------------------------------------------------------------------------
# Real backend on the tiny model
# ---------------------------------------------------------------------------------------------------------------------


def test_transformers_backend_end_to_end_with_resume(shared_data, tiny_model_path, tmp_path):
    out = tmp_path / "tiny"
    common = ["--model_name_or_path", tiny_model_path, "--data_files", str(shared_data / "gsm8k" / "test.jsonl")]
    common += ["--output_dir", str(out), "--max_new_tokens", "6", "--batch_size", "3", "--save_every", "4"]
    first = evaluate(common + ["--limit", "4"])
    assert first["overall"]["count"] == 4
    second = evaluate(common + ["--limit", "6", "--resume"])
    assert second["overall"]["count"] == 6
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["idx"] for r in records] == list(range(6))
    assert all(r["prompt"].endswith("<|im_start|>assistant\n") for r in records)
    assert all(isinstance(r["completion"], str) and isinstance(r["correct"], bool) for r in records)
    assert second["overall"]["pass@1"] == sum(r["correct"] for r in records) / 6
    assert (out / "summary.md").exists()


def test_transformers_generator_batching_matches_one_by_one(tiny_model_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in ("1+1?", "Natalia sold clips to 48 of her friends in April. How many?", "x^2 = 4, x = ?")
    ]
    params = SamplingParams(max_new_tokens=5)
    batched = TransformersGenerator.from_pretrained(tiny_model_path, batch_size=3, dtype="float32")
    single = TransformersGenerator(batched.model, tokenizer, batch_size=1)
    assert batched.generate(prompts, 1, params) == single.generate(prompts, 1, params)
    sampled = batched.generate(prompts, 2, SamplingParams(temperature=1.0, max_new_tokens=5))
    assert [len(s) for s in sampled] == [2, 2, 2]


def test_generation_stops_at_the_models_positions(tiny_model_path):
    """--max_new_tokens past max_position_embeddings (the tiny model has 1,024, the chat protocol's default is
    1,024 new tokens) is capped at the room the prompt leaves, as vLLM caps at max_model_len."""
    from grpo_ext.evaluation import new_tokens_within

    assert new_tokens_within(1024, 30, 1024) == 994
    assert new_tokens_within(1024, 30, 100) == 100
    assert new_tokens_within(1024, 1030, 100) == 0
    assert new_tokens_within(None, 30, 1024) == 1024

    generator = TransformersGenerator.from_pretrained(tiny_model_path, batch_size=2, dtype="float32")
    asked = []
    generate = generator.model.generate

    def recording_generate(**kwargs):
        asked.append(kwargs["generation_config"].max_new_tokens)
        return generate(**kwargs)

    generator.model.generate = recording_generate
    prompt_length = len(generator.tokenizer("1+1?")["input_ids"])
    generator.model.config.max_position_embeddings = prompt_length + 3
    out = generator.generate(["1+1?"], 1, SamplingParams(max_new_tokens=20, stop=()))
    assert asked == [3] and len(generator.tokenizer(out[0][0], add_special_tokens=False)["input_ids"]) <= 3
    generator.model.config.max_position_embeddings = prompt_length
    assert generator.generate(["1+1?"], 1, SamplingParams(max_new_tokens=20)) == [[""]] and asked == [3]


def test_eval_callback_logs_accuracy_during_training(shared_data, tiny_model_path, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from grpo_ext.data import load_math_dataset

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    ids = tokenizer("1 + 1 = 2")["input_ids"]
    train = Dataset.from_list([{"input_ids": ids, "labels": ids}] * 4)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=2,
        report_to=[],
        use_cpu=True,
        logging_steps=100,
        save_strategy="no",
    )
    trainer = Trainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    problems = load_math_dataset("gsm8k", data_files=str(shared_data / "gsm8k" / "test.jsonl"), limit=3)
    MathEvalCallback(trainer, problems, eval_steps=1, max_new_tokens=4).attach()
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "math_eval/accuracy" in entry]
    assert [entry["step"] for entry in logged] == [1, 2]
    assert all("loss" in entry for entry in logged)  # merged into the step's regular log row
    assert all(entry["math_eval/count"] == 3 and 0 <= entry["math_eval/accuracy"] <= 1 for entry in logged)


def test_console_script_runs_and_exits_zero(shared_data, tiny_model_path, tmp_path):
    """`grpo-ext-evaluate` as installed (the wrapper calls sys.exit(main()), so main must return None)."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    script = shutil.which("grpo-ext-evaluate") or str(Path(sys.executable).parent / "grpo-ext-evaluate")
    out = tmp_path / "cli"
    result = subprocess.run(
        [script, "--model_name_or_path", tiny_model_path, "--dataset_name", "math500", "--data_files",
         str(shared_data / "math500" / "test.jsonl"), "--limit", "2", "--max_new_tokens", "4", "--output_dir", str(out),
         "--num_few_shot", "1", "--few_shot_data_files", str(shared_data / "math500" / "test.jsonl")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["count"] == 2 and set(summary["by_level"]) == {"2", "5"}
    first = json.loads((out / "samples.jsonl").read_text().splitlines()[0])
    assert first["prompt"].count("<|im_start|>user") == 2  # one worked example, then the question


def test_vllm_generator_maps_sampling_params_and_keeps_order(monkeypatch):
    """The vLLM glue, against a stand-in `vllm` module (vLLM itself needs a GPU and is not installed in CI): every
    decoding setting explicit, the model's generation_config.json off, one seed per prompt, the stop strings, the
    prompts as token ids (`encode_prompts`)."""
    import sys
    import types

    from grpo_ext.evaluation import VLLMGenerator

    calls = {}

    class FakeSamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class FakeLLM:
        def __init__(self, model, **kwargs):
            calls["llm"] = {"model": model, **kwargs}

        def get_tokenizer(self):
            return FakeTokenizer()

        def generate(self, prompts, sampling, use_tqdm):
            calls["sampling"] = [s.kwargs for s in sampling]
            calls["prompts"] = prompts
            return [
                types.SimpleNamespace(outputs=[
                    types.SimpleNamespace(text=f"{''.join(map(chr, p['prompt_token_ids']))}-{j}")
                    for j in range(s.kwargs["n"])
                ])
                for p, s in zip(prompts, sampling)
            ]  # fmt: skip

    class FakeTokenizer:  # <|im_end|> is one token, "Question:" two; prompts "a" and "b" are [97] and [98]
        bos_token = None

        def encode(self, text, add_special_tokens):
            return [7] if "im_end" in text else [1, 2]

        def __call__(self, text, add_special_tokens):
            return {"input_ids": [ord(c) for c in text]}

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=FakeLLM, SamplingParams=FakeSamplingParams))
    generator = VLLMGenerator("some/model", tensor_parallel_size=2)
    assert calls["llm"] == {"model": "some/model", "tensor_parallel_size": 2, "generation_config": "vllm"}
    params = SamplingParams(temperature=0.6, top_p=0.95, max_new_tokens=64, seed=7, top_k=20,
                            stop=("Question:", "<|im_end|>"))  # fmt: skip
    out = generator.generate(["a", "b"], 3, params, seeds=[11, 12])
    assert out == [["a-0", "a-1", "a-2"], ["b-0", "b-1", "b-2"]]
    assert calls["prompts"] == [{"prompt_token_ids": [97]}, {"prompt_token_ids": [98]}]  # tokenized here
    common = {"n": 3, "temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.0, "repetition_penalty": 1.0,
              "max_tokens": 64, "stop": ["Question:", "<|im_end|>"], "stop_token_ids": [7]}  # fmt: skip
    assert calls["sampling"] == [{**common, "seed": 11}, {**common, "seed": 12}]
    generator.generate(["a"], 1, SamplingParams(temperature=0.0, top_p=0.5, top_k=5, max_new_tokens=8))
    greedy = calls["sampling"][0]
    assert (greedy["temperature"], greedy["top_p"], greedy["top_k"], greedy["seed"]) == (0.0, 1.0, -1, 0)


def test_real_model_solutions_scored_like_the_dataset_authors(shared_data, tmp_path):
    """Replay the 4 real GPT-3 solution sets of GSM8K test (5,276 labelled completions) as 4 samples per problem:
    every sample's `correct` must equal the authors' `is_correct`, and pass@k / maj@k follow from them."""
    systems = ["6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"]
    with open(shared_data / "gsm8k" / "example_model_solutions.jsonl") as handle:
        by_question = {}
        for line in handle:
            row = json.loads(line)
            by_question[row["question"]] = (
                [row[s]["solution"] for s in systems],
                [row[s]["is_correct"] for s in systems],
            )

    class Replay:
        def generate(self, prompts, n, params, seeds=None):
            return [by_question[p.rsplit("\n", 1)[0]][0] for p in prompts]

    summary = evaluate(
        ["--data_files", str(shared_data / "gsm8k" / "test.jsonl"), "--output_dir", str(tmp_path / "replay"),
         "--temperature", "1", "--num_samples", "4", "--k", "1", "2", "4", "--save_every", "2000"],
        generator=Replay(), render=render_last_user_turn,
    )  # fmt: skip
    records = [json.loads(line) for line in (tmp_path / "replay" / "samples.jsonl").read_text().splitlines()]
    labels = [by_question[r["prompt"].rsplit("\n", 1)[0]][1] for r in records]
    disagreements = [(r["idx"], i) for r, lab in zip(records, labels) for i in range(4) if r["corrects"][i] != lab[i]]
    assert disagreements == []
    assert summary["overall"]["count"] == 1319
    assert summary["overall"]["pass@1"] == pytest.approx(2001 / 5276)  # labelled correct, per shared/data/README.md
    assert summary["overall"]["pass@4"] == pytest.approx(sum(any(lab) for lab in labels) / 1319)
    assert summary["overall"]["pass@2"] == pytest.approx(sum(pass_at_k(4, sum(lab), 2) for lab in labels) / 1319)
    assert summary["overall"]["maj@1"] == pytest.approx(sum(lab[0] for lab in labels) / 1319)
    assert summary["overall"]["maj@4"] <= summary["overall"]["pass@4"]


def test_math500_reference_solutions_score_100_percent_per_level_and_subject(shared_data, tmp_path):
    """The reference solutions as completions: extraction + equivalence must accept every one (MATH-500's `answer`
    column against its own solution's last \\boxed{}), and the per-level counts are those of the data README."""
    path = str(shared_data / "math500" / "test.jsonl")
    solutions = {row["problem"]: row["solution"] for row in read_rows(path, n=500)}

    class Replay:
        def generate(self, prompts, n, params, seeds=None):
            return [[solutions[p.rsplit("\n", 1)[0]]] for p in prompts]

    args = ["--dataset_name", "math500", "--data_files", path, "--output_dir", str(tmp_path / "ref")]
    summary = evaluate(args + ["--save_every", "500"], generator=Replay(), render=render_last_user_turn)
    assert summary["overall"] == {"count": 500, "pass@1": 1.0}
    assert {k: v["count"] for k, v in summary["by_level"].items()} == {"1": 43, "2": 90, "3": 105, "4": 128, "5": 134}
    assert sum(v["count"] for v in summary["by_subject"].values()) == 500
    assert all(v["pass@1"] == 1.0 for v in summary["by_subject"].values())


def test_equal_shard_gives_every_rank_the_same_rows_and_counts_each_problem_once():
    rows = ["a", "b", "c", "d", "e"]
    assert equal_shard(rows, 0, 2) == (["a", "b", "c"], 3)
    assert equal_shard(rows, 1, 2) == (["d", "e", "a"], 2)  # padded by cycling; the pad is not counted
    assert [equal_shard(["a"], r, 3) for r in range(3)] == [(["a"], 1), (["a"], 0), (["a"], 0)]
    assert equal_shard([], 0, 4) == ([], 0)
    for n in range(0, 12):
        for p in range(1, 6):
            shards = [equal_shard(list(range(n)), r, p) for r in range(p)]
            assert len({len(shard) for shard, _ in shards}) == 1  # same number of generate calls on every rank
            assert [x for shard, real in shards for x in shard[:real]] == list(range(n))


# ---------------------------------------------------------------------------------------------------------------------
# Decoding is what the summary says: explicit settings, stop strings, per-problem seeds, --resume and --limit
# ---------------------------------------------------------------------------------------------------------------------


def copy_with_generation_config(tiny_model_path, tmp_path, **settings):
    """The tiny model with a generation_config.json that would change decoding if it were read."""
    import shutil

    path = tmp_path / "ckpt"
    shutil.copytree(tiny_model_path, path)
    config = json.loads((path / "generation_config.json").read_text())
    (path / "generation_config.json").write_text(json.dumps({**config, **settings}))
    return str(path)


def test_model_generation_config_does_not_change_decoding(tiny_model_path, tmp_path):
    """A checkpoint with top_k 1 and a repetition penalty: sampling still differs between samples, and greedy
    output equals that of the same weights without the config (transformers merges generation_config.json into
    any setting left unset)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "2+3?"}], tokenize=False,
                                           add_generation_prompt=True)  # fmt: skip
    plain = TransformersGenerator.from_pretrained(tiny_model_path, dtype="float32")
    odd = TransformersGenerator.from_pretrained(
        copy_with_generation_config(tiny_model_path, tmp_path, top_k=1, repetition_penalty=5.0, do_sample=True),
        dtype="float32",
    )
    sampled = odd.generate([prompt], 8, SamplingParams(temperature=1.0, max_new_tokens=6), seeds=[3])[0]
    assert len(set(sampled)) > 1  # top_k 1 from the config would make all 8 identical
    greedy = SamplingParams(max_new_tokens=8)
    assert odd.generate([prompt], 1, greedy) == plain.generate([prompt], 1, greedy)
    assert odd.model.generation_config.top_k == 1  # the model's own config is left as it was


def test_transformers_backend_stops_at_stop_strings(tiny_model_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "7*6?"}], tokenize=False,
                                           add_generation_prompt=True)  # fmt: skip
    generator = TransformersGenerator.from_pretrained(tiny_model_path, dtype="float32")
    sampling = SamplingParams(temperature=1.0, max_new_tokens=12)  # the tiny model's greedy output is all newlines
    (full,) = generator.generate([prompt], 1, sampling, seeds=[5])[0]
    stop = full[4:6]
    assert len(stop) == 2
    (cut,) = generator.generate([prompt], 1, replace(sampling, stop=(stop,)), seeds=[5])[0]
    assert cut == full[: full.index(stop)] and stop not in cut


def test_stop_strings_include_the_chat_templates_end_of_turn():
    """A ChatML model whose EOS is <|endoftext|> (Qwen2.5 base, SmolLM2) ends assistant turns with <|im_end|>."""
    from grpo_ext.evaluation import end_of_turn, stop_strings
    from grpo_ext.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    tokenizer.eos_token = "<|endoftext|>"
    assert end_of_turn(tokenizer) == "<|im_end|>"
    assert stop_strings(tokenizer, ("Question:",)) == ("Question:", "<|im_end|>", "<|endoftext|>")
    tokenizer.chat_template = None
    assert stop_strings(tokenizer) == ("<|endoftext|>",)


def test_sampling_is_seeded_per_problem_whatever_the_chunking_and_resume(shared_data, tiny_model_path, tmp_path):
    common = ["--model_name_or_path", tiny_model_path, "--data_files", str(shared_data / "gsm8k" / "test.jsonl"),
              "--max_new_tokens", "5", "--temperature", "1", "--num_samples", "3", "--k", "1", "3",
              "--seed", "4"]  # fmt: skip
    evaluate(common + ["--limit", "4", "--save_every", "4", "--output_dir", str(tmp_path / "one")])
    evaluate(common + ["--limit", "2", "--save_every", "1", "--output_dir", str(tmp_path / "chunked")])
    resumed = evaluate(common + ["--limit", "4", "--save_every", "1", "--output_dir", str(tmp_path / "chunked"),
                                 "--resume"])  # fmt: skip

    def completions(name):
        lines = (tmp_path / name / "samples.jsonl").read_text().splitlines()
        return [json.loads(line)["completions"] for line in lines]

    assert completions("one") == completions("chunked")
    assert len({tuple(c) for c in completions("chunked")}) == 4  # no two problems share a sample list
    assert resumed["generation"]["seed"] == 4 and resumed["generation"]["top_k"] == 0
    assert set(resumed["generation"]) >= {"temperature", "top_p", "top_k", "min_p", "repetition_penalty",
                                          "max_new_tokens", "stop", "seed", "num_samples"}  # fmt: skip
    assert "<|im_end|>" in resumed["generation"]["stop"]  # the tiny tokenizer's end of turn


def test_resume_with_a_smaller_limit_is_refused(shared_data, tmp_path):
    golds = gsm8k_golds(shared_data)
    by_question = {q: [f"\\boxed{{{g}}}"] for q, g in golds}
    out = tmp_path / "limit"
    args = ["--data_files", str(shared_data / "gsm8k" / "test.jsonl"), "--output_dir", str(out)]
    evaluate(args + ["--limit", "6"], generator=ScriptedGenerator(by_question), render=render_last_user_turn)
    with pytest.raises(InputError, match="smaller --limit"):
        evaluate(args + ["--limit", "3", "--resume"], generator=ScriptedGenerator(by_question),
                 render=render_last_user_turn)  # fmt: skip
    summary = evaluate(args + ["--limit", "8", "--resume"], generator=ScriptedGenerator(by_question),
                       render=render_last_user_turn)  # fmt: skip
    assert summary["overall"] == {"count": 8, "pass@1": 1.0} and summary["limit"] == 8


def test_lm_eval_gsm8k_protocol_reports_strict_and_flexible(shared_data, tmp_path):
    """Plain-text protocol end to end with a scripted model: both lm-eval scores, the protocol in summary.json."""
    golds = gsm8k_golds(shared_data)[:4]
    answers = {0: "so #### {g}", 1: "The total is {g}.", 2: "#### {w}", 3: "nothing"}
    by_prompt = {}

    class ByQuestion:
        def generate(self, prompts, n, params, seeds=None):
            assert params.stop[:3] == ("Question:", "</s>", "<|im_end|>") and params.max_new_tokens == 256
            return [[by_prompt[p.rsplit("Question: ", 1)[1].split("\n")[0]]] for p in prompts]

    for i, (question, gold) in enumerate(golds):
        by_prompt[question] = answers[i].format(g=gold, w=int(gold) + 1)
    out = tmp_path / "lm_eval"
    summary = evaluate(
        ["--protocol", "lm_eval_gsm8k", "--data_files", str(shared_data / "gsm8k" / "test.jsonl"), "--limit", "4",
         "--few_shot_data_files", str(shared_data / "gsm8k" / "train.jsonl"), "--output_dir", str(out)],
        generator=ByQuestion(),
    )  # fmt: skip
    assert summary["protocol"] == "lm_eval_gsm8k" and "gsm8k.yaml" in summary["protocol_source"]
    assert summary["scores"]["strict-match"] == {"count": 4, "pass@1": 0.25} == summary["overall"]
    assert summary["scores"]["flexible-extract"] == {"count": 4, "pass@1": 0.5}
    first = json.loads((out / "samples.jsonl").read_text().splitlines()[0])
    assert first["prompt"].startswith("Question: ") and first["prompt"].endswith("\nAnswer:")
    assert first["scores"]["flexible-extract"]["corrects"] == [True]
    table = (out / "summary.md").read_text()
    assert "| all (strict-match) | 4 | 25.0 |" in table and "| all (flexible-extract) | 4 | 50.0 |" in table
    with pytest.raises(ValueError, match="is for"):
        evaluate(["--protocol", "lm_eval_gsm8k", "--dataset_name", "math500"], generator=ByQuestion())


class ByQuestionText:
    """Answers each prompt with the completion of the question it ends with (plain-text protocols)."""

    def __init__(self, by_question):
        self.by_question = by_question
        self.params = None

    def generate(self, prompts, n, params, seeds=None):
        self.params = params
        return [[next(c for q, c in self.by_question.items() if q in p[-len(q) - 200 :])] for p in prompts]


def test_qwen_chat_protocol_scores_as_qwen_and_counts_outputs_ending_in_an_unanswered_code_fence(shared_data, tmp_path):
    """qwen25_math_cot end to end: the primary score is Qwen's own verdict (2500 for a gold of 25 counts, as its
    percentage rule has it; `answers_match` does not), and an output with no boxed answer that ends in a code fence
    (which Qwen's code would execute and continue) is counted and said so in summary.json and summary.md."""
    golds = gsm8k_golds(shared_data)[:4]
    texts = ["So the answer is \\boxed{{{g}}}.", "So it is \\boxed{{{h}}}.", "Let me compute.\n```python\nprint({g})\n```\n",
             "```python\nx = 1\n```\nSo \\boxed{{{w}}}\n```"]  # fmt: skip
    by_question = {q: t.format(g=g, h=int(g) * 100, w=int(g) + 1) for (q, g), t in zip(golds, texts)}
    out = tmp_path / "qwen"
    summary = evaluate(["--protocol", "qwen25_math_cot", "--data_files", str(shared_data / "gsm8k" / "test.jsonl"),
                        "--limit", "4", "--output_dir", str(out)], generator=ByQuestionText(by_question))  # fmt: skip
    assert list(summary["scores"]) == ["accuracy", "answers_match"]
    # Qwen: right, percentage-scaled (right), last number of the code (right), wrong; ours: right, wrong, right, wrong
    assert summary["overall"] == summary["scores"]["accuracy"] == {"count": 4, "pass@1": 3 / 4}
    assert summary["scores"]["answers_match"] == {"count": 4, "pass@1": 2 / 4}
    assert summary["tallies"] == {"unanswered_code_fence": {"samples": 1, "of": 4}}
    assert "not reproduced" in summary["protocol_notes"] and summary["answer_timeouts"]["accuracy"] == 3.0
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["tallies"]["unanswered_code_fence"] for r in records] == [[False], [False], [True], [False]]
    assert "Unanswered code fence: 1 of 4 samples" in (out / "summary.md").read_text()
    assert summary["generation"]["add_special_tokens"] is True


def test_protocols_without_a_sourced_shot_count_need_num_few_shot(shared_data, tmp_path):
    """qwen25_math_fewshot_cot (Qwen's --num_shots, 0 in its script, no stated base-model value) and deepseek_math
    (base or instruct prompts) run only with --num_few_shot, which summary.json records."""
    golds = gsm8k_golds(shared_data)[:2]
    common = ["--data_files", str(shared_data / "gsm8k" / "test.jsonl"), "--limit", "2"]
    generator = ByQuestionText({q: f"The answer is {g}." for q, g in golds})
    for protocol in ("qwen25_math_fewshot_cot", "deepseek_math"):
        with pytest.raises(ValueError, match=f"--protocol {protocol} needs --num_few_shot"):
            evaluate(["--protocol", protocol, *common, "--output_dir", str(tmp_path / protocol)], generator=generator)
    summary = evaluate(["--protocol", "qwen25_math_fewshot_cot", *common, "--num_few_shot", "4", "--output_dir",
                        str(tmp_path / "qwen")], generator=generator)  # fmt: skip
    assert summary["num_few_shot"] == 4 and summary["overall"] == {"count": 2, "pass@1": 1.0}
    with pytest.raises(ValueError, match="--num_few_shot 3: protocol deepseek_math on gsm8k takes 0 .* or 8"):
        evaluate(["--protocol", "deepseek_math", *common, "--num_few_shot", "3", "--output_dir",
                  str(tmp_path / "ds3")], generator=generator)  # fmt: skip


def test_deepseek_math_protocol_runs_its_base_and_instruct_set_ups(shared_data, tmp_path):
    """deepseek_math end to end: 8 fixed shots and a stop at "\\nQ:" for the base model on GSM8K, its last-number
    extraction; zero-shot "User: ... Assistant:" with a stop at EOS only for instruct models on MATH-500, answers
    read as lists; 1024 new tokens; the verdicts are the harness's."""
    golds = gsm8k_golds(shared_data)[:2]
    base = ByQuestionText({golds[0][0]: f"She has {golds[0][1]} left.", golds[1][0]: "It is 3.5 then 1000."})
    summary = evaluate(["--protocol", "deepseek_math", "--num_few_shot", "8", "--data_files",
                        str(shared_data / "gsm8k" / "test.jsonl"), "--limit", "2", "--output_dir", str(tmp_path / "b")],
                       generator=base)  # fmt: skip
    assert base.params.stop == ("\nQ:",) and base.params.max_new_tokens == 1024 and base.params.add_special_tokens
    assert summary["overall"] == {"count": 2, "pass@1": 0.5} and "evaluation_results.json" in summary["protocol_notes"]
    record = json.loads((tmp_path / "b" / "samples.jsonl").read_text().splitlines()[0])
    assert record["prompt"].startswith("Q: There are 15 trees") and record["prompt"].endswith("\nA:")
    rows = read_rows(shared_data / "math500" / "test.jsonl", n=2)
    instruct = ByQuestionText({rows[0]["problem"] + "\nPlease reason step by step, and put your final answer within "
                               "\\boxed{}.": f"So $\\boxed{{{rows[0]['answer']}}}$.",
                               rows[1]["problem"][-60:] + "\nPlease reason step by step, and put your final answer "
                               "within \\boxed{}.": "So $\\boxed{0}$."})  # fmt: skip
    summary = evaluate(["--protocol", "deepseek_math", "--num_few_shot", "0", "--dataset_name", "math500",
                        "--data_files", str(shared_data / "math500" / "test.jsonl"), "--limit", "2", "--output_dir",
                        str(tmp_path / "i")], generator=instruct)  # fmt: skip
    assert instruct.params.stop == () and summary["overall"] == {"count": 2, "pass@1": 0.5}
    records = [json.loads(line) for line in (tmp_path / "i" / "samples.jsonl").read_text().splitlines()]
    assert records[0]["prompt"].startswith("User: ") and records[0]["prompt"].endswith("\n\nAssistant:")
    assert records[1]["extracted_answer"] == ["0"]


def test_reference_verdicts_need_sympy_s_latex_parser_before_anything_runs(monkeypatch):
    """A protocol whose score is a tool's sympy verdict stops at once, naming the option and the fix, when sympy's
    parse_latex cannot run (any antlr4 runtime but 4.11), instead of failing after generating."""
    from grpo_ext.protocols import symbolic

    monkeypatch.setattr(symbolic, "latex_parser_available", lambda: "antlr4-python3-runtime is 4.13.2")
    for protocol in ("minerva_math_4shot", "qwen25_math_cot", "deepseek_math"):
        with pytest.raises(ValueError, match=f"--protocol {protocol}: .*antlr4-python3-runtime 4.11 .*4.13.2"):
            evaluate(["--protocol", protocol, "--dataset_name", "math500", "--num_few_shot", "0"],
                     generator=ByQuestionText({}))  # fmt: skip


def bos_tokenizer():
    """The tiny byte-level tokenizer with a BOS that it adds to every text, as Llama's and DeepSeek's do."""
    from tokenizers.processors import TemplateProcessing

    from grpo_ext.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    tokenizer.add_special_tokens({"bos_token": "<s>"})
    bos = tokenizer.bos_token_id
    tokenizer._tokenizer.post_processor = TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                             special_tokens=[("<s>", bos)])  # fmt: skip
    return tokenizer


class RecordingModel:
    """Stands in for a causal LM: records the token ids it is asked to continue and appends one EOS."""

    def __init__(self, eos_id):
        import torch

        self.eos_id, self.asked = eos_id, []
        self.generation_config, self.training, self.device = None, False, torch.device("cpu")

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def generate(self, input_ids, attention_mask, generation_config, tokenizer):
        import torch

        self.asked += [ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask)]
        return torch.cat([input_ids, torch.full((len(input_ids), 1), self.eos_id)], dim=1)


def test_plain_text_prompts_get_the_bos_that_lm_eval_gives_them():
    """A plain-text protocol's prompt is tokenized as lm-eval's HF model tokenizes a context (its own
    `HFLM.tok_batch_encode`): the tokenizer's BOS first, not doubled when the text starts with it; a chat template's
    text (the `chat` protocol, training) gets nothing added."""
    from types import SimpleNamespace

    from lm_eval.models.huggingface import HFLM

    tokenizer = bos_tokenizer()
    model = RecordingModel(tokenizer.eos_token_id)
    generator = TransformersGenerator(model, tokenizer, batch_size=2)
    prompts = ["Question: 2+2?\nAnswer:", "<s>Question: 3+3?\nAnswer:"]
    generator.generate(prompts, 1, SamplingParams(max_new_tokens=1, add_special_tokens=True))
    lm_eval_model = SimpleNamespace(tokenizer=tokenizer, backend="causal", add_bos_token=None)
    expected = [HFLM.tok_batch_encode(lm_eval_model, [prompt])[0][0].tolist() for prompt in prompts]  # one at a time:
    # lm-eval looks for the BOS in a batch's first text only
    assert sorted(model.asked) == sorted(expected)
    assert all(ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1 for ids in expected)
    model.asked = []
    generator.generate(prompts[:1], 1, SamplingParams(max_new_tokens=1))
    assert model.asked == [tokenizer(prompts[0], add_special_tokens=False)["input_ids"]]
    from grpo_ext.protocols import PROTOCOLS

    assert [name for name, p in PROTOCOLS.items() if not p.add_special_tokens] == ["chat"]


@pytest.mark.slow
def test_smollm2_evaluates_gsm8k_with_the_chat_and_lm_eval_protocols(shared_data, smollm2_dir, tmp_path):
    """A real pretrained instruct model (SmolLM2-135M-Instruct, byte-level BPE, ChatML) on 2 GSM8K problems, greedy
    and short (8 tokens: about a second a token on a loaded 2-core machine): its chat template's end of turn is a
    stop string; with lm-eval's plain 5-shot prompt the stops are lm-eval's and both lm-eval scores are reported.
    Figures are recomputed from samples.jsonl."""
    from transformers import AutoTokenizer

    from grpo_ext.evaluation import render_chat

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model = TransformersGenerator.from_pretrained(smollm2_dir, dtype="float32")  # loaded once for both runs
    common = ["--model_name_or_path", smollm2_dir, "--data_files", str(shared_data / "gsm8k" / "test.jsonl"),
              "--limit", "2", "--max_new_tokens", "8"]  # fmt: skip
    chat = evaluate(common + ["--output_dir", str(tmp_path / "chat")], generator=model, render=render_chat(tokenizer),
                    tokenizer=tokenizer)  # fmt: skip
    assert chat["protocol"] == "chat" and chat["generation"]["stop"] == ["<|im_end|>"]
    records = [json.loads(line) for line in (tmp_path / "chat" / "samples.jsonl").read_text().splitlines()]
    assert all(r["prompt"].endswith("<|im_start|>assistant\n") and "<|im_" not in r["completion"] for r in records)
    assert chat["overall"] == {"count": 2, "pass@1": sum(r["correct"] for r in records) / 2}
    lm_eval = evaluate(common + ["--protocol", "lm_eval_gsm8k", "--output_dir", str(tmp_path / "lm_eval"),
                                 "--num_few_shot", "1",  # lm-eval's 5 shots work alike; 1 keeps the prompts short
                                 "--few_shot_data_files", str(shared_data / "gsm8k" / "train.jsonl")],
                       generator=model, tokenizer=tokenizer)  # fmt: skip
    assert lm_eval["generation"]["stop"] == ["Question:", "</s>", "<|im_end|>"]
    records = [json.loads(line) for line in (tmp_path / "lm_eval" / "samples.jsonl").read_text().splitlines()]
    assert all(r["prompt"].count("Question: ") == 2 and "Question:" not in r["completion"] for r in records)
    assert set(lm_eval["scores"]) == {"strict-match", "flexible-extract"}
    flexible = [r["scores"]["flexible-extract"]["corrects"][0] for r in records]
    assert lm_eval["scores"]["flexible-extract"]["pass@1"] == sum(flexible) / 2
