"""Loading model folders as real checkpoints are loaded, and one-line errors for bad folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from llm.models import ModelLoadError, check_model_folder, load_model, load_tokenizer


@pytest.fixture
def llama_copy(tiny_models_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny Llama folder that a test may damage."""
    return Path(shutil.copytree(tiny_models_dir / "llama", tmp_path / "llama"))


@pytest.mark.parametrize(
    ("arch", "cls"), [("llama", "LlamaForCausalLM"), ("qwen2", "Qwen2ForCausalLM")]
)
def test_round_trip_through_from_pretrained(tiny_models_dir, tmp_path, arch, cls):
    from transformers import AutoModelForCausalLM

    folder = tiny_models_dir / arch
    model, tokenizer = load_model(folder)
    assert type(model).__name__ == cls and not model.training
    assert len(tokenizer) == model.get_input_embeddings().weight.shape[0]
    assert tokenizer.pad_token_id is not None and tokenizer.chat_template
    # The same weights as the plain transformers call gives, and the same forward pass.
    plain = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    ids = torch.tensor([tokenizer("The quiet river finds the map.")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, plain(ids).logits, rtol=0, atol=0)
    # Saving the loaded model and loading again is exact.
    model.save_pretrained(tmp_path / "resaved")
    tokenizer.save_pretrained(tmp_path / "resaved")
    again, _ = load_model(tmp_path / "resaved")
    for (name, p), (_, q) in zip(
        model.state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert torch.equal(p, q), name


def test_dtype_and_generation(tiny_models_dir):
    model, tokenizer = load_model(tiny_models_dir / "qwen2", dtype="bf16")
    assert next(model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        load_model(tiny_models_dir / "qwen2", dtype="int3")
    model32, _ = load_model(tiny_models_dir / "qwen2")
    from llm.chat import Message
    from llm.chat_template import end_of_turn_token_ids
    from llm.tokenization import encode_prompt

    prompt = torch.tensor([encode_prompt(tokenizer, [Message("user", "Hi")])])
    out = model32.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=5,
        do_sample=False,
        eos_token_id=end_of_turn_token_ids(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
    )
    assert out.shape[0] == 1 and prompt.shape[1] < out.shape[1] <= prompt.shape[1] + 5


def test_missing_folder_and_config(tmp_path, llama_copy):
    with pytest.raises(ModelLoadError, match="model folder not found"):
        load_model(tmp_path / "nowhere")
    (llama_copy / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(llama_copy)


def test_missing_or_pickled_weights(llama_copy):
    (llama_copy / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no model weights"):
        check_model_folder(llama_copy)
    (llama_copy / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(ModelLoadError, match="safetensors only"):
        load_model(llama_copy)


def test_incomplete_sharded_download(llama_copy):
    (llama_copy / "model.safetensors").rename(llama_copy / "model-00001-of-00002.safetensors")
    index = {
        "metadata": {},
        "weight_map": {
            "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
            "lm_head.weight": "model-00002-of-00002.safetensors",
        },
    }
    (llama_copy / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelLoadError, match=r"1 weight shard\(s\) missing.*00002-of-00002"):
        load_model(llama_copy)


def test_corrupt_weights_give_one_line(llama_copy, tiny_models_dir):
    (llama_copy / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match="not a readable safetensors file") as info:
        load_model(llama_copy)
    assert "\n" not in str(info.value)
    data = (tiny_models_dir / "llama" / "model.safetensors").read_bytes()
    (llama_copy / "model.safetensors").write_bytes(data[:-10])  # a truncated download
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        load_model(llama_copy)


def test_tokenizer_larger_than_embedding(llama_copy):
    tokenizer = load_tokenizer(llama_copy)
    tokenizer.add_tokens([f"<extra_{i}>" for i in range(10)])
    tokenizer.save_pretrained(llama_copy)
    with pytest.raises(ModelLoadError, match=r"tokenizer has \d+ tokens but .* embedding rows"):
        load_model(llama_copy)


def test_separate_tokenizer_folder(tiny_models_dir, llama_copy, tmp_path):
    # An "instruct tokenizer" folder with the same vocabulary is accepted and used.
    instruct = tmp_path / "instruct-tok"
    tok = load_tokenizer(llama_copy)
    tok.chat_template = tok.chat_template.replace("Today Date", "Date")
    tok.save_pretrained(instruct)
    _, loaded = load_model(llama_copy, tokenizer_path=instruct)
    assert "'Date: '" in loaded.chat_template
    # One from another model is refused.
    with pytest.raises(ModelLoadError, match="does not match the model's tokenizer"):
        load_model(llama_copy, tokenizer_path=tiny_models_dir / "qwen2")
    with pytest.raises(ModelLoadError, match="tokenizer folder not found"):
        load_model(llama_copy, tokenizer_path=tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no tokenizer files"):
        load_tokenizer(tmp_path / "empty")


def test_bad_device_gives_one_line(tiny_models_dir):
    with pytest.raises(ModelLoadError, match="cannot move model to 'banana'"):
        load_model(tiny_models_dir / "llama", device="banana")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="cannot move model to 'cuda'"):
            load_model(tiny_models_dir / "llama", device="cuda")
