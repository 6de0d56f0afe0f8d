from pathlib import Path

import pytest
from transformers import AutoTokenizer

from persyn import engines
from persyn.core import models
from persyn.pipeline import train
from persyn.core.chat import response_tokens
from persyn.params.config import StudentConfig, TrainConfig
from persyn.engines import ScoreRequest


def records(n: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                          {"role": "assistant", "content": f"{i} + {i} = {2 * i}. The answer is {2 * i}."}]}
            for i in range(n)]


def mean_loglikelihood(path: Path, rows: list[dict]) -> float:
    engine = engines.load("transformers", models.resolve(f"local:{path}"), batch_size=4)
    values = engine.loglikelihood([ScoreRequest(r["messages"][:-1], r["messages"][-1]["content"]) for r in rows])
    return sum(v.logprob for v in values) / len(values)


def test_labels_cover_exactly_the_response_tokens(tiny_models: dict[str, Path]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["student"])
    rows = train.features(tokenizer, records(3), 128, "tiny")
    for row, record in zip(rows, records(3)):
        ids, start = response_tokens(tokenizer, record["messages"][:-1], record["messages"][-1]["content"], 128, "tiny")
        assert row["input_ids"] == ids
        assert row["labels"][:start] == [-100] * start and row["labels"][start:] == ids[start:]
        assert tokenizer.decode(ids[start:]) == record["messages"][-1]["content"] + "<|im_end|>"


@pytest.mark.parametrize("lora_r", [0, 4])
def test_training_lowers_the_loss(tiny_models: dict[str, Path], tmp_path: Path, lora_r: int) -> None:
    rows = records(8)
    config = TrainConfig(epochs=15, lr=5e-3, batch_size=4, max_length=128, warmup_ratio=0.0, seed=0, lora_r=lora_r)
    summary, curve = train.train(rows, StudentConfig(model=f"local:{tiny_models['student']}"), config, tmp_path, "records")
    assert summary["steps"] == 30 and len(curve) == 30 and summary["lora_r"] == lora_r
    assert summary["final_loss"] < summary["first_loss"]
    assert (tmp_path / "model.safetensors").is_file() and not (tmp_path / "adapter_config.json").exists()
    assert mean_loglikelihood(tmp_path, rows) > mean_loglikelihood(tiny_models["student"], rows) + 0.2


def test_the_response_loss_equals_the_models_own_loss(tiny_models: dict[str, Path]) -> None:
    """The trainer applies the output layer only from the batch's first response token on: the loss
    must still be the model's own mean cross-entropy over the response tokens."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["student"])
    rows = train.features(tokenizer, records(4) + [{"messages": [{"role": "user", "content": "A much longer question " * 5},
                                                                {"role": "assistant", "content": "7."}]}], 128, "tiny")
    batch = train.PadCollator(tokenizer.pad_token_id or 0)(rows)
    model = AutoModelForCausalLM.from_pretrained(tiny_models["student"], dtype=torch.float32)
    trainer = train.ResponseLossTrainer.__new__(train.ResponseLossTrainer)  # compute_loss needs no trainer state
    ours = trainer.compute_loss(model, batch)
    assert float(ours) == pytest.approx(float(model(**batch).loss), rel=1e-5)


def test_frozen_layers_do_not_move_and_the_rest_trains(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    config = TrainConfig(epochs=5, lr=5e-3, batch_size=4, max_length=128, warmup_ratio=0.0, seed=0, freeze_layers=1,
                         precision="bfloat16")
    summary, _ = train.train(records(8), StudentConfig(model=f"local:{tiny_models['student']}"), config, tmp_path, "records")
    assert summary["freeze_layers"] == 1 and summary["precision"] == "bfloat16"
    assert summary["final_loss"] < summary["first_loss"]
    before, after = load_file(tiny_models["student"] / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    moved = {name for name in before if not torch.equal(before[name], after[name])}
    assert moved and all(".layers.0." not in name and "embed_tokens" not in name for name in moved)
    assert any(".layers.1." in name for name in moved)


def test_freezing_every_block_is_refused(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    from persyn.core.errors import PersynError

    config = TrainConfig(epochs=1, batch_size=4, max_length=128, freeze_layers=99)
    with pytest.raises(PersynError, match="freeze_layers = 99: .* at most"):
        train.train(records(4), StudentConfig(model=f"local:{tiny_models['student']}"), config, tmp_path, "records")


def test_length_batches_take_every_row_once_per_epoch_and_pad_less() -> None:
    """train.batching = "length": each epoch a permutation of the rows, cut by the Trainer into batches
    of similar length (the one short batch last), a new order each epoch, the same orders for the seed."""
    import numpy as np

    lengths = [int(n) for n in np.random.default_rng(3).integers(20, 200, size=45)]
    sampler = train.LengthBatches(lengths, 8, seed=0)
    epochs = [list(sampler), list(sampler)]
    assert all(sorted(order) == list(range(45)) for order in epochs) and epochs[0] != epochs[1]
    again = train.LengthBatches(lengths, 8, seed=0)
    assert [list(again), list(again)] == epochs

    def padded(order: list[int]) -> int:
        return sum(8 * max(lengths[i] for i in order[k: k + 8]) for k in range(0, 40, 8))

    shuffled = [list(np.random.default_rng(s).permutation(45)) for s in range(20)]
    assert padded(epochs[0]) < 0.85 * min(padded(order) for order in shuffled)
    assert len(epochs[0][40:]) == 5 and all(len(set(epochs[0][k: k + 8])) == 8 for k in range(0, 40, 8))


def test_training_in_length_batches_lowers_the_loss(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    rows = records(8) + [{"messages": [{"role": "user", "content": "Add " + " and ".join(map(str, range(i + 3))) + "."},
                                       {"role": "assistant", "content": f"The answer is {sum(range(i + 3))}."}]}
                         for i in range(6)]
    config = TrainConfig(epochs=10, lr=5e-3, batch_size=4, max_length=128, warmup_ratio=0.0, seed=0, batching="length")
    student = StudentConfig(model=f"local:{tiny_models['student']}")
    before = mean_loglikelihood(tiny_models["student"], rows)
    summary, _ = train.train(rows, student, config, tmp_path, "records")
    assert summary["batching"] == "length" and summary["steps"] == 10 * 4
    assert mean_loglikelihood(tmp_path, rows) > before
