import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grpo_ext.reward_models import ProcessRewardModel, evaluate_reward_model, make_collate, orm_scores
from launch.train_reward_model import (
    RewardModelScriptArguments,
    load_rows,
    main,
    parse_args,
    to_training_rows,
    train,
)

REPO = Path(__file__).resolve().parent.parent
COMMON = ["--report_to", "none", "--use_cpu", "true", "--save_strategy", "no", "--logging_steps", "1",
          "--learning_rate", "3e-3", "--per_device_train_batch_size", "4"]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _orm_rows():
    rows = [{"prompt": f"Q{i}: 3+4? ", "completion": "the answer is 7", "label": 1} for i in range(4)]
    rows += [{"prompt": f"Q{i}: 3+4? ", "completion": "x y z", "label": 0} for i in range(4)]
    return rows


def _prm_rows():
    return [{"prompt": f"Q{i}: 3+4? ", "steps": ["3 + 4 = 7", "x y z"], "labels": [True, False]} for i in range(8)]


def test_pointwise_orm_end_to_end(tmp_path, tiny_model_path):
    data = _write_jsonl(tmp_path / "orm.jsonl", _orm_rows())
    out = tmp_path / "orm"
    trainer = train(*parse_args(["--model_name_or_path", tiny_model_path, "--reward_model_type", "orm", "--data_files", data,
                    "--output_dir", str(out), "--max_steps", "30", *COMMON]))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 30 and losses[-1] < losses[0]
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.num_labels == 1 and model.config.pad_token_id == tok.pad_token_id
    good, bad = orm_scores(model, tok, ["Q9: 3+4? "] * 2, ["the answer is 7", "x y z"])
    assert good > 0 > bad


def test_pairwise_orm_end_to_end(tmp_path, tiny_model_path):
    rows = [{"prompt": f"Q{i}: 3+4? ", "chosen": "the answer is 7", "rejected": "x y z"} for i in range(8)]
    data = _write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "pairs"
    assert main(["--model_name_or_path", tiny_model_path, "--data_files", data, "--output_dir", str(out),
                 "--max_steps", "20", *COMMON]) is None
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model, tok = AutoModelForSequenceClassification.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    good, bad = orm_scores(model, tok, ["Q9: 3+4? "] * 2, ["the answer is 7", "x y z"])
    assert good > bad


def test_prm_end_to_end_through_accelerate_launch_and_yaml(tmp_path, tiny_model_path):
    data = _write_jsonl(tmp_path / "prm.jsonl", _prm_rows())
    out = tmp_path / "prm"
    config = tmp_path / "prm.yaml"
    config.write_text(
        f"model_name_or_path: {tiny_model_path}\nreward_model_type: prm\ndata_files: [{data}]\n"
        f"output_dir: {out}\nmax_steps: 10\nlearning_rate: 1.0e-9\nstep_separator: \"\\n\\n\"\n"
    )
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "launch" / "train_reward_model.py"),
           "--config", str(config), *COMMON]  # the command line overrides the YAML's learning rate
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    model, tok = AutoModelForTokenClassification.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    assert model.config.num_labels == 2 and model.config.step_separator == "\n\n"
    rows = [{"prompt": r["prompt"], "steps": r["steps"], "labels": r["labels"]} for r in _prm_rows()]
    metrics = evaluate_reward_model(model, make_collate("prm", tok), rows)
    assert metrics["accuracy"] == 1.0  # 10 steps at lr 3e-3 fit the toy task; at the YAML's 1e-9 they could not
    good, bad = ProcessRewardModel(model, tok)(["Q9: 3+4? "], [["3 + 4 = 7", "x y z"]])[0]
    assert good > 0.5 > bad
    with pytest.warns(UserWarning, match="step_separator"):
        ProcessRewardModel(model, tok, step_separator="\n")


def _args(**kw):
    return RewardModelScriptArguments(**kw)


def test_bad_rows_are_reported_with_file_and_line(tmp_path):
    from grpo_ext.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"prompt": "a", "completion": "b", "label": 1}\n{"prompt": oops}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl, line 2: not valid JSON"):
        load_rows(_args(data_files=[str(bad_json)]))

    missing = _write_jsonl(tmp_path / "missing.jsonl", [_orm_rows()[0], {"prompt": "a", "completion": "b"}])
    with pytest.raises(ValueError, match=r"missing\.jsonl:2: missing column 'label' \(set --label_column"):
        to_training_rows(load_rows(_args(data_files=[missing])), _args(), tok)

    bad_label = _write_jsonl(tmp_path / "label.jsonl", [{"prompt": "a", "completion": "b", "label": 3}])
    with pytest.raises(ValueError, match=r"label\.jsonl:1: column 'label'"):
        to_training_rows(load_rows(_args(data_files=[bad_label])), _args(), tok)

    prm = _args(reward_model_type="prm")
    short = _write_jsonl(tmp_path / "prm.jsonl", [_prm_rows()[0], {"prompt": "a", "steps": ["x", "y"], "labels": [1]}])
    with pytest.raises(ValueError, match=r"prm\.jsonl:2: 2 steps but labels"):
        to_training_rows(load_rows(_args(data_files=[short])), prm, tok)
    no_steps = _write_jsonl(tmp_path / "steps.jsonl", [{"prompt": "a", "completions": ["x"], "labels": [1]}])
    with pytest.raises(ValueError, match=r"steps\.jsonl:1: missing column 'steps'"):
        to_training_rows(load_rows(_args(data_files=[no_steps])), prm, tok)
    # TRL's stepwise-supervision column name works through the option
    rows = to_training_rows(load_rows(_args(data_files=[no_steps])), _args(reward_model_type="prm",
                                                                          steps_column="completions"), tok)
    assert rows == [{"prompt": "a", "steps": ["x"], "labels": [1.0]}]

    with pytest.raises(ValueError, match="exactly one of"):
        load_rows(_args())
    with pytest.raises(ValueError, match="reward_model_type"):
        _args(reward_model_type="xrm")


def test_conversational_rows_use_the_chat_template(tmp_path):
    from grpo_ext.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    conv = [{"role": "user", "content": "3+4?"}]
    data = _write_jsonl(tmp_path / "c.jsonl", [{"prompt": conv, "completion": [{"role": "assistant", "content": "7"}],
                                                "label": 1}])
    (row,) = to_training_rows(load_rows(_args(data_files=[data])), _args(), tok)
    assert row["text"] == "<|im_start|>user\n3+4?<|im_end|>\n<|im_start|>assistant\n7<|im_end|>\n"


def test_an_empty_or_blank_file_and_an_empty_prm_step_are_errors_naming_them(tmp_path):
    from grpo_ext.tiny import build_tiny_tokenizer

    empty, blank = tmp_path / "empty.jsonl", tmp_path / "blank.jsonl"
    empty.write_text("")
    blank.write_text("\n  \n\t\n")
    good = _write_jsonl(tmp_path / "good.jsonl", _orm_rows())
    for path in (empty, blank):
        with pytest.raises(ValueError, match=rf"{path.name}: no rows \(the file is empty or holds only blank lines\)"):
            load_rows(_args(data_files=[good, str(path)]))  # the empty one is named even after a good file
    prm = _args(reward_model_type="prm")
    steps = _write_jsonl(tmp_path / "steps.jsonl", [_prm_rows()[0], {"prompt": "a", "steps": ["x", " "],
                                                                     "labels": [1, 0]}])
    with pytest.raises(ValueError, match=r"steps\.jsonl:2: step 1 of column 'steps' is empty or blank"):
        to_training_rows(load_rows(_args(data_files=[steps])), prm, build_tiny_tokenizer())


def test_an_evaluation_set_reports_loss_and_accuracy_every_epoch(tmp_path, tiny_model_path):
    """Eval rows are scored with the training loss and `evaluate_reward_model`'s accuracy after every epoch; the
    final figures equal a fresh evaluation of the saved model and land in eval_results.json."""
    data = _write_jsonl(tmp_path / "orm.jsonl", _orm_rows())
    held_out = [{"prompt": "Q9: 3+4? ", "completion": "the answer is 7", "label": 1},
                {"prompt": "Q9: 3+4? ", "completion": "x y z", "label": 0}]
    evals = _write_jsonl(tmp_path / "eval.jsonl", held_out)
    out = tmp_path / "orm"
    trainer = train(*parse_args(["--model_name_or_path", tiny_model_path, "--data_files", data, "--eval_data_files",
                                 evals, "--output_dir", str(out), "--num_train_epochs", "3", *COMMON]))
    per_epoch = [h for h in trainer.state.log_history if "eval_accuracy" in h]
    assert [h["epoch"] for h in per_epoch[:3]] == [1.0, 2.0, 3.0] and len(per_epoch) == 4  # + the final one
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model, tok = AutoModelForSequenceClassification.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    rows = [{"text": r["prompt"] + r["completion"], "label": r["label"]} for r in held_out]
    fresh = evaluate_reward_model(model, make_collate("orm", tok), rows)
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["eval_accuracy"] == fresh["accuracy"] == per_epoch[-1]["eval_accuracy"]
    assert saved["eval_loss"] == pytest.approx(fresh["loss"], abs=1e-6)
    with pytest.raises(ValueError, match="--eval_split names a split of --dataset_name"):
        _args(data_files=[data], eval_split="test")
