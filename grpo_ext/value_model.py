r"""PPO's value model (critic) for `advantage_estimator="gae"`: built, evaluated, trained, checkpointed.

Pieces, from pure to wired:

* `clipped_value_loss(values, old_values, returns, mask, cliprange)`: PPO's clipped value loss and clip fraction;
* `explained_variance(values, returns, mask)`: how much of the returns' variance the values explain;
* `build_value_model(policy, name_or_path)`: a token-classification model with one label (a scalar head);
* `token_values(model, input_ids, attention_mask, num_completion_tokens, batch_size)`: V_t of each completion token;
* `ValueModelCallback`: steps the critic's optimizer with the policy's, saves/restores it inside TRL's checkpoints
  (`checkpoint-<step>/value_model/`) and saves the final critic under `output_dir/value_model`.
"""

from __future__ import annotations

import copy
import os

import torch
from transformers import AutoConfig, AutoModelForTokenClassification, TrainerCallback

from .iterative import _atomic_torch_save, _write_json

STATE_DIR_NAME = "value_model"  # inside each checkpoint-<step>/, and under output_dir for the final critic
STATE_FILE = "value_model.pt"
MARKER_FILE = "state.json"  # written last: its presence marks a complete checkpoint-<step>/value_model/ folder


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, cliprange: float
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""PPO's clipped value loss (TRL's former PPOTrainer), masked mean over the valid tokens; returns (loss, clipfrac).

        V^clip_t = clip(V_t, V^old_t - c, V^old_t + c)
        loss     = mean_{t : m_t = 1} 0.5 * max((V_t - R_t)^2, (V^clip_t - R_t)^2)
        clipfrac = fraction of valid tokens where the clipped term is the larger

    `values` (B, T) carries the gradient; `old_values` (V at sampling time) and `returns` (GAE's targets) are
    detached. An all-zero mask gives loss 0 and clipfrac 0.
    """
    mask = mask.to(values.dtype)
    old_values, returns = old_values.detach().to(values.dtype), returns.detach().to(values.dtype)
    clipped = old_values + (values - old_values).clamp(-cliprange, cliprange)
    unclipped_loss = (values - returns) ** 2
    clipped_loss = (clipped - returns) ** 2
    loss = 0.5 * _masked_mean(torch.max(unclipped_loss, clipped_loss), mask)
    clipfrac = _masked_mean((clipped_loss > unclipped_loss).to(values.dtype), mask)
    return loss, clipfrac.detach()


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    r"""1 - Var(R - V) / Var(R) over the valid tokens (1: perfect values, 0: no better than a constant); NaN when the
    returns do not vary."""
    valid = mask.bool()
    returns, values = returns[valid].double(), values[valid].double()
    if returns.numel() < 2 or returns.var() == 0:
        return float("nan")
    return (1.0 - (returns - values).var() / returns.var()).item()


def build_value_model(policy, name_or_path: str | None = None, **from_pretrained_kwargs):
    """The critic: `AutoModelForTokenClassification` with one label and no dropout, loaded from `name_or_path`, or, with
    None, the policy's architecture and config with the policy's trunk weights (its LM head dropped; the scalar head
    initialised as transformers initialises a new head). `policy` is the unwrapped policy model (a PEFT model
    contributes its base weights)."""
    if name_or_path is not None:
        config = AutoConfig.from_pretrained(name_or_path, num_labels=1)
        config.classifier_dropout = 0.0  # not every config class has it: set as an attribute, not a kwarg
        return AutoModelForTokenClassification.from_pretrained(name_or_path, config=config, **from_pretrained_kwargs)
    if hasattr(policy, "get_base_model"):  # PEFT: the trunk without adapters
        policy = policy.get_base_model()
    config = copy.deepcopy(policy.config)
    config.num_labels, config.classifier_dropout = 1, 0.0
    critic = AutoModelForTokenClassification.from_config(config, dtype=policy.dtype)
    trunk = getattr(policy, policy.base_model_prefix)
    getattr(critic, critic.base_model_prefix).load_state_dict(trunk.state_dict())
    return critic.to(next(policy.parameters()).device)


def token_values(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_completion_tokens: int, batch_size: int
) -> torch.Tensor:
    """V_t for each of the last `num_completion_tokens` tokens, (B, T) in float32: the head's output at the position
    before token t, the state from which the policy chose it (aligned as TRL aligns the policy's log-probs)."""
    values = []
    for start in range(0, input_ids.size(0), batch_size):
        logits = model(
            input_ids=input_ids[start : start + batch_size], attention_mask=attention_mask[start : start + batch_size]
        ).logits
        values.append(logits[:, -num_completion_tokens - 1 : -1, 0].float())
    return torch.cat(values, dim=0)


class ValueModelCallback(TrainerCallback):
    """Steps the critic's optimizer at every policy optimizer step (after clipping its gradients to
    `max_grad_norm`), and saves/restores the critic and its optimizer inside TRL's checkpoints (`load` is called by
    the trainer's `_load_optimizer_and_scheduler`, which receives the checkpoint path however the run was resumed).

    Args:
        trainer: the `grpo_ext.GRPOTrainer` holding `value_model` and `value_optimizer` (prepared by accelerate).
    """

    def __init__(self, trainer):
        self.trainer = trainer

    @property
    def _critic(self):
        return self.trainer.accelerator.unwrap_model(self.trainer.value_model)

    def on_optimizer_step(self, args, state, control, **kwargs):
        trainer = self.trainer
        parameters = [p for p in trainer.value_model.parameters() if p.grad is not None]
        if args.max_grad_norm and args.max_grad_norm > 0 and parameters:
            norm = torch.nn.utils.clip_grad_norm_(parameters, args.max_grad_norm)
            trainer._metrics["train"]["value/grad_norm"].append(norm.item())
        trainer.value_optimizer.step()
        trainer.value_optimizer.zero_grad(set_to_none=True)

    # -- checkpoints -----------------------------------------------------------------------------------------

    def on_save(self, args, state, control, **kwargs):
        """`checkpoint-<step>/value_model/`: weights and optimizer state, then `state.json` (main process)."""
        if not self.trainer.accelerator.is_main_process:
            return
        directory = os.path.join(args.output_dir, f"checkpoint-{state.global_step}", STATE_DIR_NAME)
        os.makedirs(directory, exist_ok=True)
        weights = {k: v.detach().cpu().clone() for k, v in self._critic.state_dict().items()}
        _atomic_torch_save({"model": weights, "optimizer": self.trainer.value_optimizer.state_dict()},
                           os.path.join(directory, STATE_FILE))
        _write_json(os.path.join(directory, MARKER_FILE), {"global_step": state.global_step, "files": [STATE_FILE]})

    def load(self, checkpoint: str) -> None:
        """Restore what `on_save` wrote in `checkpoint` (the trainer calls it where TRL loads its optimizer)."""
        directory = os.path.join(checkpoint, STATE_DIR_NAME)
        if not os.path.isfile(os.path.join(directory, MARKER_FILE)):
            raise ValueError(
                f"cannot resume PPO from {checkpoint}: {directory}/{MARKER_FILE} is missing, so the value model and "
                "its optimizer were not (completely) saved in this checkpoint (the run stopped while writing it, or it "
                "was written without advantage_estimator='gae'). Resume from an earlier checkpoint."
            )
        state = torch.load(os.path.join(directory, STATE_FILE), map_location="cpu", weights_only=True)
        self._critic.load_state_dict(state["model"])
        self.trainer.value_optimizer.load_state_dict(state["optimizer"])

    def on_train_end(self, args, state, control, **kwargs):
        """The final critic, loadable with `AutoModelForTokenClassification.from_pretrained(output_dir/value_model)`."""
        if self.trainer.accelerator.is_main_process:
            directory = os.path.join(args.output_dir, STATE_DIR_NAME)
            self._critic.save_pretrained(directory)
            self.trainer.processing_class.save_pretrained(directory)
