"""The one exception grpo_ext raises for a setting it refuses."""


class ConfigurationError(ValueError):
    """An option, or a combination of options, that grpo_ext refuses, with the reason and the fix: raised when a
    config or trainer is built, before anything trains. A `ValueError`, as TRL's and transformers' own option checks
    are; the launch entry points print it as one line (`launch.common.run_entry_point`)."""
