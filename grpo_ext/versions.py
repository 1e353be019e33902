"""Which library versions produced a result: every results JSON records them, because figures move with them (the
quickstart's rewards changed order between transformers 5.24 and 5.25 at the same seed)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

# the libraries a training or evaluation figure depends on, by their distribution names
LIBRARIES = ("torch", "transformers", "trl", "accelerate", "datasets", "peft", "math-verify")


def library_versions(libraries: tuple[str, ...] = LIBRARIES) -> dict[str, str | None]:
    """`{distribution: installed version}` (None when not installed), read from the installed metadata: no import,
    so it costs nothing and works before torch loads."""
    versions = {}
    for name in libraries:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions
