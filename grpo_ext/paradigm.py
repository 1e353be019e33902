r"""Offline methods of DeepSeekMath's unified paradigm (section 5.2.1): the data that RFT and DPO train on.

Both start from k completions per training prompt sampled once from the SFT model (`sample_completions`), scored
by an outcome rule (`rewards.accuracy_reward` by default):

- RFT (rejection-sampling fine-tuning): the correct samples, deduplicated per prompt, fine-tuned on with TRL's
  `SFTTrainer` (gradient coefficient 1 on correct answers, 0 on the rest): `rft_dataset`.
- DPO: pairs of a correct (chosen) and an incorrect (rejected) sample of the same prompt, trained with TRL's
  `DPOTrainer`: `dpo_pairs`.

Rows follow TRL's dataset formats: a conversational prompt (a list of messages) gets conversational completions
(`[{"role": "assistant", "content": text}]`), a plain-text prompt gets plain-text completions. A sample whose score
is None (no gold answer could be read, `accuracy_reward`'s convention) is neither correct nor incorrect: it is left
out. Samples are deduplicated per prompt by exact text, first occurrence kept, so one answer repeated k times
weighs as much as one written once (as in Yuan et al., 2023, whose RFT deduplicates reasoning paths).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

Scorer = Callable[..., list]  # TRL reward-function signature: scorer(completions=[...], answer=[...]) -> scores


def _check_lengths(prompts: Sequence, samples: Sequence, golds: Sequence) -> None:
    if not len(prompts) == len(samples) == len(golds):
        raise ValueError(
            f"prompts, samples and golds must have one entry per prompt; got {len(prompts)}, {len(samples)} and "
            f"{len(golds)}"
        )
    for i, texts in enumerate(samples):
        if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
            raise ValueError(f"samples[{i}] must be a list of completion strings, got {texts!r:.80}")
    if len({isinstance(prompt, list) for prompt in prompts}) > 1:  # one dataset holds one format
        raise ValueError("prompts must be all conversational (lists of messages) or all plain text, not a mix")


def _as_completion(prompt: Any, text: str) -> Any:
    """TRL's pairing rule: a conversational prompt takes an assistant turn, a plain-text prompt takes text."""
    return [{"role": "assistant", "content": text}] if isinstance(prompt, list) else text


def split_correct_incorrect(
    prompts: Sequence, samples: Sequence[Sequence[str]], golds: Sequence[str], scorer: Scorer | None = None,
    correct_threshold: float = 1.0,
) -> list[tuple[list[str], list[str]]]:  # fmt: skip
    """Per prompt, (correct, incorrect) distinct sample texts in first-seen order.

    A sample is correct when its score is >= `correct_threshold`, incorrect when below it, and left out when the
    scorer returns None or NaN for it. The scorer is called once on every sample, with `answer=` the gold of each.
    """
    _check_lengths(prompts, samples, golds)
    if scorer is None:
        from rewards import accuracy_reward as scorer
    flat = [text for texts in samples for text in texts]
    flat_golds = [gold for gold, texts in zip(golds, samples) for _ in texts]
    scores = list(scorer(completions=flat, answer=flat_golds)) if flat else []
    if len(scores) != len(flat):
        raise ValueError(f"the scorer returned {len(scores)} scores for {len(flat)} samples")
    split, start = [], 0
    for texts in samples:
        correct: dict[str, None] = {}  # ordered sets
        incorrect: dict[str, None] = {}
        for text, score in zip(texts, scores[start : start + len(texts)]):
            if score is None or score != score:  # unscorable
                continue
            (correct if score >= correct_threshold else incorrect).setdefault(text)
        split.append((list(correct), list(incorrect)))
        start += len(texts)
    return split


def rft_dataset(
    prompts: Sequence, samples: Sequence[Sequence[str]], golds: Sequence[str], scorer: Scorer | None = None,
    correct_threshold: float = 1.0,
):  # fmt: skip
    """RFT's training set: one prompt/completion row per distinct correct sample, in prompt order (for SFTTrainer).

    `samples[i]` are the completions sampled for `prompts[i]`, `golds[i]` its gold answer. Returns a
    `datasets.Dataset` with columns `prompt` and `completion` (empty when no sample is correct).
    """
    from datasets import Dataset

    rows = {"prompt": [], "completion": []}
    split = split_correct_incorrect(prompts, samples, golds, scorer, correct_threshold)
    for prompt, (correct, _) in zip(prompts, split):
        for text in correct:
            rows["prompt"].append(prompt)
            rows["completion"].append(_as_completion(prompt, text))
    return Dataset.from_dict(rows)


def dpo_pairs(
    prompts: Sequence, samples: Sequence[Sequence[str]], golds: Sequence[str], scorer: Scorer | None = None,
    max_pairs_per_prompt: int | None = None, seed: int = 0, correct_threshold: float = 1.0,
):  # fmt: skip
    """DPO's training set: prompt/chosen/rejected rows pairing a correct with an incorrect sample of one prompt.

    A prompt with c distinct correct and w distinct incorrect samples gives all c * w pairs, in (correct, incorrect)
    order, or, when that exceeds `max_pairs_per_prompt`, that many of them drawn without replacement by
    `random.Random(seed)` (kept in that order). A prompt whose samples are all correct or all incorrect gives none.
    Returns a `datasets.Dataset` with columns `prompt`, `chosen` and `rejected`.
    """
    from datasets import Dataset

    if max_pairs_per_prompt is not None and max_pairs_per_prompt < 1:
        raise ValueError(f"max_pairs_per_prompt must be >= 1 or None, got {max_pairs_per_prompt}")
    rng = random.Random(seed)
    rows = {"prompt": [], "chosen": [], "rejected": []}
    split = split_correct_incorrect(prompts, samples, golds, scorer, correct_threshold)
    for prompt, (correct, incorrect) in zip(prompts, split):
        pairs = [(chosen, rejected) for chosen in correct for rejected in incorrect]
        if max_pairs_per_prompt is not None and len(pairs) > max_pairs_per_prompt:
            pairs = [pairs[i] for i in sorted(rng.sample(range(len(pairs)), max_pairs_per_prompt))]
        for chosen, rejected in pairs:
            rows["prompt"].append(prompt)
            rows["chosen"].append(_as_completion(prompt, chosen))
            rows["rejected"].append(_as_completion(prompt, rejected))
    return Dataset.from_dict(rows)


def sample_completions(
    model, tokenizer, prompts: Sequence, num_samples: int, max_new_tokens: int, temperature: float = 1.0,
    top_p: float = 1.0, batch_size: int = 8, seed: int | None = None, accelerator=None,
) -> list[list[str]]:  # fmt: skip
    """`num_samples` completions per prompt, sampled with transformers' `generate`; returns their decoded texts.

    Conversational prompts go through the tokenizer's chat template with the generation prompt, as TRL's trainers
    render them; plain-text prompts are tokenized as they are. Prompts are left-padded in batches of `batch_size`
    prompts; special tokens are dropped from the decoded completions. `seed` seeds torch before sampling.

    Every process may sample a different number of prompts: the model is whole on each for the call
    (`grpo_ext.engines.gathered_for_generation`: gathered under ZeRO-3, where transformers loads it partitioned;
    unsharded under FSDP2), so no forward waits on another process. Every process must call it, even with no
    prompts.
    """
    import torch

    from .engines import gathered_for_generation

    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"num_samples and batch_size must be >= 1, got {num_samples} and {batch_size}")
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token to batch prompts with: set tokenizer.pad_token (e.g. to EOS)")
    if seed is not None:
        torch.manual_seed(seed)
    texts = [
        tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) if isinstance(p, list) else p
        for p in prompts
    ]
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only generation continues from the last prompt token
    samples: list[list[str]] = []
    with gathered_for_generation(model, accelerator) as whole:
        was_training = whole.training
        whole.eval()
        device = next(whole.parameters()).device
        try:
            for start in range(0, len(texts), batch_size):
                batch = tokenizer(
                    texts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
                ).to(device)
                with torch.no_grad():
                    output = whole.generate(
                        **batch, do_sample=True, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                        num_return_sequences=num_samples, pad_token_id=tokenizer.pad_token_id, synced_gpus=False,
                    )  # fmt: skip
                decoded = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
                samples.extend(decoded[i : i + num_samples] for i in range(0, len(decoded), num_samples))
        finally:
            tokenizer.padding_side = padding_side
            whole.train(was_training)
    return samples
