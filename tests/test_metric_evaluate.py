r"""`grpo_ext.metrics.MATH_ACCURACY`, the Hugging Face `evaluate` metric: loaded as a user loads it
(`evaluate.load(path)`, offline), it gives each answer training's `accuracy_reward` verdict and reports the pass@1,
pass@k and maj@k that `grpo_ext.evaluation` (launch/evaluate.py's default scoring) reports on the same samples."""

import shutil
import socket
import subprocess
import sys
import zipfile
from fnmatch import fnmatch
from pathlib import Path

import evaluate
import pytest

import grpo_ext
from grpo_ext.evaluation import SamplingParams, run_evaluation
from grpo_ext.metrics import MATH_ACCURACY
from rewards import accuracy_reward

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(MATH_ACCURACY) / "math_accuracy.py"

# Four problems, four samples each, written as models write them: GSM8K `#### x` and last-number answers, boxed
# MATH answers, equivalent forms (0.5 = \dfrac12 = \frac{1}{2}, 1,000 = 1000), wrong and missing answers. Golds are
# what datasets hold: a GSM8K rationale, a MATH solution, bare answers.
PROBLEMS = [
    (
        (
            "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n"
            "She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer's market.\n#### 18"
        ),
        [
            "Janet has 16 - 3 - 4 = 9 eggs left.\nShe earns 9 * 2 = 18 dollars.\n#### 18",
            "She uses 3 + 4 = 7 eggs, so 16 - 7 = 9 remain. 9 x $2 = $18. The answer is $\\boxed{18}$.",
            "16 - 3 = 13 eggs. 13 * 2 = 26.\n#### 26",
            "She makes 9 * 2 = 18 dollars every day.",
        ],
    ),
    (
        "Three of the six faces are even, so the probability is $\\frac{3}{6} = \\boxed{\\frac{1}{2}}$.",
        [
            "There are 3 even numbers out of 6, so the probability is $\\boxed{0.5}$.",
            "The probability is $\\frac{3}{6} = \\boxed{\\dfrac12}$.",
            "Only 2 outcomes work, so the answer is $\\boxed{\\frac{1}{3}}$.",
            "Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.",
        ],
    ),
    (
        "(-\\infty, 3]",
        [
            "We need $3 - x \\ge 0$, so the domain is $\\boxed{(-\\infty,3]}$.",
            "We need $3 - x > 0$, so the domain is $\\boxed{(-\\infty, 3)}$.",
            "$x \\le 3$, so the domain is $\\boxed{(-\\infty, 3]}$.",
            "I cannot determine the domain.",
        ],
    ),
    (
        "1000",
        ["So he pays $\\boxed{1,000}$ dollars.", "The answer is 1000.", "#### 999", "Total: \\boxed{1000}"],
    ),
]


def load_metric():
    return evaluate.load(MATH_ACCURACY)


class Replay:
    """A generation backend that returns n of the fixed samples of each problem (its prompt is its index), from
    sample `first` on."""

    def __init__(self, first=0):
        self.first = first

    def generate(self, prompts, n, params, seeds=None):
        return [PROBLEMS[int(prompt)][1][self.first : self.first + n] for prompt in prompts]


def evaluation_summary(ks, num_samples, sample=0):
    """What launch/evaluate.py reports for these samples (from sample `sample` on): `run_evaluation` with its
    default scoring."""
    rows = [{"idx": i, "prompt": str(i), "answer": gold} for i, (gold, _) in enumerate(PROBLEMS)]
    params = SamplingParams(temperature=1.0 if num_samples > 1 else 0.0)
    return run_evaluation(rows, Replay(sample), str, params, num_samples=num_samples, ks=ks, progress=False)["overall"]


def test_metric_loads_from_the_package_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network used while loading the metric")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    metric = load_metric()
    assert type(metric).__name__ == "MathAccuracy" and isinstance(metric, evaluate.Metric)
    assert SCRIPT.is_file() and SCRIPT.parent.parent.parent == Path(grpo_ext.__file__).parent
    assert "pass@k" in metric.description and "accuracy_reward" in metric.description
    assert type(evaluate.load(str(SCRIPT))).__name__ == "MathAccuracy"  # the script path works too


def test_same_summary_as_launch_evaluate_on_the_same_samples():
    golds = [gold for gold, _ in PROBLEMS]
    result = load_metric().compute(predictions=[samples for _, samples in PROBLEMS], references=golds, ks=[1, 2, 4])
    expected = evaluation_summary([1, 2, 4], num_samples=4)
    assert set(expected) == {"count", "pass@1", "pass@2", "pass@4", "maj@1", "maj@2", "maj@4"}
    assert result == {"accuracy": expected["pass@1"], **expected}
    # greedy style: one completion per problem, a flat list of strings
    result = load_metric().compute(predictions=[samples[2] for _, samples in PROBLEMS], references=golds)
    assert result == {"accuracy": 0.25, **evaluation_summary([1], num_samples=1, sample=2)}


def test_verdicts_are_accuracy_rewards():
    texts = [text for _, samples in PROBLEMS for text in samples]
    golds = [gold for gold, samples in PROBLEMS for _ in samples]
    result = load_metric().compute(predictions=texts, references=golds, return_verdicts=True)
    rewards = accuracy_reward(texts, answer=golds)
    assert result["verdicts"] == [reward == 1.0 for reward in rewards]
    assert result["verdicts"] == [True, True, False, True] * 2 + [True, False, True, False] + [True, True, False, True]
    nested = load_metric().compute(predictions=[s for _, s in PROBLEMS], references=[g for g, _ in PROBLEMS], ks=2,
                                   return_verdicts=True)  # fmt: skip
    assert nested["verdicts"] == [result["verdicts"][i : i + 4] for i in range(0, 16, 4)]


def test_hand_worked_pass_at_k_and_maj_at_k():
    predictions = [
        # gold 18: correct, wrong 20, wrong 20, wrong 7 -> c = 1 of n = 4
        ["So she pays 18.\n#### 18", "so the answer is 20.", "$\\boxed{20}$", "$\\boxed{7}$"],
        # gold 1/2: wrong 1/3, correct 0.5, correct \dfrac12, wrong 2 -> c = 2; 0.5 and \dfrac12 vote together
        ["$\\boxed{\\frac{1}{3}}$", "$\\boxed{0.5}$", "$\\boxed{\\dfrac12}$", "$\\boxed{2}$"],
    ]
    result = load_metric().compute(predictions=predictions, references=["#### 18", "\\frac{1}{2}"], ks=[1, 2, 4])
    expected = {
        "count": 2,
        "accuracy": (1 / 4 + 2 / 4) / 2,
        "pass@1": (1 / 4 + 2 / 4) / 2,
        "pass@2": ((1 - 3 / 6) + (1 - 1 / 6)) / 2,  # 1 - C(n - c, 2) / C(4, 2): C(3,2) = 3, C(2,2) = 1, C(4,2) = 6
        "pass@4": 1.0,
        "maj@1": (1 + 0) / 2,  # the first sample alone: 18 right, 1/3 wrong
        "maj@2": (1 + 0) / 2,  # 1-1 ties go to the first answer seen: 18 right, 1/3 wrong
        "maj@4": (0 + 1) / 2,  # 20 wins 2-1-1; {0.5, \dfrac12} wins 2-1-1
    }
    assert result == pytest.approx(expected)


def test_grades_with_the_training_grader_not_another():
    # math-verify alone (TRL's accuracy_reward) and string matching (evaluate's exact_match, competition_math)
    # reject all three; the project's grader, which training rewards with, accepts them
    from math_verify import parse, verify

    texts = ["The parity is $odd$.", "The discount is $\\boxed{50\\%}$.", "The answer is $\\boxed{\\text{(B)}}$."]
    golds = ["\\text{odd}", "0.5", "B"]
    assert not any(verify(parse(gold), parse(text)) for text, gold in zip(texts, golds))
    result = load_metric().compute(predictions=texts, references=golds, return_verdicts=True)
    assert result["verdicts"] == [True, True, True] and result["accuracy"] == 1.0
    assert accuracy_reward(texts, answer=golds) == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"predictions": [["#### 1", "#### 2"], ["#### 3"]], "references": ["1", "3"]}, "same number"),
        ({"predictions": [["#### 1", "#### 2"], []], "references": ["1", "3"]}, "problem 1 has 0"),
        ({"predictions": [["#### 1", "#### 2"]], "references": ["1"], "ks": [1, 4]}, "ks values .* got \\[4\\]"),
        ({"predictions": [["#### 1", "#### 2"]], "references": ["1"], "ks": [0]}, "ks values"),
        ({"predictions": ["#### 1"], "references": ["1"], "answer_timeout": 0}, "answer_timeout"),
        ({"predictions": ["#### 1", "#### 2"], "references": ["1"]}, "number of predictions \\(2\\) and references"),
    ],
)
def test_bad_input_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_metric().compute(**kwargs)


def test_package_data_ships_the_metric_script():
    tomllib = pytest.importorskip("tomllib")
    with open(REPO_ROOT / "pyproject.toml", "rb") as handle:
        patterns = tomllib.load(handle)["tool"]["setuptools"]["package-data"]["grpo_ext"]
    relative = SCRIPT.relative_to(Path(MATH_ACCURACY).parent.parent).as_posix()
    assert any(fnmatch(relative, pattern) for pattern in patterns), (relative, patterns)


@pytest.mark.slow
def test_wheel_carries_the_metric_and_it_loads_from_the_install(tmp_path):
    """Build a wheel (about 3 s, no network), unpack it, and load the metric from there in a fresh interpreter."""
    pytest.importorskip("setuptools")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    for name in ("grpo_ext", "rewards", "launch"):
        shutil.copytree(REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source), "-w"]
    subprocess.run([*build, str(tmp_path / "dist")], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("grpo_ext-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert "grpo_ext/metrics/math_accuracy/math_accuracy.py" in archive.namelist()
        archive.extractall(tmp_path / "site")
    check = (
        "import sys; sys.path.insert(0, sys.argv[1]); import evaluate, grpo_ext.metrics as m; "
        "assert m.MATH_ACCURACY.startswith(sys.argv[1]), m.MATH_ACCURACY; "
        "print(evaluate.load(m.MATH_ACCURACY).compute(predictions=['#### 18', 'x = 3'], references=['18', '4']))"
    )
    command = [sys.executable, "-c", check, str(tmp_path / "site")]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "{'accuracy': 0.5, 'count': 2, 'pass@1': 0.5}"
