import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from persyn.pipeline import embed
from persyn.params.config import EmbedConfig

TEXTS = ["Ava has 3 coins.", "A much longer prompt about Ben, who buys 12 packs of cards with 4 cards in each.", "x"]
ENGINES = ["transformers", "ctranslate2"]


@pytest.mark.parametrize("engine", ENGINES)
def test_mean_pooled_unit_vectors_independent_of_batching(engine: str, tiny_models: dict[str, Path]) -> None:
    spec = f"local:{tiny_models['encoder']}"
    vectors, model = embed.encode(TEXTS, EmbedConfig(model=spec, engine=engine, batch_size=2))
    assert vectors.shape == (3, 32) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    one_by_one = np.stack([embed.encode([t], EmbedConfig(model=spec, engine=engine, batch_size=1))[0][0] for t in TEXTS])
    assert np.allclose(vectors, one_by_one, atol=1e-5)
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["encoder"])
    encoder = AutoModel.from_pretrained(tiny_models["encoder"])
    with torch.no_grad():
        hidden = encoder(**tokenizer(TEXTS[0], return_tensors="pt")).last_hidden_state[0]
    expected = hidden.mean(0) / hidden.mean(0).norm()
    assert np.allclose(vectors[0], expected.numpy(), atol=1e-5)


def test_ctranslate2_truncates_as_transformers_does(tiny_models: dict[str, Path]) -> None:
    """embed.max_length cuts both engines' token lists at the same place (special tokens counted)."""
    spec, long_text = f"local:{tiny_models['encoder']}", " ".join(TEXTS * 8)
    vectors = {engine: embed.encode([long_text, TEXTS[2]], EmbedConfig(model=spec, engine=engine, max_length=12))[0]
               for engine in ENGINES}
    assert np.allclose(vectors["transformers"], vectors["ctranslate2"], atol=1e-5)
    untruncated = embed.encode([long_text], EmbedConfig(model=spec, engine="ctranslate2"))[0][0]
    assert not np.allclose(vectors["ctranslate2"][0], untruncated, atol=1e-3)


@pytest.mark.parametrize("engine", ENGINES)
def test_sentence_transformers_cls_pooling_is_honoured(engine: str, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    model = tmp_path / "cls"
    shutil.copytree(tiny_models["encoder"], model)
    (model / "1_Pooling").mkdir()
    (model / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    vectors, _ = embed.encode(TEXTS[:2], EmbedConfig(model=f"local:{model}", engine=engine))
    tokenizer = AutoTokenizer.from_pretrained(model)
    with torch.no_grad():
        cls = AutoModel.from_pretrained(model)(**tokenizer(TEXTS[0], return_tensors="pt")).last_hidden_state[0, 0]
    assert np.allclose(vectors[0], (cls / cls.norm()).numpy(), atol=1e-5)


def test_an_encoder_ctranslate2_cannot_convert_is_one_error_with_the_way_out(tiny_models: dict[str, Path],
                                                                             tmp_path: Path) -> None:
    from transformers import ConvBertConfig, ConvBertModel

    from persyn.core.errors import PersynError

    model = tmp_path / "convbert"
    ConvBertModel(ConvBertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=64, embedding_size=32)).save_pretrained(model)
    shutil.copy(tiny_models["encoder"] / "tokenizer.json", model / "tokenizer.json")
    with pytest.raises(PersynError, match=rf"local:{model}: CTranslate2 cannot convert this model: .*ConvBertConfig.*; "
                                          r"set embed.engine = 'transformers'$"):
        embed.encode(TEXTS, EmbedConfig(model=f"local:{model}", engine="ctranslate2"))
