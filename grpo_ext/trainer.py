"""`GRPOTrainer`: TRL's GRPO trainer with DeepSeekMath's KL estimators, process supervision and Online RFT.

The subclass only wires the pure functions of `grpo_ext.kl`, `grpo_ext.advantages` and `grpo_ext.steps` into TRL's
extension points; with every new option at its default it calls straight through to TRL.

* `_compute_loss`: for a non-k3 estimator (or `kl_in="reward"`) TRL's loss is computed with `beta` set to 0, and
  `beta * aggregate(per_token_kl)` is added. TRL's aggregation is linear in the per-token loss, so this equals
  TRL's loss with the estimator swapped. The policy log-probs come from TRL's own forward (captured in
  `_get_per_token_logps_and_entropies`): no extra forward.
* `_generate_and_score_completions`: for process supervision, Online RFT and `kl_in="reward"` the advantages TRL
  computed are replaced by ours, built from the rewards of all processes (captured in `_calculate_rewards`).
  Process advantages have shape (B, T); TRL's `_compute_loss` accepts them.
* PPO (`advantage_estimator="gae"`): a value model (`grpo_ext.value_model`) gives V_old once per generation; the
  per-token rewards (DeepSeekMath eq. 2), GAE advantages (B, T) and returns are computed there, and `_compute_loss`
  back-propagates `vf_coef` times the clipped value loss through the critic alone: the critic is a separate
  `grpo_ext.engines.TrainableModel` (its own DeepSpeed engine, FSDP2 shards or DDP), stepped by
  `ValueModelCallback` with the policy's optimizer step. The policy's loss is TRL's, unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import torch
from accelerate.utils import gather, gather_object
from trl import GRPOTrainer as _TRLGRPOTrainer
from trl.models.utils import disable_gradient_checkpointing

from .advantages import (
    add_outcome_to_last_step,
    advantage_statistics,
    gae_advantages,
    normalize_group_step_rewards,
    online_rft_advantages,
    outcome_advantages,
    ppo_token_rewards,
    step_sums,
    steps_to_token_advantages,
    whiten_advantages,
)
from .config import DEEPSEEKMATH_OPTIONS, GRPOConfig, resolve_kl_defaults
from .engines import TrainableModel, prepare_frozen
from .errors import ConfigurationError
from .iterative import attach_iterative_rl
from .kl import KL_ESTIMATORS, aggregate_per_token_loss, per_token_kl
from .steps import locate_steps, named_step_splitter
from .value_model import ValueModelCallback, build_value_model, clipped_value_loss, explained_variance, token_values

logger = logging.getLogger(__name__)

# Values of the new options when a plain `trl.GRPOConfig` is passed: GRPOConfig's defaults, which are TRL's behaviour.
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(GRPOConfig) if f.name in DEEPSEEKMATH_OPTIONS}

class GRPOTrainer(_TRLGRPOTrainer):
    """[`trl.GRPOTrainer`] plus the options of [`grpo_ext.GRPOConfig`].

    Extra keyword arguments:
        process_reward_model: for `supervision="process"`, a callable `(prompts, steps) -> list[list[float]]`
            (one score per step; `prompts` as in the dataset, `steps[i]` the steps of completion i), or a Hugging
            Face token-classification model (then also pass `process_reward_tokenizer`), wrapped in
            `grpo_ext.reward_models.ProcessRewardModel`. Stored as `self.process_reward_model`, which may be
            replaced between steps (iterative RL).
        process_reward_tokenizer: the PRM's tokenizer when `process_reward_model` is a model.
        step_splitter: a callable `str -> list[str]` returning the steps of a completion, in order, each a
            substring of it. Defaults to splitting on `args.step_delimiter`.

    With `args.reward_model_refresh_steps > 0` the trainer runs iterative RL: `self.refresher`
    ([`grpo_ext.iterative.RewardModelRefresher`]) records every training batch's rollouts and, every that many
    optimizer steps, retrains the reward model (the PRM, or the one model in `reward_funcs`) with replay and
    resets the reference model to the policy.
    """

    _tag_names = ["trl", "grpo", "grpo_ext"]

    def __init__(
        self,
        model,
        reward_funcs=None,
        args=None,
        *trl_args,
        process_reward_model=None,
        process_reward_tokenizer=None,
        step_splitter: Callable[[str], list[str]] | None = None,
        **trl_kwargs,
    ):
        if args is None:  # as TRL does, but with our config so that the new options exist
            name = model if isinstance(model, str) else model.config._name_or_path
            args = GRPOConfig(f"{str(name).split('/')[-1]}-GRPO")
        options = {key: getattr(args, key, default) for key, default in _DEFAULTS.items()}
        options["kl_estimator"], options["kl_in"] = resolve_kl_defaults(
            options["advantage_estimator"], options["kl_estimator"], options["kl_in"]
        )
        _validate(options, args, reward_funcs, process_reward_model, step_splitter)
        self.ext = options
        if options["supervision"] == "process" and not reward_funcs:
            reward_funcs = [no_outcome_reward]  # TRL needs a reward source; the PRM supplies the signal
        if getattr(args, "reward_model_refresh_steps", 0) and options["supervision"] == "outcome":
            reward_funcs = _trainable_outcome_reward_model(reward_funcs, trl_kwargs, args)
        super().__init__(model, reward_funcs, args, *trl_args, **trl_kwargs)
        if options["compile_generation"]:  # TRL builds its GenerationConfig with disable_compile=True
            self.generation_config.disable_compile = False
        self.step_splitter = step_splitter or named_step_splitter(options["step_splitter"], options["step_delimiter"])
        self.process_reward_model = self._wrap_process_reward_model(process_reward_model, process_reward_tokenizer)
        self._capture_logps = False
        self._captured_logps = None
        self._captured_rewards = None
        # Iterative RL (DeepSeekMath Algorithm 1): None unless `reward_model_refresh_steps` > 0.
        self.refresher = attach_iterative_rl(self)
        # PPO's critic: a TrainableModel with its own optimizer, on the run's engine.
        self.value_model = None
        if options["advantage_estimator"] == "gae":
            self._attach_value_model(args)

    # ------------------------------------------------------------------------------------------------ set-up

    def _wrap_process_reward_model(self, prm, tokenizer):
        if prm is None or not isinstance(prm, torch.nn.Module):
            return prm
        if tokenizer is None:
            raise ValueError(
                "GRPOTrainer: process_reward_model is a model, so process_reward_tokenizer= is needed to score steps"
            )
        from .reward_models import ProcessRewardModel  # lazily: only this path needs it

        if not getattr(self.args, "reward_model_refresh_steps", 0):  # a scorer only, placed as TRL places its own
            prm = prepare_frozen(prm, self.accelerator)  # (iterative RL's refresher places it as a TrainableModel)
        return ProcessRewardModel(prm, tokenizer, step_separator=self.ext["step_delimiter"],
                                  accelerator=self.accelerator)

    def _attach_value_model(self, args) -> None:
        """Build the critic (`grpo_ext.value_model.build_value_model`) as a `TrainableModel` with its own AdamW (the
        policy's betas, eps, weight decay and gradient clipping; learning rate `value_learning_rate`, constant) and
        register its callback."""
        critic = build_value_model(self.accelerator.unwrap_model(self.model), self.ext["value_model_name_or_path"],
                                   seed=args.seed)
        if args.gradient_checkpointing:  # as the Trainer does for the policy: the critic's activations are as large
            critic.gradient_checkpointing_enable(gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs)
        self.value_model = TrainableModel(
            critic, self.accelerator, learning_rate=self.ext["value_learning_rate"],
            betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon, weight_decay=args.weight_decay,
            max_grad_norm=args.max_grad_norm, micro_batch_size=args.per_device_train_batch_size,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
        )  # fmt: skip
        self.value_callback = ValueModelCallback(self)
        self.add_callback(self.value_callback)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None and self.value_model is not None:  # resuming: the critic and its optimizer too
            self.value_callback.load(checkpoint)

    @property
    def _uses_trl_advantages(self) -> bool:
        return uses_trl_advantages(self.ext)

    # ------------------------------------------------------------------------------------------------ loss

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        result = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self._capture_logps:  # only set around TRL's loss forward in `_compute_loss`
            self._captured_logps = result[0]
        return result

    def _kl_is_trls(self) -> bool:
        """k3 in the loss is TRL's own KL term: leave it inside TRL's loss."""
        return self.ext["kl_estimator"] == "k3" and self.ext["kl_in"] == "loss"

    def _compute_loss(self, model, inputs):
        if self.value_model is not None:
            self._value_loss(inputs)
        return self._policy_loss(model, inputs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        """TRL's step, except during PPO's critic warm-up (`value_warmup_steps`): then the batch is generated and
        scored as TRL would, the critic alone learns from it, and the policy receives no gradient (its optimizer
        skips parameters without one: no moment, step count or weight decay changes)."""
        if self.value_model is None or self.state.global_step >= self.ext["value_warmup_steps"]:
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        self._value_loss(self._prepare_inputs(inputs))
        self._step += 1  # TRL's count of micro-batches, which schedules its generations
        return torch.zeros((), device=self.accelerator.device)

    def _value_loss(self, inputs) -> torch.Tensor:
        """The clipped value loss of the critic on this micro-batch; in training, `vf_coef` times it (divided for
        gradient accumulation as TRL divides its loss) is back-propagated through the critic's own engine, the
        gradient all-reduced on the accumulation's last micro-batch only. Logs `value/loss` and `value/clipfrac`."""
        mode = "train" if self.model.training else "eval"
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        with torch.set_grad_enabled(mode == "train"):
            values = token_values(self.value_model, ids, attention, inputs["completion_ids"].size(1), ids.size(0))
            loss, clipfrac = clipped_value_loss(
                values, inputs["old_values"], inputs["returns"], inputs["value_mask"], self.ext["cliprange_value"]
            )
        self._metrics[mode]["value/loss"].append(self.accelerator.gather(loss.detach()).mean().item())
        self._metrics[mode]["value/clipfrac"].append(self.accelerator.gather(clipfrac).mean().item())
        if mode == "train":
            scale = self.ext["vf_coef"] / self.current_gradient_accumulation_steps
            self.value_model.backward(scale * loss, sync=self.accelerator.sync_gradients)
        return loss.detach()

    def _policy_loss(self, model, inputs):
        if self.beta == 0.0:
            return super()._compute_loss(model, inputs)
        estimator, kl_in = self.ext["kl_estimator"], self.ext["kl_in"]
        trl_kl = self._kl_is_trls()
        beta = self.beta
        self._capture_logps = True
        if not trl_kl:
            self.beta = 0.0
        try:
            loss = super()._compute_loss(model, inputs)
        finally:
            self.beta = beta
            self._capture_logps = False
        logps, self._captured_logps = self._captured_logps, None

        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        old_logps = inputs.get("old_per_token_logps")
        old_logps = logps.detach() if old_logps is None else old_logps
        old_or_none = old_logps if self.args.use_bias_correction_kl else None
        kl_kwargs = dict(old_logps=old_or_none, mask=mask, importance_sampling_level=self.importance_sampling_level)
        ref_logps = inputs["ref_per_token_logps"]
        mode = "train" if self.model.training else "eval"

        if not trl_kl and kl_in == "loss":
            kl = per_token_kl(logps, ref_logps, estimator, **kl_kwargs)
            # set by the training loop only: `evaluate()` before `train()` has no accumulation (as in TRL's eval)
            accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1
            loss = loss + beta * aggregate_per_token_loss(
                kl,
                mask,
                self.loss_type,
                gradient_accumulation_steps=accumulation,
                max_completion_length=self.max_completion_length,
                num_items_in_batch=inputs.get("num_items_in_batch"),
                num_processes=self.accelerator.num_processes,
                steps_per_generation=self.args.steps_per_generation,
                training=mode == "train",
            )
            self._metrics[mode]["kl"].append(self._global_masked_mean(kl.detach(), mask))
        # The value of every estimator, beside TRL's `kl` (the one in use); k3+ has k3's value.
        with torch.no_grad():
            for name in ("k1", "k2", "k3"):
                value = per_token_kl(logps.detach(), ref_logps, name, **kl_kwargs)
                self._metrics[mode][f"kl/{name}"].append(self._global_masked_mean(value, mask))
        return loss

    def _global_masked_mean(self, x: torch.Tensor, mask: torch.Tensor) -> float:
        """Token mean over all processes, as TRL's `global_masked_mean` for (B, T) tensors."""
        x = x.expand_as(mask) if x.shape != mask.shape else x
        totals = torch.stack([(x * mask).sum(), mask.sum().float()])
        totals = self.accelerator.reduce(totals, reduction="sum")
        return (totals[0] / totals[1].clamp(min=1.0)).item()

    # ------------------------------------------------------------------------------------------------ advantages

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        if self.refresher is not None and self.model.training:  # this iteration's rollouts become RM data
            self.refresher.record_from_inputs(inputs, prompts, completions)
        self._captured_rewards = (prompts, completion_ids_list, rewards_per_func)
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        captured, self._captured_rewards = self._captured_rewards, None
        if self._uses_trl_advantages:
            return output
        prompts, completion_ids_list, rewards_per_func = captured
        device = self.accelerator.device
        mode = "train" if self.model.training else "eval"
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        process_slice = slice(
            self.accelerator.process_index * len(prompts), (self.accelerator.process_index + 1) * len(prompts)
        )
        mask = output["completion_mask"]
        if "tool_mask" in output:
            mask = mask * output["tool_mask"]

        # Weighted outcome reward of every completion of every process; NaN where no reward function scored it
        # (TRL's unscorable rows; with no outcome reward function at all every row is NaN).
        rewards = (rewards_per_func * self.reward_weights.to(device).unsqueeze(0)).nansum(dim=1)
        rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan

        if self.ext["advantage_estimator"] == "gae":
            if group_size == 1:  # TRL counts a group of one as a group whose rewards all agree: not a statistic
                del self._metrics[mode]["frac_reward_zero_std"]
            output.update(self._gae_advantages(output, rewards[process_slice], mask, mode))
            self._log_completion_advantages(gather(output["advantages"][:, 0]))  # the table: each first token's
            self._log_advantage_statistics(output["advantages"], mask, mode)
            return output

        token_kl = sequence_kl = None
        # Rows without a KL estimate, all processes: TRL masks truncated completions (`mask_truncated_completions`),
        # so their KL penalty would be 0 while their reward still set the group's mean and std. They leave the group
        # statistics instead (their tokens are out of the loss anyway).
        unmeasured = torch.zeros_like(rewards, dtype=torch.bool)
        if self.ext["kl_in"] == "reward":
            token_kl = self._sampling_kl(output) * mask  # (B, T), detached
            sequence_kl = gather(token_kl.sum(-1))  # (N,)
            self._metrics[mode]["kl"].append(self._global_masked_mean(token_kl, mask))
            if self.mask_truncated_completions:
                unmeasured = gather(self._truncated(completion_ids_list).to(device, torch.float32)).bool()

        if self.ext["advantage_estimator"] == "online_rft":
            advantages = online_rft_advantages(rewards, self.ext["rft_correct_threshold"])
            self._metrics[mode]["online_rft/frac_correct"].append(advantages.mean().item())
            if sequence_kl is not None:
                advantages = advantages - self.beta * sequence_kl
            advantages[torch.isnan(rewards) | unmeasured] = 0.0
            self._log_completion_advantages(advantages)
            advantages = advantages[process_slice]
        elif self.ext["supervision"] == "process":
            advantages = self._process_advantages(
                prompts, completion_ids_list, rewards, token_kl, unmeasured, group_size, mask.size(1), process_slice,
                mode,
            ).to(device)
            self._metrics[mode]["process/advantage_mean"].append(self._global_masked_mean(advantages, mask))
        else:  # outcome GRPO with the KL penalty in the reward
            penalized = rewards - self.beta * sequence_kl
            penalized[unmeasured] = torch.nan  # out of the group statistics, advantage 0
            advantages = outcome_advantages(penalized, group_size, self.scale_rewards)
            self._log_completion_advantages(advantages)
            advantages = advantages[process_slice]
        advantages = advantages.to(device)
        self._log_advantage_statistics(advantages, mask, mode)
        output["advantages"] = advantages
        return output

    def _gae_advantages(self, output, scores: torch.Tensor, mask: torch.Tensor, mode: str) -> dict[str, torch.Tensor]:
        """PPO's targets for this process's rows: V_old from the critic, per-token rewards (DeepSeekMath eq. 2: the
        score at the last token, `-beta * KL_t` at every token when `kl_in="reward"`), GAE advantages and returns
        (`grpo_ext.advantages`), advantages whitened over the valid tokens of all processes. A row with no score
        (every reward function returned None) or no valid token (`mask_truncated_completions`) gets advantage 0
        and stays out of the value loss (`value_mask`)."""
        ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        attention = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        batch_size = self.args.per_device_train_batch_size if mode == "train" else self.args.per_device_eval_batch_size
        critic = self.value_model.model
        with torch.no_grad(), disable_gradient_checkpointing(critic, self.args.gradient_checkpointing_kwargs):
            values = token_values(self.value_model, ids, attention, mask.size(1), batch_size)
        scored = ~torch.isnan(scores) & mask.bool().any(dim=1)
        valid = mask * scored.unsqueeze(1).to(mask.dtype)
        kl = torch.zeros_like(values)
        if self.ext["kl_in"] == "reward" and self.beta != 0.0:
            kl = self._sampling_kl(output).float() * mask
            self._metrics[mode]["kl"].append(self._global_masked_mean(kl, mask))
        token_rewards = torch.zeros_like(values)
        if scored.any():
            token_rewards[scored] = ppo_token_rewards(scores[scored], kl[scored], mask[scored], self.beta)
        advantages, returns = gae_advantages(token_rewards, values, valid, self.ext["gamma"], self.ext["lam"])
        self._metrics[mode]["value/mean"].append(self._global_masked_mean(values, valid))
        self._metrics[mode]["value/returns_mean"].append(self._global_masked_mean(returns, valid))
        all_valid = gather(self.accelerator.pad_across_processes(valid, dim=1))
        all_values = gather(self.accelerator.pad_across_processes(values, dim=1))
        all_returns = gather(self.accelerator.pad_across_processes(returns, dim=1))
        self._metrics[mode]["value/explained_variance"].append(explained_variance(all_values, all_returns, all_valid))
        if self.ext["whiten_advantages"] and all_valid.sum() >= 2:
            # over the valid tokens of the whole batch: gather every process's rows, whiten, keep ours
            all_advantages = gather(self.accelerator.pad_across_processes(advantages, dim=1))
            rows = slice(self.accelerator.process_index * len(mask), (self.accelerator.process_index + 1) * len(mask))
            advantages = whiten_advantages(all_advantages, all_valid)[rows, : mask.size(1)]
        return {"advantages": advantages, "returns": returns, "old_values": values, "value_mask": valid}

    def _truncated(self, completion_ids_list) -> torch.Tensor:
        """TRL's rule for a truncated completion: its last token is neither EOS nor padding (local rows)."""
        eos_and_pad = {*self.eos_token_ids, self._tokenizer.pad_token_id}
        return torch.tensor([len(ids) > 0 and ids[-1] not in eos_and_pad for ids in completion_ids_list])

    def _log_advantage_statistics(self, advantages: torch.Tensor, mask: torch.Tensor, mode: str) -> None:
        """`advantage_std` and `frac_advantage_zero` of the advantages in use (see `advantage_statistics`), beside
        TRL's `reward_std` and `frac_reward_zero_std`, which describe the outcome rewards only."""
        per_token = advantages if advantages.dim() == 2 else advantages.unsqueeze(1).expand_as(mask)
        carries_gradient = ((per_token != 0) & mask.bool()).any(dim=1)
        first_token = gather(per_token[:, 0].float()).cpu()
        std, frac_zero = advantage_statistics(first_token, gather(carries_gradient.float()).cpu() > 0)
        self._metrics[mode]["advantage_std"].append(std)
        self._metrics[mode]["frac_advantage_zero"].append(frac_zero)

    def _log_completion_advantages(self, advantages: torch.Tensor) -> None:
        """Overwrite the advantages TRL just logged for the completions table (one per completion, all processes)."""
        logged = self._logs["advantages"]
        n = min(len(advantages), len(logged))
        for k, value in enumerate(advantages.tolist()[-n:] if n else []):
            logged[len(logged) - n + k] = value

    def _sampling_kl(self, output) -> torch.Tensor:
        """Detached per-token KL estimate at the sampling policy pi_old on the sampled tokens, (B, T).

        Reuses TRL's `old_per_token_logps` when TRL computed them; otherwise this is the one extra (no-grad)
        policy forward of `kl_in="reward"`.
        """
        old_logps = output.get("old_per_token_logps")
        if old_logps is None:
            ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
            attention = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
            batch_size = (
                self.args.per_device_train_batch_size if self.model.training else self.args.per_device_eval_batch_size
            )
            # as TRL does for its own no-grad forwards (avoids checkpointing's no-grad warning)
            with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
                old_logps, _, _ = self._get_per_token_logps_and_entropies(
                    self.model, ids, attention, output["completion_ids"].size(1), batch_size=batch_size
                )
        return per_token_kl(old_logps, output["ref_per_token_logps"], self.ext["kl_estimator"]).detach()

    def _process_advantages(
        self, prompts, completion_ids_list, rewards, token_kl, unmeasured, group_size, num_tokens, process_slice, mode
    ) -> torch.Tensor:
        """Split, score and normalise steps over the whole group (all processes); return local (B, T) advantages."""
        steps, step_ends = [], []
        for ids in completion_ids_list:
            completion_steps, ends = locate_steps(ids, self._tokenizer, self.step_splitter)
            steps.append(completion_steps)
            step_ends.append(ends)
        step_rewards = self.process_reward_model(prompts, steps)
        step_rewards = _check_step_rewards(step_rewards, steps)
        num_steps = torch.tensor([len(s) for s in steps], dtype=torch.float32, device=rewards.device)
        for i, ids in enumerate(completion_ids_list):
            if not step_ends[i] and len(ids):
                # No step (EOS only, whitespace, or the splitter found none): one unscored step ending at the last
                # token, so that the completion keeps its outcome reward (a degenerate output is still judged).
                step_rewards[i], step_ends[i] = [float("nan")], [len(ids) - 1]
        if self.ext["process_outcome_reward"] == "last_step":
            step_rewards = add_outcome_to_last_step(step_rewards, rewards[process_slice].tolist())
        if token_kl is not None:  # PPO-style: each step's reward pays for the KL of its own tokens
            for i, ends in enumerate(step_ends):
                step_kl = step_sums(token_kl[i], ends)
                step_rewards[i] = [r - self.beta * k for r, k in zip(step_rewards[i], step_kl)]
        for i in torch.nonzero(unmeasured[process_slice]).flatten().tolist():  # no KL estimate: out of the statistics
            step_rewards[i] = [float("nan")] * len(step_rewards[i])

        # Group statistics need every completion of the group, which may live on other processes.
        all_step_rewards = gather_object(step_rewards)
        normalized = normalize_group_step_rewards(all_step_rewards, group_size, self.scale_rewards)
        # the completions table shows each completion's advantage at its first token
        self._log_completion_advantages(torch.tensor([sum(r for r in rows if r == r) for rows in normalized]))

        num_steps = gather(num_steps)
        self._metrics[mode]["process/steps_per_completion"].append(num_steps.mean().item())
        self._metrics[mode]["process/frac_no_steps"].append((num_steps == 0).float().mean().item())
        if bool((num_steps == 0).all()):
            logger.warning(
                "Process supervision: the step splitter returned no steps for any completion of this batch, so only "
                "the outcome rewards are left (each completion is one unscored step). Check step_delimiter / "
                "step_splitter against the model's outputs."
            )
        return steps_to_token_advantages(normalized[process_slice], step_ends, num_tokens)


def _trainable_outcome_reward_model(reward_funcs, trl_kwargs: dict, args) -> list:
    """`reward_funcs` with its one outcome reward model (a `PreTrainedModel`) replaced by an `OutcomeRewardModel`
    wrapping it, which scores exactly as TRL would: iterative RL then places the model as a TrainableModel on the
    run's engine, where TRL would have placed it as a frozen scorer. Left as given when there is not exactly one
    model (`attach_iterative_rl` says what is wrong)."""
    from transformers import AutoTokenizer, PreTrainedModel

    from .reward_models import OutcomeRewardModel

    funcs = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
    models = [i for i, f in enumerate(funcs) if isinstance(f, PreTrainedModel)]
    if len(models) != 1:
        return reward_funcs
    i = models[0]
    classes = trl_kwargs.get("reward_processing_classes")
    classes = list(classes) if isinstance(classes, (list, tuple)) else [classes] * len(funcs)
    tokenizer = classes[i] if classes[i] is not None else AutoTokenizer.from_pretrained(
        funcs[i].config._name_or_path, trust_remote_code=getattr(args, "trust_remote_code", False))
    funcs[i] = OutcomeRewardModel(funcs[i], tokenizer, getattr(args, "chat_template_kwargs", None))
    return funcs


def uses_trl_advantages(options: dict) -> bool:
    """TRL's own advantages are used unchanged: outcome supervision, GRPO, KL in the loss."""
    return (
        options["supervision"] == "outcome" and options["advantage_estimator"] == "grpo" and options["kl_in"] == "loss"
    )


def no_outcome_reward(completions, **kwargs) -> list[float]:
    """Outcome reward 0 for every completion: stands in when process supervision runs without `reward_funcs`."""
    return [0.0] * len(completions)


def _check_step_rewards(step_rewards, steps) -> list[list[float]]:
    """Validate the PRM's output shape; None becomes NaN (unscored step)."""
    if len(step_rewards) != len(steps):
        raise ValueError(
            f"process_reward_model returned scores for {len(step_rewards)} completions, expected {len(steps)}"
        )
    checked = []
    for i, (scores, completion_steps) in enumerate(zip(step_rewards, steps)):
        scores = list(scores)
        if len(scores) != len(completion_steps):
            raise ValueError(
                f"process_reward_model returned {len(scores)} scores for completion {i}, which has "
                f"{len(completion_steps)} steps"
            )
        row = []
        for j, score in enumerate(scores):
            try:
                row.append(float("nan") if score is None else float(score))
            except (TypeError, ValueError):
                raise ValueError(
                    f"process_reward_model returned {score!r} for step {j} of completion {i}; expected a number or None"
                ) from None
        checked.append(row)
    return checked


def _validate(options: dict, args, reward_funcs, process_reward_model, step_splitter) -> None:
    """Construction-time errors for option combinations that cannot work, warnings for ones that change meaning."""
    if options["kl_estimator"] not in KL_ESTIMATORS:
        raise ConfigurationError(
            f"GRPOTrainer: unknown kl_estimator={options['kl_estimator']!r}; expected one of {', '.join(KL_ESTIMATORS)}"
        )
    if options["kl_in"] == "reward" and args.beta == 0.0 and options["advantage_estimator"] != "gae":
        raise ConfigurationError(
            "GRPOTrainer: kl_in='reward' with beta=0.0 has no KL to put in the reward; set beta > 0."
        )
    aggregation = getattr(args, "multi_objective_aggregation", "sum_then_normalize")
    if not uses_trl_advantages(options) and aggregation != "sum_then_normalize":
        raise ConfigurationError(
            "GRPOTrainer: supervision='process', advantage_estimator='online_rft' and kl_in='reward' combine the "
            "reward functions by their weighted sum; multi_objective_aggregation must be 'sum_then_normalize'."
        )
    if options["advantage_estimator"] == "gae":
        if options["supervision"] == "process":
            raise ConfigurationError(
                "GRPOTrainer: advantage_estimator='gae' is not supported with supervision='process'."
            )
        if options["value_head_on_policy"]:
            raise ConfigurationError("GRPOTrainer: value_head_on_policy=True is not implemented yet; use a separate "
                                     "value model (value_model_name_or_path, or None for a copy of the policy).")
        if not reward_funcs:
            raise ConfigurationError(
                "GRPOTrainer: advantage_estimator='gae' needs reward_funcs (the score r_phi(q, o))."
            )
    if options["advantage_estimator"] == "online_rft":
        if not reward_funcs:
            raise ConfigurationError(
                "GRPOTrainer: advantage_estimator='online_rft' judges each completion correct or not by its outcome "
                "reward, but no reward_funcs were given (every advantage would be 0). Pass an outcome reward "
                "function, e.g. rewards.accuracy_reward."
            )
        if args.beta > 0.0:
            logger.warning(
                "GRPOTrainer: advantage_estimator='online_rft' with beta=%s keeps the KL term (in the %s), so the "
                "gradient is Online RFT's plus a KL penalty; DeepSeekMath's Online RFT gradient needs beta=0 and "
                "loss_type='grpo' (docs/grpo_ext.md).", args.beta, options["kl_in"]
            )
    if options["supervision"] == "process":
        if options["advantage_estimator"] == "online_rft":
            logger.warning(
                "GRPOTrainer: advantage_estimator='online_rft' judges each completion by its outcome reward; the "
                "process reward model is not consulted under supervision='process'."
            )
        elif process_reward_model is None:
            raise ConfigurationError(
                "GRPOTrainer: supervision='process' needs process_reward_model= (a callable "
                "(prompts, steps) -> list[list[float]] or a token-classification model with process_reward_tokenizer=)."
            )
        elif not callable(process_reward_model):
            raise TypeError("GRPOTrainer: process_reward_model must be callable or a torch model")
    elif process_reward_model is not None:
        logger.warning("GRPOTrainer: process_reward_model is ignored because supervision='outcome'.")
    if step_splitter is not None:
        if not callable(step_splitter):
            raise TypeError("GRPOTrainer: step_splitter must be a callable str -> list[str]")
        probe = step_splitter("Step 1: 1 + 1 = 2.\n\nStep 2: 2 * 3 = 6.\n\nThe answer is 6.")
        if not isinstance(probe, list) or not all(isinstance(s, str) for s in probe):
            raise TypeError("GRPOTrainer: step_splitter must return a list of str")
        if not probe:
            logger.warning(
                "GRPOTrainer: step_splitter returned no steps for a three-step probe text; if it returns no steps "
                "for every completion, every process advantage will be 0."
            )
