#!/usr/bin/env bash
# One command from a fresh checkout to a run, doing its own set-up (README "Install"):
#
#   ./quickstart.sh              set up, then the offline quickstart: python -m benchmarks.learning --tiny
#   ./quickstart.sh tests        set up, then the test suite on 2 workers (what CI runs: .ci/run calls this)
#   ./quickstart.sh --dry-run    print the commands it would run, run nothing
#
# Further arguments go to the command (./quickstart.sh --seeds 0 1 2; ./quickstart.sh tests -k learning).
# Set-up, each step only when it is needed (pip with --no-compile: byte-compiling every installed file took 75 of the
# install's 145 s on 2 cores; Python compiles the modules it imports on first use instead):
#   1. create the virtual environment $VENV (default .venv beside this script) if it does not exist;
#   2. install torch 2.13.0 if that environment has no torch, from $TORCH_INDEX_URL when it is set (on Linux, PyPI's
#      torch is the CUDA build; TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu gives the CPU one). Bring your own
#      build for a GPU by installing it into the environment first: it is then left alone;
#   3. install the project with its test extras (pip install -e ".[test]") if pyproject.toml or constraints.txt
#      changed since the last install (recorded in $VENV/.grpo-ext-installed), every library at the version
#      constraints.txt pins: the set that produced the README's figures and passed the tests (torch excepted: yours);
#   4. for `tests`, install DeepSpeed if that environment has none: tests/test_engines.py runs every feature on real
#      ZeRO-2 and ZeRO-3 engines. Its CPU build (DS_BUILD_OPS=0: no CUDA kernels compiled), against the torch of the
#      environment (--no-build-isolation: an isolated build would fetch a torch of its own).
# The printed commands are quoted for any POSIX shell or zsh, so they can be pasted.
set -euo pipefail
cd "$(dirname "$0")"

VENV="${VENV:-.venv}"
TORCH_VERSION=2.13.0
DEEPSPEED_VERSION=0.19.8
TORCH_INDEX_URL="${TORCH_INDEX_URL:-}"

dry_run=0
args=()
for arg in "$@"; do
    if [[ $arg == --dry-run ]]; then dry_run=1; else args+=("$arg"); fi
done
action=quickstart
if [[ ${#args[@]} -gt 0 && ${args[0]} == tests ]]; then
    action=tests
    args=("${args[@]:1}")
fi

# each argument as a shell word: bare when it holds only safe characters, else in single quotes (zsh globs `.[test]`)
quoted() {
    local arg words=()
    for arg in "$@"; do
        if [[ $arg =~ ^[A-Za-z0-9_./=:,+@%-]+$ ]]; then words+=("$arg")
        elif [[ $arg != *"'"* ]]; then words+=("'$arg'")
        else words+=("$(printf %q "$arg")"); fi
    done
    echo "${words[*]}"
}
run() {
    echo "+ $(quoted "$@")"
    if [[ $dry_run == 0 ]]; then "$@"; fi
}

python="$VENV/bin/python"
if [[ ! -x $python ]]; then
    run python3 -m venv "$VENV"
    run "$python" -m pip install -q --upgrade pip
fi
# whether the environment has a module, by find_spec: without the seconds that importing it takes
has_module() {
    [[ -x $python ]] && "$python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('$1') is None)"
}
if ! has_module torch; then
    # pinned and installed first: a bare `torch` requirement resolved later would pull the newest (CUDA) build.
    # No index is forced: a machine whose pip is configured with a local CPU wheel (as CI's is) must keep using it.
    run "$python" -m pip install -q --no-compile "torch==$TORCH_VERSION" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
# constraints.txt was resolved on Python 3.11 (some of its pins have no release for other versions): elsewhere the
# project installs unpinned, and figures may differ from the README's
pins=(-c constraints.txt)
interpreter=$python; [[ -x $interpreter ]] || interpreter=python3
python_version=$("$interpreter" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [[ $python_version != 3.11 ]]; then
    echo "note: constraints.txt pins versions for Python 3.11; Python $python_version installs without them" >&2
    pins=()
fi
stamp="$VENV/.grpo-ext-installed"
installed_for="pyproject.toml $(cksum < pyproject.toml) constraints.txt $(cksum < constraints.txt)"
if [[ ! -f $stamp || $(cat "$stamp") != "$installed_for" ]]; then
    run "$python" -m pip install -q --no-compile ${pins[@]+"${pins[@]}"} -e ".[test]"
    if [[ $dry_run == 0 ]]; then echo "$installed_for" > "$stamp"; fi
fi
if [[ $action == tests ]] && ! has_module deepspeed; then
    run env DS_BUILD_OPS=0 "$python" -m pip install -q --no-compile --no-build-isolation ${pins[@]+"${pins[@]}"} \
        "deepspeed==$DEEPSPEED_VERSION"
fi

echo "+ export HF_HUB_OFFLINE=1"  # everything below runs offline: no hub downloads, at once
export HF_HUB_OFFLINE=1
# Python writes each module's bytecode cache the first time it imports it. Where PYTHONDONTWRITEBYTECODE is set (this
# project's CI machines set it), every process compiles torch, transformers and TRL anew: about 12 s per process on
# 2 cores, and the suite starts dozens of them (accelerate launches, their ranks, reward workers).
if [[ -n ${PYTHONDONTWRITEBYTECODE:-} ]]; then run unset PYTHONDONTWRITEBYTECODE; fi
if [[ $action == tests ]]; then
    # two workers (pytest-xdist), a test file each at a time: the tests are single-threaded, so 2 cores run two files
    # at once; PYTEST_WORKERS changes the count (0: no workers, one process)
    run "$python" -m pytest -q -n "${PYTEST_WORKERS:-2}" --dist loadfile tests ${args[@]+"${args[@]}"}
else
    run "$python" -m benchmarks.learning --tiny ${args[@]+"${args[@]}"}
fi
