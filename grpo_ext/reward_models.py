"""Outcome and process reward models: one tokenisation, one loss, used for training and for scoring.

* ORM (outcome reward model): an `AutoModelForSequenceClassification` with `num_labels=1`. TRL's GRPOTrainer
  accepts it directly in `reward_funcs` (its tokenizer goes in `reward_processing_classes`) and scores
  `prompt + completion` with `model(**tok(texts, padding_side="right", add_special_tokens=False)).logits[:, 0]`.
  `encode_orm_texts` reproduces exactly that call so that an ORM trained here sees at training time the inputs
  it sees at scoring time.
* PRM (process reward model): an `AutoModelForTokenClassification` with `num_labels=2` (class 1 = "step is
  good"). A (prompt, steps) pair becomes `prompt_ids + ids(step_1 + sep) + ids(step_2 + sep) + ...`; the label
  of step i sits at the last token of its `step_i + sep` segment (`encode_prm_example`). `ProcessRewardModel`
  wraps the model as the callable `(prompts, steps) -> list[list[float]]` that the GRPO trainer's
  `process_reward_model=` takes, returning P(good) at every step end.

Losses (pure functions of logits and targets, shared by `launch/train_reward_model.py` and the in-training refresh):

* pointwise ORM: binary cross-entropy on the scalar logit r, target y in [0, 1]:
  ``-(y log sigmoid(r) + (1 - y) log sigmoid(-r))``;
* pairwise ORM (Bradley-Terry, as TRL's RewardTrainer): ``-log sigmoid(r_chosen - r_rejected)``;
* PRM: two-class cross-entropy at step ends with a (possibly soft) target p = P(good):
  ``-(p log q_1 + (1 - p) log q_0)`` with q = softmax(logits); positions labelled -100 are ignored.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .engines import same_number_of_forwards, unwrapped

IGNORE_INDEX = -100
DEFAULT_STEP_SEPARATOR = "\n\n"


# --------------------------------------------------------------------------------------------------------------
# Text helpers
# --------------------------------------------------------------------------------------------------------------


def is_conversational_prompt(prompt: Any) -> bool:
    return isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m for m in prompt)


def completion_text(completion: Any) -> str:
    """Plain text of a completion as TRL passes it: a string, or a list of messages (their contents joined)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(m["content"] for m in completion if isinstance(m, dict))
    raise TypeError(f"unsupported completion type {type(completion).__name__}")


def prompt_text(prompt: Any, tokenizer) -> str:
    """A prompt as text: strings pass through; a conversation goes through the chat template with the
    generation prompt, as the policy saw it."""
    if isinstance(prompt, str):
        return prompt
    if is_conversational_prompt(prompt):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    raise TypeError(f"unsupported prompt type {type(prompt).__name__}")


def orm_text(prompt: Any, completion: Any, tokenizer, **chat_template_kwargs) -> str:
    """The text TRL's `_calculate_rewards` feeds a model reward function for one (prompt, completion)."""
    if is_conversational_prompt(prompt):
        from trl.data_utils import apply_chat_template

        completion = completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]
        return apply_chat_template({"messages": prompt + completion}, tokenizer, **chat_template_kwargs)["text"]
    return prompt + completion_text(completion)


# --------------------------------------------------------------------------------------------------------------
# Tokenisation (one function each, for training and scoring)
# --------------------------------------------------------------------------------------------------------------


def encode_orm_texts(tokenizer, texts: Sequence[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
    """Tokenise texts exactly as TRL's GRPOTrainer does for a model reward function (right padding, no special
    tokens). With `max_length`, sequences are cut on the left so the completion end (scored token) survives."""
    if max_length is None:
        return tokenizer(list(texts), return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False)
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"][-max_length:] for t in texts]
    return pad_batch(ids, tokenizer.pad_token_id)


def encode_prm_example(
    tokenizer, prompt: str, steps: Sequence[str], step_separator: str = DEFAULT_STEP_SEPARATOR
) -> tuple[list[int], list[int]]:
    """Input ids for `prompt + step_1 + sep + step_2 + sep + ...` and the position of each step's label.

    Segments are tokenised separately and concatenated, so step boundaries never merge into one token; the
    label of step i is at the last token of `step_i + sep`, i.e. at the separator that closes it.
    """
    if not steps:
        raise ValueError("a PRM example needs at least one step")
    ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    positions = []
    for step in steps:
        seg = tokenizer(step + step_separator, add_special_tokens=False)["input_ids"]
        if not seg:
            raise ValueError(f"step {step!r} tokenises to nothing")
        ids.extend(seg)
        positions.append(len(ids) - 1)
    return ids, positions


def pad_batch(sequences: Sequence[Sequence[int]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad lists of ids into `input_ids` and `attention_mask`."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        input_ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        attention_mask[i, : len(s)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def collate_prm(tokenizer, rows: Sequence[dict], step_separator: str = DEFAULT_STEP_SEPARATOR, max_length=None):
    """Batch PRM rows `{"prompt", "steps", "labels"}` into model inputs plus float `labels` (P(good) at step
    ends, -100 elsewhere). With `max_length`, the prompt is cut on the left first, then trailing steps are
    dropped (their labels fall out of the window)."""
    seqs, targets = [], []
    for row in rows:
        ids, positions = encode_prm_example(tokenizer, row["prompt"], row["steps"], step_separator)
        labels = [float(x) for x in row["labels"]]
        if max_length is not None and len(ids) > max_length:
            first_step = tokenizer(row["steps"][0] + step_separator, add_special_tokens=False)["input_ids"]
            prompt_len = positions[0] + 1 - len(first_step)
            cut = min(len(ids) - max_length, prompt_len)
            ids = ids[cut:][:max_length]
            kept = [(p - cut, y) for p, y in zip(positions, labels) if p - cut < max_length]
            positions, labels = [p for p, _ in kept], [y for _, y in kept]
        seqs.append(ids)
        t = [float(IGNORE_INDEX)] * len(ids)
        for p, y in zip(positions, labels):
            t[p] = y
        targets.append(t)
    batch = pad_batch(seqs, tokenizer.pad_token_id)
    width = batch["input_ids"].shape[1]
    batch["labels"] = torch.tensor([t + [float(IGNORE_INDEX)] * (width - len(t)) for t in targets])
    return batch


def collate_orm(tokenizer, rows: Sequence[dict], max_length: int | None = None):
    """Batch ORM rows. Pointwise rows `{"text", "label"}` give float `labels`; pairwise rows
    `{"chosen_text", "rejected_text"}` give the chosen texts then the rejected ones and no labels."""
    if "chosen_text" in rows[0]:
        texts = [r["chosen_text"] for r in rows] + [r["rejected_text"] for r in rows]
        return {**encode_orm_texts(tokenizer, texts, max_length), "pairwise": True}
    batch = encode_orm_texts(tokenizer, [r["text"] for r in rows], max_length)
    batch["labels"] = torch.tensor([float(r["label"]) for r in rows])
    return batch


# --------------------------------------------------------------------------------------------------------------
# Losses (pure)
# --------------------------------------------------------------------------------------------------------------


def orm_pointwise_loss(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean BCE of scalar logits (B,) or (B, 1) against targets in [0, 1]; also the number of rows where
    sign(logit) agrees with target > 0.5."""
    r = logits.reshape(-1).float()
    y = targets.reshape(-1).float().to(r.device)
    loss = F.binary_cross_entropy_with_logits(r, y)
    correct = ((r > 0) == (y > 0.5)).sum()
    return loss, correct


def orm_pairwise_loss(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bradley-Terry loss -log sigmoid(r_chosen - r_rejected) for logits laid out [chosen..., rejected...]."""
    r = logits.reshape(-1).float()
    n = r.shape[0] // 2
    margin = r[:n] - r[n:]
    return -F.logsigmoid(margin).mean(), (margin > 0).sum()


def prm_loss(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Soft two-class cross-entropy at labelled positions: -(p log q_1 + (1-p) log q_0), averaged over
    labelled steps; targets == -100 are ignored. Returns (loss, number of correct steps, number of steps),
    a step being correct when (q_1 > 0.5) == (p > 0.5)."""
    if logits.shape[-1] != 2:
        raise ValueError(f"a PRM needs num_labels=2 (got {logits.shape[-1]})")
    targets = targets.to(logits.device)
    mask = targets != IGNORE_INDEX
    logp = F.log_softmax(logits.float(), dim=-1)[mask]  # (N, 2)
    p = targets[mask].float()
    n = int(mask.sum())
    if n == 0:
        return logits.sum() * 0.0, torch.tensor(0), 0
    loss = -(p * logp[:, 1] + (1 - p) * logp[:, 0]).mean()
    correct = ((logp[:, 1] > math.log(0.5)) == (p > 0.5)).sum()
    return loss, correct, n


def reward_model_loss(model, batch: dict) -> tuple[torch.Tensor, int, int]:
    """Forward `batch` (from `collate_orm` / `collate_prm`) and return (loss, n_correct, n_items).
    The kind is read from the batch: `pairwise` flag, or label tensor rank (2-D = PRM, 1-D = pointwise ORM)."""
    device = next(unwrapped(model).parameters()).device
    inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask")}
    logits = model(**inputs).logits
    if batch.get("pairwise"):
        loss, correct = orm_pairwise_loss(logits[:, 0])
        return loss, int(correct), logits.shape[0] // 2
    labels = batch["labels"]
    if labels.dim() == 2:
        loss, correct, n = prm_loss(logits, labels)
        return loss, int(correct), n
    loss, correct = orm_pointwise_loss(logits[:, 0], labels)
    return loss, int(correct), labels.shape[0]


# --------------------------------------------------------------------------------------------------------------
# Plain training / evaluation (used by the in-training refresh)
# --------------------------------------------------------------------------------------------------------------


def make_collate(kind: str, tokenizer, step_separator: str = DEFAULT_STEP_SEPARATOR, max_length=None) -> Callable:
    if kind == "orm":
        return lambda rows: collate_orm(tokenizer, rows, max_length)
    if kind == "prm":
        return lambda rows: collate_prm(tokenizer, rows, step_separator, max_length)
    raise ValueError(f"reward model kind must be 'orm' or 'prm', got {kind!r}")


@torch.no_grad()
def evaluate_reward_model(model, collate: Callable, rows: Sequence[dict], batch_size: int = 16) -> dict[str, float]:
    """Mean loss (weighted by items) and accuracy of `model` on `rows`; the model's train/eval mode is kept."""
    was_training = model.training
    model.eval()
    total_loss, total_correct, total_n = 0.0, 0, 0
    for i in range(0, len(rows), batch_size):
        loss, correct, n = reward_model_loss(model, collate(rows[i : i + batch_size]))
        total_loss += float(loss) * n
        total_correct += correct
        total_n += n
    model.train(was_training)
    if total_n == 0:
        return {"loss": float("nan"), "accuracy": float("nan")}
    return {"loss": total_loss / total_n, "accuracy": total_correct / total_n}


def train_reward_model(
    trainable,
    collate: Callable,
    rows: Sequence[dict],
    *,
    num_epochs: float = 1.0,
    max_steps: int = 0,
    batch_size: int = 8,
    seed: int = 0,
    show_progress: bool = False,
) -> list[float]:
    """Optimizer steps of `trainable` (a `grpo_ext.engines.TrainableModel`: its AdamW, clipping and engine) on `rows`
    (shuffled with `seed`); `max_steps > 0` overrides `num_epochs`. Every process trains on the same rows in the same
    order with the same dropout draws, so the engine's gradient average is the one process's gradient and all end
    with the same weights. Returns per-step losses. `show_progress` draws a tqdm bar over the steps (epoch and loss
    as its postfix)."""
    if not rows:
        return []
    from tqdm.auto import tqdm

    rng = random.Random(seed)
    steps_per_epoch = math.ceil(len(rows) / batch_size)
    total = max_steps if max_steps > 0 else max(1, math.ceil(num_epochs * steps_per_epoch))
    module = trainable.module
    was_training = module.training
    module.train()
    order: list[int] = []
    losses = []
    device = next(trainable.model.parameters()).device
    bar = tqdm(total=total, desc="reward model training", disable=not show_progress, leave=False, dynamic_ncols=True)
    # dropout draws from torch's global RNG: seed a forked copy so the run is reproducible (across processes and
    # across a resume) and the caller's RNG stream (the policy's) is left untouched.
    with bar, torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for step in range(total):
            if len(order) < batch_size:  # epochs continue one another: reshuffle when the order runs out
                perm = list(range(len(rows)))
                rng.shuffle(perm)
                order.extend(perm)
            idx, order = order[:batch_size], order[batch_size:]
            loss, _, _ = reward_model_loss(module, collate([rows[i] for i in idx]))
            trainable.backward(loss)
            trainable.step()
            losses.append(loss.item())
            bar.set_postfix(epoch=f"{(step + 1) / steps_per_epoch:.2f}", loss=f"{losses[-1]:.4f}", refresh=False)
            bar.update(1)
    module.train(was_training)
    return losses


# --------------------------------------------------------------------------------------------------------------
# Scoring wrappers
# --------------------------------------------------------------------------------------------------------------


class ProcessRewardModel:
    """A token-classification PRM as the callable `(prompts, steps) -> list[list[float]]`: P(step is good) read
    at the end of every step (the token closing `step + step_separator`), batched, under `torch.no_grad()`.

    `model` is updated in place by the iterative-RL refresh, so a trainer holding this object always scores
    with the latest weights. Conversational prompts go through the tokenizer's chat template. With `accelerator`,
    under ZeRO-3 and FSDP2 (where every forward gathers parameters with the other processes) each process runs as
    many forwards as the busiest one, padding with one-token batches whose scores are dropped.
    """

    def __init__(
        self, model, tokenizer, batch_size: int = 16, step_separator: str = DEFAULT_STEP_SEPARATOR, device=None,
        accelerator=None,
    ):
        if tokenizer.pad_token_id is None:
            raise ValueError("the PRM tokenizer needs a pad token")
        num_labels = getattr(getattr(unwrapped(model), "config", None), "num_labels", None)
        if num_labels is not None and num_labels != 2:
            raise ValueError(
                f"a process reward model needs num_labels=2 (class 1 = good step), got num_labels={num_labels}"
            )
        trained_with = getattr(getattr(unwrapped(model), "config", None), "step_separator", None)
        if trained_with is not None and trained_with != step_separator:
            warnings.warn(f"this PRM was trained with step_separator={trained_with!r} but scores with "
                          f"{step_separator!r}: its step-end positions will not match its training", stacklevel=2)
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.step_separator = step_separator
        self.device = device
        self.accelerator = accelerator

    @torch.no_grad()
    def __call__(self, prompts: Sequence[Any], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        if len(prompts) != len(steps):
            raise ValueError(f"got {len(prompts)} prompts but {len(steps)} step lists")
        device = self.device or next(unwrapped(self.model).parameters()).device
        was_training = self.model.training
        self.model.eval()
        scores: list[list[float]] = [[] for _ in prompts]
        todo = [i for i, s in enumerate(steps) if len(s) > 0]  # a completion without steps gets []
        batches = [todo[b : b + self.batch_size] for b in range(0, len(todo), self.batch_size)]
        forwards = same_number_of_forwards(len(batches), self.accelerator)
        for _ in range(forwards - len(batches)):  # collectives other processes wait on; the scores are not needed
            pad = torch.full((1, 1), self.tokenizer.pad_token_id, device=device)
            self.model(input_ids=pad, attention_mask=torch.ones_like(pad))
        for idx in batches:
            encoded = [
                encode_prm_example(
                    self.tokenizer, prompt_text(prompts[i], self.tokenizer), steps[i], self.step_separator
                )
                for i in idx
            ]
            batch = pad_batch([ids for ids, _ in encoded], self.tokenizer.pad_token_id)
            logits = self.model(**{k: v.to(device) for k, v in batch.items()}).logits
            if logits.dim() != 3 or logits.shape[-1] != 2:  # e.g. a sequence classifier passed by mistake
                raise ValueError("the process reward model must be a token-classification model with 2 labels, "
                                 f"giving logits (batch, tokens, 2); got logits of shape {tuple(logits.shape)}")
            probs = torch.softmax(logits.float(), dim=-1)[..., 1].cpu()
            for row, (i, (_, positions)) in enumerate(zip(idx, encoded)):
                scores[i] = probs[row, positions].tolist()
        self.model.train(was_training)
        return scores


def orm_scores(
    model, tokenizer, prompts: Sequence[Any], completions: Sequence[Any], batch_size: int = 16
) -> list[float]:
    """Scalar ORM rewards exactly as TRL's GRPOTrainer computes them for a model in `reward_funcs`."""
    device = next(model.parameters()).device
    texts = [orm_text(p, c, tokenizer) for p, c in zip(prompts, completions, strict=True)]
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            batch = encode_orm_texts(tokenizer, texts[i : i + batch_size])
            out.extend(model(**{k: v.to(device) for k, v in batch.items()}).logits[:, 0].float().cpu().tolist())
    return out


class OutcomeRewardModel:
    """An outcome reward model as a TRL reward function, scoring exactly as TRL's GRPOTrainer scores a model in
    `reward_funcs` (`orm_text`, right padding, no special tokens, one forward over this process's completions,
    `logits[:, 0]`). grpo_ext's trainer puts it in `reward_funcs` in place of the model when iterative RL trains the
    ORM, so that the model is placed as a `grpo_ext.engines.TrainableModel` (TRL would place it as a frozen scorer)
    and `model` can be the engine that trains it. Its `__name__` is the one TRL gives the model, so the reward's
    metrics keep their names. As TRL does, a tokenizer without a pad token pads with EOS, and the model's config
    learns that pad id (the sequence classifier reads the last token before padding).
    """

    def __init__(self, model, tokenizer, chat_template_kwargs: dict | None = None):
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        unwrapped(model).config.get_text_config().pad_token_id = tokenizer.pad_token_id
        self.model = model
        self.tokenizer = tokenizer
        self.chat_template_kwargs = chat_template_kwargs or {}
        self.__name__ = unwrapped(model).config._name_or_path.split("/")[-1]

    @torch.no_grad()
    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs) -> list[float]:
        texts = [orm_text(p, c, self.tokenizer, **self.chat_template_kwargs) for p, c in zip(prompts, completions)]
        inputs = encode_orm_texts(self.tokenizer, texts)
        device = next(unwrapped(self.model).parameters()).device
        was_training = self.model.training
        self.model.eval()
        logits = self.model(**{k: v.to(device) for k, v in inputs.items()}).logits[:, 0]
        self.model.train(was_training)
        return logits.float().tolist()


def unwrap_reward_model(reward_model):
    """The `nn.Module` whose parameters a refresh must update: `.model` of a `ProcessRewardModel` or an
    `OutcomeRewardModel`, the inner module of a DDP/DeepSpeed wrapper (`.module`), or the model itself."""
    model = reward_model.model if isinstance(reward_model, (ProcessRewardModel, OutcomeRewardModel)) else reward_model
    return unwrapped(model)
