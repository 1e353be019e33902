import math

import pytest
import torch
from iterative_helpers import tiny_orm, tiny_prm, tiny_tokenizer

from grpo_ext.engines import TrainableModel
from grpo_ext.reward_models import (
    ProcessRewardModel,
    collate_orm,
    collate_prm,
    encode_orm_texts,
    encode_prm_example,
    evaluate_reward_model,
    make_collate,
    orm_pairwise_loss,
    orm_pointwise_loss,
    orm_scores,
    orm_text,
    prm_loss,
    train_reward_model,
    unwrap_reward_model,
)
from grpo_ext.steps import split_steps


def test_encode_prm_example_labels_sit_on_the_separator_closing_each_step():
    tok = tiny_tokenizer()
    ids, positions = encode_prm_example(tok, "Q: 3+4?\n", ["3 + 4 = 7", "So 7"], "\n\n")
    assert len(positions) == 2 and positions[-1] == len(ids) - 1
    assert tok.decode(ids[: positions[0] + 1]) == "Q: 3+4?\n3 + 4 = 7\n\n"
    assert tok.decode(ids) == "Q: 3+4?\n3 + 4 = 7\n\nSo 7\n\n"
    with pytest.raises(ValueError, match="at least one step"):
        encode_prm_example(tok, "Q", [])


def test_split_steps_drops_empty_pieces():
    assert split_steps("a\n\n\n\nb \n\n", "\n\n") == ["a", "b"]


def test_prm_loss_matches_hand_worked_values():
    # logits (0, ln 3) -> q1 = 3/4
    logits = torch.tensor([[[0.0, math.log(3.0)], [5.0, -5.0]]])
    hard = torch.tensor([[1.0, -100.0]])
    loss, correct, n = prm_loss(logits, hard)
    assert n == 1 and int(correct) == 1 and loss.item() == pytest.approx(-math.log(0.75))
    soft = torch.tensor([[0.5, -100.0]])
    loss, _, _ = prm_loss(logits, soft)
    assert loss.item() == pytest.approx(-(0.5 * math.log(0.75) + 0.5 * math.log(0.25)))
    both = torch.tensor([[1.0, 1.0]])  # second position q1 = sigmoid(-10): wrong
    loss, correct, n = prm_loss(logits, both)
    assert n == 2 and int(correct) == 1
    assert loss.item() == pytest.approx((-math.log(0.75) + math.log1p(math.exp(10.0))) / 2, rel=1e-5)


def test_orm_losses_match_hand_worked_values():
    loss, correct = orm_pointwise_loss(torch.tensor([0.0, math.log(3.0)]), torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx((math.log(2.0) + math.log(4.0)) / 2)  # -log(1/2), -log(1 - 3/4)
    assert int(correct) == 0
    loss, correct = orm_pairwise_loss(torch.tensor([math.log(3.0), 0.0]))  # chosen ln3, rejected 0
    assert loss.item() == pytest.approx(-math.log(0.75)) and int(correct) == 1


def test_process_reward_model_scores_every_step_independently_of_batching():
    tok, model = tiny_tokenizer(), tiny_prm(seed=1)
    prm = ProcessRewardModel(model, tok, batch_size=16)
    prompts = ["Q: 3+4?\n", "Natalia sold clips.\n", "Q"]
    steps = [["3 + 4 = 7", "So the answer is 7"], ["48/2 = 24"], []]
    batched = prm(prompts, steps)
    assert [len(s) for s in batched] == [2, 1, 0]
    for p, s, got in zip(prompts[:2], steps[:2], batched[:2]):
        ids, positions = encode_prm_example(tok, p, s)
        model.eval()  # the token-classification head has dropout; the wrapper scores in eval mode
        with torch.no_grad():
            probs = torch.softmax(model(input_ids=torch.tensor([ids])).logits[0], -1)[:, 1]
        assert got == pytest.approx(probs[positions].tolist(), abs=1e-5)
    model.train()
    one_by_one = ProcessRewardModel(model, tok, batch_size=1)(prompts, steps)
    assert [x for s in one_by_one for x in s] == pytest.approx([x for s in batched for x in s], abs=1e-5)
    assert model.training  # mode restored (the model was built in train mode)
    assert unwrap_reward_model(prm) is model
    with pytest.raises(ValueError, match="prompts"):
        prm(prompts, steps[:2])


def test_process_reward_model_rejects_models_that_are_not_two_label_token_classifiers():
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match="num_labels=2 .* got num_labels=1"):
        ProcessRewardModel(tiny_orm(), tok)  # one-label sequence classifier
    sequence_classifier = tiny_orm()
    sequence_classifier.score = torch.nn.Linear(sequence_classifier.config.hidden_size, 2, bias=False)
    sequence_classifier.config.num_labels = 2  # passes the label check; its logits are one row per sequence
    with pytest.raises(ValueError, match=r"token-classification model .* shape \(1, 2\)"):
        ProcessRewardModel(sequence_classifier, tok)(["Q"], [["7"]])


def test_process_reward_model_accepts_conversational_prompts():
    tok, model = tiny_tokenizer(), tiny_prm()
    prm = ProcessRewardModel(model, tok)
    conv = [{"role": "user", "content": "3+4?"}]
    text = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    assert prm([conv], [["7"]])[0] == pytest.approx(prm([text], [["7"]])[0])


def test_orm_tokenisation_is_trls_and_scores_use_it():
    tok, model = tiny_tokenizer(), tiny_orm()
    texts = ["Q 3+4? 7", "Q longer prompt here 8"]
    ours = encode_orm_texts(tok, texts)
    trl_call = tok(text=texts, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False)
    assert torch.equal(ours["input_ids"], trl_call["input_ids"])
    with torch.no_grad():
        expected = model(**trl_call).logits[:, 0].tolist()
    assert orm_scores(model, tok, ["Q 3+4? ", "Q longer prompt here "], ["7", "8"]) == pytest.approx(expected, abs=1e-6)
    # left truncation keeps the scored last token
    cut = encode_orm_texts(tok, texts, max_length=3)
    last_token = trl_call["input_ids"][0, ours["attention_mask"][0].sum() - 1]
    assert cut["input_ids"].shape[1] == 3 and cut["input_ids"][0, -1] == last_token


def test_orm_text_conversational_matches_trl():
    from trl.data_utils import apply_chat_template

    tok = tiny_tokenizer()
    prompt = [{"role": "user", "content": "3+4?"}]
    completion = [{"role": "assistant", "content": "7"}]
    assert orm_text(prompt, completion, tok) == apply_chat_template({"messages": prompt + completion}, tok)["text"]
    assert orm_text("Q ", "7", tok) == "Q 7"


def test_collate_prm_truncates_prompt_first_then_trailing_steps():
    tok = tiny_tokenizer()
    row = {"prompt": "Natalia sold clips to 48 of her friends", "steps": ["a", "b"], "labels": [1, 0]}
    full = collate_prm(tok, [row])
    n = full["input_ids"].shape[1]
    step_tokens = len(encode_prm_example(tok, "", ["a", "b"])[0])
    cut = collate_prm(tok, [row], max_length=step_tokens)  # prompt dropped entirely, both steps kept
    assert cut["input_ids"].shape[1] == step_tokens < n
    assert sorted(cut["labels"][cut["labels"] != -100].tolist()) == [0.0, 1.0]
    cut = collate_prm(tok, [row], max_length=step_tokens - 1)  # the last step's label falls out
    assert cut["labels"][cut["labels"] != -100].tolist() == [1.0]


@pytest.mark.parametrize("kind", ["orm", "prm", "pairwise"])
def test_training_fits_a_separable_toy_task(kind):
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    if kind == "prm":
        model = tiny_prm()
        rows = [{"prompt": f"Q{i} ", "steps": ["3 + 4 = 7", "x y z"], "labels": [1, 0]} for i in range(8)]
        collate = make_collate("prm", tok)
    elif kind == "orm":
        model = tiny_orm()
        rows = [{"text": f"Q{i} the answer is 7", "label": 1} for i in range(4)]
        rows += [{"text": f"Q{i} x y z", "label": 0} for i in range(4)]
        collate = make_collate("orm", tok)
    else:
        model = tiny_orm()
        rows = [{"chosen_text": f"Q{i} the answer is 7", "rejected_text": f"Q{i} x y z"} for i in range(8)]
        collate = lambda r: collate_orm(tok, r)  # noqa: E731
    before = evaluate_reward_model(model, collate, rows)
    trainable = TrainableModel(model, None, learning_rate=3e-3)
    losses = train_reward_model(trainable, collate, rows, max_steps=30, batch_size=4, seed=0)
    after = evaluate_reward_model(model, collate, rows)
    assert len(losses) == 30
    assert after["loss"] < 0.5 * before["loss"]
    assert after["accuracy"] == 1.0


def test_train_reward_model_is_deterministic_given_the_seed():
    tok = tiny_tokenizer()
    rows = [{"text": f"Q{i} {i % 3}", "label": i % 2} for i in range(10)]
    collate = make_collate("orm", tok)
    states = []
    for _ in range(2):
        model = tiny_orm(seed=3)
        train_reward_model(TrainableModel(model, None, learning_rate=1e-3), collate, rows, num_epochs=2,
                           batch_size=4, seed=7)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    with pytest.raises(ValueError, match="'orm' or 'prm'"):
        make_collate("bad", tok)
