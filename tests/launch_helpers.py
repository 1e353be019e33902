"""Helpers for the launch tests (imported by them, and by the launched scripts through PYTHONPATH)."""

import socket


def free_port() -> int:
    """A TCP port that is free right now (for accelerate's --main_process_port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def distinct_characters_reward(completions, **kwargs):
    """A reward that differs between the completions of a random model, so GRPO advantages (and updates) are
    non-zero even when no completion is correct."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [len(set(text)) / 10.0 for text in texts]
