"""What CI and a newcomer's first commands rely on: one torch thread per test process, and
`./quickstart.sh`'s set-up steps (checked by its --dry-run, never by installing)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = REPO_ROOT / "quickstart.sh"


def test_tests_run_torch_on_one_thread():
    """conftest: one intra-op thread unless OMP_NUM_THREADS says otherwise; subprocesses inherit the variable."""
    assert torch.get_num_threads() == int(os.environ.get("OMP_NUM_THREADS", "0"))


def dry_run(*args: str, venv: str | Path, **env_vars: str) -> list[str]:
    """The commands `quickstart.sh --dry-run` prints for the environment `venv`, without their `+ ` prefix."""
    inherited = {k: v for k, v in os.environ.items() if k not in ("TORCH_INDEX_URL", "PYTHONDONTWRITEBYTECODE")}
    env = {**inherited, "VENV": str(venv), **env_vars}
    done = subprocess.run(["bash", str(QUICKSTART), "--dry-run", *args], cwd="/", env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [line.removeprefix("+ ") for line in done.stdout.splitlines()]


def test_quickstart_script_parses():
    done = subprocess.run(["bash", "-n", str(QUICKSTART)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    done = subprocess.run(["bash", "-n", str(REPO_ROOT / ".ci" / "run")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_quickstart_sets_up_a_fresh_machine(tmp_path):
    """No environment: create it, install the CPU torch, then the project, then run the quickstart offline."""
    venv = tmp_path / "venv"
    python = f"{venv}/bin/python"
    assert dry_run(venv=venv) == [
        f"python3 -m venv {venv}",
        f"{python} -m pip install -q --upgrade pip",
        f"{python} -m pip install -q --no-compile torch==2.13.0",
        f"{python} -m pip install -q --no-compile -c constraints.txt -e '.[test]'",
        "export HF_HUB_OFFLINE=1",
        f"{python} -m benchmarks.learning --tiny",
    ]
    assert not venv.exists()  # a dry run creates nothing
    index = "https://download.pytorch.org/whl/cpu"
    assert dry_run(venv=venv, TORCH_INDEX_URL=index)[2] == (f"{python} -m pip install -q --no-compile torch==2.13.0 "
                                                            f"--index-url {index}")


def test_quickstart_lets_python_cache_bytecode(tmp_path):
    """With PYTHONDONTWRITEBYTECODE set (as on CI's machines) every test process would compile transformers and TRL
    again; the script unsets it before running anything, and leaves an environment without it alone."""
    venv = fake_venv(tmp_path / "venv", has_torch=True)
    stamp = venv / ".grpo-ext-installed"
    stamp.write_text(installed_stamp())
    python = f"{venv}/bin/python"
    assert dry_run("tests", venv=venv, PYTHONDONTWRITEBYTECODE="1") == [
        *deepspeed_install(python), "export HF_HUB_OFFLINE=1", "unset PYTHONDONTWRITEBYTECODE",
        f"{python} -m pytest -q -n 2 --dist loadfile tests",
    ]
    assert dry_run("tests", venv=venv) == [*deepspeed_install(python), "export HF_HUB_OFFLINE=1",
                                           f"{python} -m pytest -q -n 2 --dist loadfile tests"]


def installed_stamp() -> str:
    """What quickstart.sh records after installing: the checksums of pyproject.toml and constraints.txt."""
    def cksum(name):
        with (REPO_ROOT / name).open() as handle:
            return subprocess.run(["cksum"], stdin=handle, capture_output=True, text=True).stdout.strip()

    return f"pyproject.toml {cksum('pyproject.toml')} constraints.txt {cksum('constraints.txt')}\n"


def fake_venv(path: Path, has_torch: bool) -> Path:
    """A directory shaped like a virtual environment whose `bin/python` is this interpreter, with its site-packages
    (torch there) or without them (`-S`: no torch)."""
    (path / "bin").mkdir(parents=True)
    python = path / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" {"" if has_torch else "-S "}"$@"\n')
    python.chmod(0o755)
    return path


def deepspeed_install(python: str) -> list[str]:
    """The DeepSpeed line `tests` adds where `python`'s environment lacks it (a fake venv with this interpreter's
    site-packages has what this environment has)."""
    import importlib.util

    if importlib.util.find_spec("deepspeed") is not None:
        return []
    return [f"env DS_BUILD_OPS=0 {python} -m pip install -q --no-compile --no-build-isolation -c constraints.txt "
            "deepspeed==0.19.8"]


def test_quickstart_tests_install_deepspeed_where_it_is_missing(tmp_path):
    """`tests` runs the engine matrix on real DeepSpeed: an environment without it gets the CPU build, against its own
    torch, after the project (the quickstart itself does not need it)."""
    venv = fake_venv(tmp_path / "venv", has_torch=False)
    python = f"{venv}/bin/python"
    commands = dry_run("tests", venv=venv)
    assert commands[-3:] == [
        f"env DS_BUILD_OPS=0 {python} -m pip install -q --no-compile --no-build-isolation -c constraints.txt "
        "deepspeed==0.19.8",
        "export HF_HUB_OFFLINE=1",
        f"{python} -m pytest -q -n 2 --dist loadfile tests",
    ]
    assert not any("deepspeed" in c for c in dry_run(venv=venv))


def test_quickstart_keeps_a_users_torch_and_installs_the_project_once(tmp_path):
    """An environment with torch (the user's own build, say): torch is left alone; the project is installed until
    the stamp records this pyproject.toml, then not again; `tests` runs the test suite with the extra arguments."""
    venv = fake_venv(tmp_path / "venv", has_torch=True)
    python = f"{venv}/bin/python"
    assert dry_run("tests", "-k", "learning", venv=venv) == [
        f"{python} -m pip install -q --no-compile -c constraints.txt -e '.[test]'", *deepspeed_install(python),
        "export HF_HUB_OFFLINE=1", f"{python} -m pytest -q -n 2 --dist loadfile tests -k learning",
    ]
    stamp = venv / ".grpo-ext-installed"
    stamp.write_text(installed_stamp())
    assert dry_run("--seeds", "0", "1", venv=venv) == ["export HF_HUB_OFFLINE=1",
                                                        f"{python} -m benchmarks.learning --tiny --seeds 0 1"]
    stamp.write_text(installed_stamp().replace("constraints.txt", "constraints.txt 1 2 was"))  # pins moved since
    assert dry_run(venv=venv)[0] == f"{python} -m pip install -q --no-compile -c constraints.txt -e '.[test]'"
    stamp.write_text("pyproject.toml 1 2\n")  # pyproject.toml changed since: install again
    assert dry_run(venv=venv)[0] == f"{python} -m pip install -q --no-compile -c constraints.txt -e '.[test]'"


def test_quickstart_installs_torch_into_an_environment_without_it(tmp_path):
    venv = fake_venv(tmp_path / "venv", has_torch=False)
    commands = dry_run(venv=venv)
    assert commands[0].startswith(f"{venv}/bin/python -m pip install -q --no-compile torch==2.13.0")
    assert commands[1:] == [f"{venv}/bin/python -m pip install -q --no-compile -c constraints.txt -e '.[test]'",
                            "export HF_HUB_OFFLINE=1", f"{venv}/bin/python -m benchmarks.learning --tiny"]


def test_quickstart_prints_commands_a_shell_can_run_as_printed(tmp_path):
    """Each printed word is bare or single-quoted (zsh expands an unquoted `.[test]` as a glob), and the offline
    setting the script exports is printed too, so that pasting the commands repeats the run."""
    venv = fake_venv(tmp_path / "venv", has_torch=True)
    commands = dry_run("tests", "-k", "a b", venv=venv)
    assert commands[0].endswith("-c constraints.txt -e '.[test]'")
    assert commands[-2:] == ["export HF_HUB_OFFLINE=1",
                             f"{venv}/bin/python -m pytest -q -n 2 --dist loadfile tests -k 'a b'"]
    for shell in ("bash", "zsh", "sh"):
        if shutil.which(shell) is None:
            continue
        words = subprocess.run([shell, "-c", f"printf '%s\\n' {commands[0].split(' -e ')[1]}"], capture_output=True,
                               text=True, timeout=60)
        assert words.stdout == ".[test]\n", (shell, words.stderr)


def test_constraints_pin_every_library_the_project_installs():
    """constraints.txt pins (==) each direct requirement of the project and its test extras, and each library whose
    version a results JSON records (grpo_ext.versions), torch excepted: the user's own build is kept."""
    import tomllib

    from grpo_ext.versions import LIBRARIES

    def name(requirement: str) -> str:
        return re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0].lower().replace("_", "-")

    pins = {}
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            package, version = line.split("==")
            pins[package.lower().replace("_", "-")] = version
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    wanted = {name(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]} | set(LIBRARIES)
    assert "torch" not in pins
    assert sorted(wanted - {"torch"} - set(pins)) == []
