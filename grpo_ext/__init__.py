"""DeepSeekMath-style extensions to TRL's GRPO trainer."""
