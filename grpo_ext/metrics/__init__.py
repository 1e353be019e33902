"""Hugging Face `evaluate` metrics shipped with the package, named by the path `evaluate.load` takes:

    import evaluate
    from grpo_ext.metrics import MATH_ACCURACY

    math_accuracy = evaluate.load(MATH_ACCURACY)
    math_accuracy.compute(predictions=[[r"... \\boxed{0.5}", "... #### 3"]], references=[r"\\frac{1}{2}"], ks=[1, 2])

`MATH_ACCURACY` scores with `rewards.grade_completions`, as training's `accuracy_reward` and `launch/evaluate.py`
do, and summarises with `grpo_ext.evaluation.summarize` (pass@1, pass@k, maj@k). See docs/launch.md.
"""

import os

# evaluate.load loads a local directory `<dir>` from its script `<dir>/<dir>.py` (copied into its modules cache)
MATH_ACCURACY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "math_accuracy")

__all__ = ["MATH_ACCURACY"]
