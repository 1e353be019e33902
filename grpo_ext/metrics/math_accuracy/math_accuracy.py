r"""math_accuracy: GSM8K / MATH answer accuracy, pass@k and maj@k as a Hugging Face `evaluate` metric.

Loaded with `evaluate.load(grpo_ext.metrics.MATH_ACCURACY)`. It grades and summarises with the project's own code,
nothing reimplemented: `grpo_ext.evaluation.score_problems` (each sample's verdict is `rewards.grade_completions`',
the code behind training's `accuracy_reward`; maj@k votes over answers grouped by `rewards.answers_match`) and
`grpo_ext.evaluation.summarize`, the two steps of `launch/evaluate.py`'s default scoring. evaluate copies this
file into its modules cache before importing it, so it imports the project by absolute name only.
"""

import datasets
import evaluate

from grpo_ext.evaluation import score_problems, summarize

_CITATION = r"""@article{shao2024deepseekmath,
  title={DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models},
  author={Shao, Zhihong and Wang, Peiyi and Zhu, Qihao and others},
  journal={arXiv preprint arXiv:2402.03300},
  year={2024}
}
@article{chen2021codex,
  title={Evaluating Large Language Models Trained on Code},
  author={Chen, Mark and others},
  journal={arXiv preprint arXiv:2107.03374},
  year={2021}
}
"""

_DESCRIPTION = r"""Math answer accuracy as grpo-ext trains and evaluates: a completion is correct exactly when
`rewards.accuracy_reward` would reward it (final answer from \boxed{}, `#### x`, "the answer is", or a last-number
fallback for plain-number golds; exact fast path, then math-verify's symbolic check, bounded in worker processes;
nothing in the text is executed). With n samples per problem: pass@1 = mean over problems of c / n; pass@k = mean
of the unbiased estimator 1 - C(n - c, k) / C(n, k) (Chen et al. 2021); maj@k = fraction of problems whose majority
answer over the first k samples (equivalent answers vote together, ties to the group seen first, samples without
an answer do not vote) is correct. A problem whose gold cannot be read scores 0, as in launch/evaluate.py.
"""

_KWARGS_DESCRIPTION = r"""
Args:
    predictions: model completions, a list of strings (one per problem) or a list of lists of strings (n samples
        per problem, the same n for every problem).
    references: each problem's gold answer, a string: a bare answer (`18`, `\frac{14}{3}`), a GSM8K rationale
        ending in `#### 18`, or a MATH solution whose last \boxed{} holds the answer.
    ks: the k of pass@k and maj@k (default [1]); each 1 <= k <= n. `launch/evaluate.py --k`.
    answer_timeout: seconds allowed per answer comparison (default 5.0). `launch/evaluate.py --answer_timeout`.
    return_verdicts: also return `verdicts`, each sample's True / False in the shape of `predictions`.
Returns:
    count: number of problems; accuracy: pass@1; pass@1; pass@k for each k > 1; maj@k for each k when n > 1
    (as grpo_ext.evaluation.summarize); verdicts with return_verdicts.
Examples:
    >>> math_accuracy = evaluate.load(grpo_ext.metrics.MATH_ACCURACY)
    >>> math_accuracy.compute(predictions=[r"so \boxed{0.5}", "It is 18 dollars."], references=[r"\frac{1}{2}", "#### 17"])
    {'accuracy': 0.5, 'count': 2, 'pass@1': 0.5}
    >>> math_accuracy.compute(predictions=[[r"\boxed{3}", r"\boxed{4}", r"\boxed{4}"]], references=["4"], ks=[1, 3])
    {'accuracy': 0.6666666666666666, 'count': 1, 'pass@1': 0.6666666666666666, 'pass@3': 1.0, 'maj@1': 0.0, 'maj@3': 1.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MathAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # several samples per problem, or one; evaluate picks the first format the first example fits
            features=[
                datasets.Features(
                    {"predictions": datasets.Sequence(datasets.Value("string")), "references": datasets.Value("string")}
                ),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
            reference_urls=["https://arxiv.org/abs/2402.03300", "https://arxiv.org/abs/2107.03374"],
        )

    def _compute(self, predictions, references, ks=(1,), answer_timeout=5.0, return_verdicts=False):
        one_each = all(isinstance(p, str) for p in predictions)
        samples = [[p] if one_each else list(p) for p in predictions]
        ks = [ks] if isinstance(ks, int) else list(ks)
        _check(samples, ks, answer_timeout)
        ks = sorted(set(ks))  # as launch/evaluate.py passes --k
        records = score_problems(samples, references, ks, timeout=answer_timeout)
        summary = summarize(records, ks)
        result = {"accuracy": summary["pass@1"], **summary}
        if return_verdicts:
            verdicts = [record["corrects"] for record in records]
            result["verdicts"] = [v[0] for v in verdicts] if one_each else verdicts
        return result


def _check(samples, ks, answer_timeout):
    """Refuse what `summarize` would average wrongly or silently skip, naming the option (evaluate itself refuses
    predictions and references of different lengths)."""
    n = len(samples[0])
    odd = next((i for i, s in enumerate(samples) if len(s) != n or not s), None)
    if odd is not None:
        # pass@k and maj@k average over problems with one n (summarize reads n and the maj@k from the first)
        raise ValueError(
            "math_accuracy: predictions needs the same number (>= 1) of samples for every problem; problem "
            f"{odd} has {len(samples[odd])}" + (f", problem 0 has {n}" if odd else "")
        )
    bad = [k for k in ks if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n]
    if bad:
        raise ValueError(f"math_accuracy: ks values must be integers in [1, n={n} samples per problem], got {bad}")
    if isinstance(answer_timeout, bool) or not isinstance(answer_timeout, (int, float)) or not answer_timeout > 0:
        raise ValueError(f"math_accuracy: answer_timeout must be a positive number of seconds, got {answer_timeout!r}")
