import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig
from accelerate.commands.launch import launch_command_parser
from accelerate.utils import DistributedType

sys.path.insert(0, str(Path(__file__).parent))
from launch_helpers import free_port  # noqa: E402

CONFIG_DIR = Path(__file__).resolve().parent.parent / "accelerate_configs"

EXPECTED = {
    "single_gpu.yaml": DistributedType.NO,
    "multi_gpu.yaml": DistributedType.MULTI_GPU,
    "deepspeed_zero2.yaml": DistributedType.DEEPSPEED,
    "deepspeed_zero3.yaml": DistributedType.DEEPSPEED,
    "fsdp2.yaml": DistributedType.FSDP,
    "multi_node.yaml": DistributedType.DEEPSPEED,
}


def test_every_config_is_listed():
    assert sorted(p.name for p in CONFIG_DIR.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_and_every_key_is_an_accelerate_option(name):
    # accelerate's own loader rejects unknown top-level keys
    config = ClusterConfig.from_yaml_file(str(CONFIG_DIR / name))
    assert config.distributed_type == EXPECTED[name]
    assert str(config.mixed_precision) == "bf16"
    assert config.num_processes >= 1 and config.num_processes % config.num_machines == 0
    # `accelerate launch` copies the nested plugin settings onto its own options: they must exist there
    options = {action.dest for action in launch_command_parser()._actions}
    for section in ("deepspeed_config", "fsdp_config"):
        nested = getattr(config, section) or {}
        unknown = sorted(set(nested) - options)
        assert not unknown, f"{name}: {section} keys unknown to accelerate launch: {unknown}"


def test_plugin_settings():
    load = lambda name: yaml.safe_load((CONFIG_DIR / name).read_text())  # noqa: E731
    assert load("deepspeed_zero2.yaml")["deepspeed_config"]["zero_stage"] == 2
    zero3 = load("deepspeed_zero3.yaml")["deepspeed_config"]
    assert zero3["zero_stage"] == 3 and zero3["zero3_init_flag"] and zero3["zero3_save_16bit_model"]
    assert load("fsdp2.yaml")["fsdp_config"]["fsdp_version"] == 2
    assert load("single_gpu.yaml")["num_processes"] == 1
    node = load("multi_node.yaml")
    assert node["num_machines"] == 2 and node["machine_rank"] == 0
    assert node["main_process_ip"] and node["main_process_port"]
    text = (CONFIG_DIR / "multi_node.yaml").read_text()
    for field in ("machine_rank", "main_process_ip", "main_process_port", "num_machines", "num_processes"):
        assert any(line.startswith(f"{field}:") and "EDIT" in line for line in text.splitlines()), field


STATE_SCRIPT = """
import json, sys
from accelerate import PartialState
state = PartialState(cpu=True)  # what TrainingArguments(use_cpu=True) asks for; on GPUs the configs need no flag
# one file per process: their stdout lines can interleave
with open(f"{sys.argv[1]}/state-{state.process_index}.json", "w") as handle:
    json.dump({"num_processes": state.num_processes, "rank": state.process_index, "backend": state.backend}, handle)
state.destroy_process_group()  # a live gloo group can abort the process at interpreter teardown
"""


@pytest.mark.parametrize(
    "name, extra, processes", [("single_gpu.yaml", [], 1), ("multi_gpu.yaml", ["--num_processes", "2"], 2)]
)
def test_launch_with_config_on_cpu(tmp_path, name, extra, processes):
    """The DDP configs really launch: the processes start, find each other and agree on ranks (gloo on CPU)."""
    script = tmp_path / "state.py"
    script.write_text(STATE_SCRIPT)
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIG_DIR / name),
        "--mixed_precision", "no", "--main_process_port", str(free_port()), *extra, str(script), str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    states = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("state-*.json"))]
    assert sorted(s["rank"] for s in states) == list(range(processes))
    assert all(s["num_processes"] == processes for s in states)
    if processes > 1:
        assert all(s["backend"] == "gloo" for s in states)
