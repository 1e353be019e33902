r"""PPO's value model (critic) for `advantage_estimator="gae"`: built, evaluated, trained, checkpointed.

Pieces, from pure to wired:

* `clipped_value_loss(values, old_values, returns, mask, cliprange)`: PPO's clipped value loss and clip fraction;
* `explained_variance(values, returns, mask)`: how much of the returns' variance the values explain;
* `build_value_model(policy, name_or_path)`: a token-classification model with one label (a scalar head);
* `token_values(model, input_ids, attention_mask, num_completion_tokens, batch_size)`: V_t of each completion token;
* `ValueModelCallback`: steps the critic (a `grpo_ext.engines.TrainableModel`: its own DeepSpeed engine, FSDP2
  shards or DDP) with the policy's optimizer step, saves/restores it inside TRL's checkpoints
  (`checkpoint-<step>/value_model/`) and saves the final critic under `output_dir/value_model`.
"""

from __future__ import annotations

import copy
import os

import torch
from transformers import AutoConfig, AutoModelForTokenClassification, TrainerCallback

from .checkpoint import finish_folder, read_folder, save_pretrained_full
from .engines import copy_parameters

STATE_DIR_NAME = "value_model"  # inside each checkpoint-<step>/, and under output_dir for the final critic


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


def build_value_model(policy, name_or_path: str | None = None, seed: int = 0, **from_pretrained_kwargs):
    """The critic: `AutoModelForTokenClassification` with one label, float32 weights and every dropout off (V_old and
    V must be the same function of the same weights, as verl and OpenRLHF disable the critic's dropout).

    Loaded from `name_or_path`, or, with None, the policy's architecture and config with the policy's trunk weights
    (its LM head dropped). A new scalar head (a checkpoint without one, or the policy's copy) is drawn by
    `initialise_head` from `seed`. `policy` is the unwrapped policy: a PEFT model contributes its base weights,
    adapters left out (at the start of training a new LoRA adapter adds nothing). Under ZeRO-3 the critic is built
    partitioned and the policy's shards are gathered into it (`grpo_ext.engines.copy_parameters`); under FSDP2 the
    policy is still whole when the trainer is built."""
    from trl.trainer.utils import disable_dropout_in_model

    kwargs = {"dtype": torch.float32, **from_pretrained_kwargs}
    if name_or_path is not None:
        config = without_dropout(AutoConfig.from_pretrained(name_or_path, num_labels=1))
        critic, loading = AutoModelForTokenClassification.from_pretrained(
            name_or_path, config=config, output_loading_info=True, **kwargs
        )
        if any(key.startswith(("score.", "classifier.")) for key in loading["missing_keys"]):
            initialise_head(critic, seed)
    else:
        base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
        config = without_dropout(copy.deepcopy(base.config))
        config.num_labels = 1
        critic = AutoModelForTokenClassification.from_config(config, dtype=torch.float32)
        critic_trunk = getattr(critic, critic.base_model_prefix)
        adapters = list(getattr(policy, "peft_config", {}))
        policy_trunk = dict(base_parameters(getattr(base, base.base_model_prefix), adapters))
        names = [name for name, _ in critic_trunk.named_parameters()]
        missing = [name for name in names if name not in policy_trunk]
        if missing:
            raise ValueError(f"the critic's trunk has parameters the policy's lacks: {missing[:5]}; pass "
                             "value_model_name_or_path")
        copy_parameters([policy_trunk[name] for name in names], [p for _, p in critic_trunk.named_parameters()])
        initialise_head(critic, seed)
    disable_dropout_in_model(critic)
    return critic


def initialise_head(critic, seed: int) -> None:
    """The scalar head's weight drawn from N(0, initializer_range^2) by a generator of its own seeded with `seed`, its
    bias (if any) 0, as transformers initialises a new head but the same on every engine: ZeRO-3 builds the model
    partitioned and draws other random numbers than an ordinary construction does."""
    head = critic.score if hasattr(critic, "score") else critic.classifier
    std = getattr(critic.config, "initializer_range", 0.02)
    shape = getattr(head.weight, "ds_shape", head.weight.shape)  # ZeRO-3's partitioned parameter: its full shape
    weight = torch.empty(shape).normal_(0.0, std, generator=torch.Generator().manual_seed(seed))
    sources, targets = [torch.nn.Parameter(weight, requires_grad=False)], [head.weight]
    if getattr(head, "bias", None) is not None:
        sources.append(torch.nn.Parameter(torch.zeros(getattr(head.bias, "ds_shape", head.bias.shape))))
        targets.append(head.bias)
    copy_parameters(sources, targets)


def without_dropout(config):
    """`config` with every dropout probability it holds set to 0 (`attention_dropout`, `hidden_dropout_prob`,
    `resid_pdrop`, ...: attributes whose name says dropout and whose value is a float), and `classifier_dropout`, which
    the token-classification head reads (0.1 when absent), set to 0. Models read some of these as numbers in their
    forward (Qwen2's attention dropout), not as `nn.Dropout` modules, so zeroing the modules is not enough."""
    for name, value in config.to_dict().items():
        if isinstance(value, float) and ("dropout" in name or name.endswith("pdrop")):
            setattr(config, name, 0.0)
    config.classifier_dropout = 0.0  # not every config class has it: set as an attribute
    return config


def base_parameters(module: torch.nn.Module, adapters=()):
    """(name, parameter) of `module` as it was before PEFT wrapped it: a tuner layer's `base_layer` under the layer's
    own name, a `modules_to_save` wrapper's `original_module` likewise; the parameters of the named `adapters`
    (PEFT keys them by adapter name: `lora_A.default.weight`) left out. Without adapters, `named_parameters()`."""
    for name, parameter in module.named_parameters():
        if any(f".{adapter}." in f".{name}." for adapter in adapters):
            continue
        yield name.replace(".base_layer.", ".").replace(".original_module.", "."), parameter


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
    """Steps the critic (a `grpo_ext.engines.TrainableModel`) at every policy optimizer step, saves and restores it
    with TRL's checkpoints (`checkpoint-<step>/value_model/`, through `grpo_ext.checkpoint`), and saves the final
    critic, loadable, under `output_dir/value_model`. `load` is called by the trainer's
    `_load_optimizer_and_scheduler`, which receives the checkpoint path however the run was resumed.

    Args:
        trainer: the `grpo_ext.GRPOTrainer` holding `value_model`.
    """

    def __init__(self, trainer):
        self.trainer = trainer

    def on_optimizer_step(self, args, state, control, **kwargs):
        norm = self.trainer.value_model.step()
        if norm is not None:
            self.trainer._metrics["train"]["value/grad_norm"].append(norm)

    # -- checkpoints -----------------------------------------------------------------------------------------

    def on_save(self, args, state, control, **kwargs):
        """`checkpoint-<step>/value_model/`: weights and optimizer state from every process, then `state.json`."""
        directory = os.path.join(args.output_dir, f"checkpoint-{state.global_step}", STATE_DIR_NAME)
        files = self.trainer.value_model.save(directory)
        finish_folder(directory, self.trainer.accelerator, {"global_step": state.global_step}, files)

    def load(self, checkpoint: str) -> None:
        """Restore what `on_save` wrote in `checkpoint` (the trainer calls it where TRL loads its optimizer)."""
        directory = os.path.join(checkpoint, STATE_DIR_NAME)
        meta = read_folder(directory, "PPO", "the value model and its optimizer",
                           "It was written without advantage_estimator='gae'. Resume from a PPO checkpoint.")
        self.trainer.value_model.load(directory, meta["num_processes"])

    def on_train_end(self, args, state, control, **kwargs):
        """The final critic, loadable with `AutoModelForTokenClassification.from_pretrained(output_dir/value_model)`,
        written from its full weights (every process takes part in gathering them)."""
        save_pretrained_full(self.trainer.value_model.module, os.path.join(args.output_dir, STATE_DIR_NAME),
                             self.trainer.accelerator, self.trainer.processing_class)
