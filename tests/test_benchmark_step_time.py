"""`benchmarks/step_time.py --tiny` runs end to end on CPU and reports consistent figures."""

from __future__ import annotations

import json
import statistics

import pytest

from benchmarks import step_time


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("step_time")
    returned = step_time.main(["--tiny", "--output_dir", str(out), "--work_dir", str(out / "work")])
    data = json.loads((out / "step_time.json").read_text())
    return returned, data, (out / "step_time.md").read_text()


def test_json_has_every_variant_and_the_run_record(report):
    _, data, _ = report
    assert set(data["variants"]) == set(step_time.VARIANTS)
    assert data["command"].startswith("python -m benchmarks.step_time --tiny --output_dir ")
    assert data["environment"]["trl"] and data["environment"]["date"]
    assert data["run"]["device"] == "cpu" and data["run"]["dtype"] == "float32"
    assert data["targets"] == {}  # not judged at --tiny


def test_step_medians_and_ratios(report):
    _, data, _ = report
    v = data["variants"]
    size = step_time.SIZES["tiny"]
    for name in ("trl", "a", "trl_b", "b", "c"):
        entry = v[name]
        cycle = entry["steps_per_cycle"]
        assert cycle == (2 if name in ("trl_b", "b") else 1)
        # every measured step of every round is kept, warm-up steps dropped
        assert [len(r) for r in entry["per_round_step_seconds"]] == [size.steps] * size.rounds
        cycles = [c for r in entry["per_round_step_seconds"] for c in step_time.cycle_times(r, cycle)]
        assert entry["step_seconds"]["median"] == pytest.approx(statistics.median(cycles))
        assert entry["step_seconds"]["median"] > 0
        assert entry["peak_memory_gib"] is None  # CPU
        assert 0 < entry["mean_completion_length"] <= 16
    trl = v["trl"]["step_seconds"]["median"]
    for name in ("a", "b", "c"):
        assert v[name]["step_time_ratio_to_trl"] == pytest.approx(v[name]["step_seconds"]["median"] / trl)
    assert v["b"]["step_time_ratio_to_same_settings"] == pytest.approx(
        v["b"]["step_seconds"]["median"] / v["trl_b"]["step_seconds"]["median"])
    assert v["a"]["step_time_ratio_to_same_settings"] == pytest.approx(v["a"]["step_time_ratio_to_trl"])
    assert v["a"]["memory_ratio_to_trl"] is None


def test_prm_fraction_and_refresh_cost(report):
    _, data, markdown = report
    c = data["variants"]["c"]
    assert 0 < c["prm_fraction"] < 1
    assert c["prm_steps_per_completion"] > 1  # the chunk splitter forces several steps
    r = data["variants"]["d"]["refresh"]
    size = step_time.SIZES["tiny"]
    # the refresh trains on every rollout since the start: (warm-up + 1) steps of completions, nothing to replay
    assert r["rm_training_samples"] == (size.warmup_steps + 1) * size.batch_size
    assert r["seconds"]["median"] > 0 and r["rm_train_steps"] > 0
    assert r["seconds"]["median"] >= r["rm_train_seconds"]["median"]
    per_round = [m["rm/num_new_rows"] for m in r["metrics_per_round"]]
    assert per_round == [r["rm_training_samples"]] * size.rounds
    # the sample count is the same every round, so the per-round ratio's median is the median's ratio
    assert r["seconds_per_1000_samples"] == pytest.approx(1000 * r["seconds"]["median"] / r["rm_training_samples"])
    assert "s per 1,000 samples" in markdown and "| b |" in markdown


def test_bad_options_are_refused(capsys):
    with pytest.raises(SystemExit):
        step_time.main(["--tiny", "--steps", "3"])
    assert "must be even" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        step_time.main(["--tiny", "--variants", "a,x"])
    assert "unknown ['x']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        step_time.main(["--tiny", "--variants", "trl,b"])
    assert "trl_b" in capsys.readouterr().err
