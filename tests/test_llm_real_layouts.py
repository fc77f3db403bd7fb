"""Real-layout folders of the five paper models: load, mask, run the protocol, a 1B LoRA step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_llm_protocol import tiny_config

from llm import protocol as P
from llm.arch_cards import card_for, param_count, read_card
from llm.chat import ChatExample, Message
from llm.chat_template import end_of_turn_token_ids, render_chat
from llm.logprobs import IGNORE_INDEX
from llm.models import load_model
from llm.real_layouts import FOLDER_NAMES, build_real_layout, build_real_pair, layout_card
from llm.tokenization import encode_chat

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = tuple(FOLDER_NAMES)
# Embedding rows the real checkpoints have past their tokenizer (Qwen2.5: 151936 - 151665 and
# 152064 - 151665); the layouts pad by as many.
PADDED_ROWS = {"qwen2.5-1.5b": 271, "qwen2.5-14b": 399}
CHAT = (Message("user", "What is 2 + 3?"), Message("assistant", "2 + 3 = 5."))


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """name -> (base, instruct) folders, built once for the module (about a second each)."""
    root = tmp_path_factory.mktemp("real-layouts")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {name: build_real_pair(name, root) for name in NAMES}
    finally:
        torch.set_num_threads(n)


@pytest.mark.parametrize("name", NAMES)
def test_folder_is_sharded_and_loads_with_the_cards_structure(layouts, name):
    base, instruct = layouts[name]
    assert (base.name, instruct.name) == FOLDER_NAMES[name]
    shards = sorted(base.glob("model-*-of-*.safetensors"))
    assert len(shards) >= 2 and not (base / "model.safetensors").exists()
    index = json.loads((base / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {s.name for s in shards}

    model, tokenizer = load_model(base, tokenizer_path=instruct)
    assert set(index["weight_map"]) == set(model.state_dict()) - (
        {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    )
    rows = model.get_input_embeddings().weight.shape[0]
    assert rows == len(tokenizer) + PADDED_ROWS.get(name, 0)
    card = layout_card(name, rows=rows)
    assert sum(p.numel() for p in model.parameters()) == param_count(card)
    assert read_card(base) == card  # the real context, dtype, RoPE base, ties, biases
    real, raw = card_for(name), json.loads((base / "config.json").read_text())
    assert raw["model_type"] == real.model_type and raw["torch_dtype"] == real.torch_dtype
    assert raw["architectures"] == [type(model).__name__]
    assert raw["tie_word_embeddings"] == real.tie_word_embeddings
    assert (model.model.layers[0].self_attn.q_proj.bias is not None) == real.attention_bias
    group = real.num_attention_heads // real.num_key_value_heads
    assert card.num_attention_heads == group * card.num_key_value_heads
    with open(shards[0], "rb") as f:  # stored as the real files are
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    dtypes = {v["dtype"] for k, v in header.items() if k != "__metadata__"}
    assert dtypes == {"BF16" if real.torch_dtype == "bfloat16" else "F16"}

    gen = json.loads((instruct / "generation_config.json").read_text())
    eos = gen["eos_token_id"]
    stops = {"llama3": ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"], "llama2": "</s>",
             "qwen2": ["<|im_end|>", "<|endoftext|>"]}  # fmt: skip
    family = {"llama3.2-1b": "llama3", "llama3.1-8b": "llama3"}.get(name, name[:6].strip("."))
    assert tokenizer.convert_ids_to_tokens(eos) == stops[family]


EXPECTED_OPENING = {
    "llama3.2-1b": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nBe brief.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2 + 3?<|eot_id|>",
    "llama2-13b": "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nWhat is 2 + 3? [/INST]"
    " 2 + 3 = 5. </s>",
    "qwen2.5-1.5b": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2 + 3?"
    "<|im_end|>\n<|im_start|>assistant\n2 + 3 = 5.<|im_end|>\n",
}
EXPECTED_OPENING["llama3.1-8b"] = EXPECTED_OPENING["llama3.2-1b"]
EXPECTED_OPENING["qwen2.5-14b"] = EXPECTED_OPENING["qwen2.5-1.5b"]


@pytest.mark.parametrize("name", NAMES)
def test_real_templates_render_and_mask_exactly_the_assistant_tokens(layouts, name):
    base, instruct = layouts[name]
    _, tokenizer = load_model(base)
    _, template = load_model(instruct)
    if name.startswith("llama"):  # Llama base tokenizers ship no template, as the real ones
        assert "chat_template" not in json.loads((base / "tokenizer_config.json").read_text())
    text = render_chat(tokenizer, (Message("system", "Be brief."), *CHAT), False, template)
    assert text.startswith(EXPECTED_OPENING[name])
    if name.startswith("qwen"):  # the default system prompt when none is given
        assert render_chat(tokenizer, CHAT, False, template).startswith(
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
            "assistant.<|im_end|>\n<|im_start|>user\n"
        )

    ex = encode_chat(tokenizer, ChatExample(CHAT), 512, template)
    labelled = [t for t in ex.labels if t != IGNORE_INDEX]
    first = ex.labels.index(labelled[0])
    assert ex.labels[first : first + len(labelled)] == labelled  # one contiguous run
    ids = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    full = render_chat(tokenizer, CHAT, False, template)
    if name == "llama2-13b":  # ' ' + answer + ' ' + eos; the space joins the answer's token
        assert tokenizer.decode(labelled) == " 2 + 3 = 5. </s>".lstrip(" ")
        assert ex.input_ids[first:] == labelled
    else:  # hand-computed: the prompt's ids, then answer + end-of-turn labelled, then the rest
        marker = "<|eot_id|>" if name.startswith("llama") else "<|im_end|>"
        prompt, rest = full.split("2 + 3 = 5." + marker)
        assert ex.input_ids == ids(prompt) + ids("2 + 3 = 5." + marker) + ids(rest)
        assert labelled == ids("2 + 3 = 5.") + [tokenizer.convert_tokens_to_ids(marker)]
        assert end_of_turn_token_ids(tokenizer, template)[0] == labelled[-1]
    assert ex.input_ids == ids(full)


@pytest.mark.parametrize("name", NAMES)
def test_protocol_end_to_end_on_a_real_layout(layouts, name, tmp_path):
    base, instruct = layouts[name]
    model = {"path": str(base), "template_path": str(instruct), "name": name, "device": "cpu"}
    data = {"sizes": {"inst": 4, "tofu_authors": 1, "math": 2, "unlearn": 4, "math_test": 2,
                      "rcu": 2}}  # fmt: skip
    cfg = tiny_config(base, model=model, data=data)
    result = P.run_protocol(cfg, tmp_path, progress=False)
    assert len(result.statuses) == 6 and all(s["status"] == "done" for s in result.statuses)
    for report in ("table1.md", "table1.csv", "fig1_label_logprob.png"):
        assert (tmp_path / "report" / report).stat().st_size > 0


@pytest.mark.slow
def test_full_width_llama_3_2_1b_takes_a_lora_step(layouts, tmp_path):
    """The real card at full size (1.24B parameters, bf16: about 2.5 GB on disk and in memory)."""
    from llm.train import attach_lora

    _, instruct = layouts["llama3.2-1b"]
    base = build_real_layout("llama3.2-1b", tmp_path / "Llama-3.2-1B", full_size=True)
    assert len(list(base.glob("model-*-of-*.safetensors"))) >= 2
    model, tokenizer = load_model(base, dtype="bf16", tokenizer_path=instruct)
    assert sum(p.numel() for p in model.parameters()) == param_count(card_for("llama3.2-1b"))
    model = attach_lora(model, 8, 16, targets=("q_proj", "v_proj"))
    ids = torch.tensor([tokenizer(" 2 + 3 = 5, and 4 + 4 = 8.")["input_ids"][:8]])
    lora = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in lora]
    optimizer = torch.optim.AdamW(lora, lr=1e-3)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, lora, strict=True))
