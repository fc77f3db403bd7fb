"""Chat-template tokenisation: exact assistant masks, truncation, pinned dates, batching."""

from __future__ import annotations

import copy

import pytest
import torch

from llm.chat import ChatExample, Message, chat_example
from llm.chat_template import (
    PINNED_DATE_STRING,
    ChatTemplateError,
    end_of_turn_token_ids,
    render_chat,
    render_prompt,
    template_hash,
)
from llm.models import load_model, load_tokenizer
from llm.objectives import IGNORE_INDEX, sequence_logprobs
from llm.tokenization import (
    TokenizedExample,
    batch_indices,
    collate,
    encode_chat,
    encode_examples,
    encode_prompt,
    encode_prompt_completion,
)

END_OF_TURN = {"llama": "<|eot_id|>", "qwen2": "<|im_end|>"}
ARCHS = ("llama", "qwen2")

MULTI_TURN = chat_example(
    [
        ("system", "You answer in one sentence."),
        ("user", "Where was Liora Morwick born?"),
        ("assistant", "Liora Morwick was born in Quillhaven."),
        ("user", "And what does she write?"),
        ("assistant", "She writes mystery novels, 12 of them in 1999!"),
    ]
)


@pytest.fixture(scope="module")
def tokenizers(tiny_models_dir):
    return {arch: load_tokenizer(tiny_models_dir / arch) for arch in ARCHS}


def labelled_runs(tokenizer, item: TokenizedExample) -> list[str]:
    """Decoded text of each maximal run of consecutive labelled tokens."""
    runs, current = [], []
    for label in item.labels + [IGNORE_INDEX]:
        if label != IGNORE_INDEX:
            current.append(label)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    return runs


@pytest.mark.parametrize("arch", ARCHS)
def test_mask_covers_exactly_assistant_tokens(tokenizers, arch):
    tokenizer = tokenizers[arch]
    item = encode_chat(tokenizer, MULTI_TURN, max_length=512)
    assistant = [m.content for m in MULTI_TURN.messages if m.role == "assistant"]
    assert labelled_runs(tokenizer, item) == [a + END_OF_TURN[arch] for a in assistant]
    # Labels are the input ids themselves where labelled.
    for token, label in zip(item.input_ids, item.labels, strict=True):
        assert label in (IGNORE_INDEX, token)
    # Independent check: the unlabelled tokens decode to the rendered text minus the answers.
    rendered = render_chat(tokenizer, MULTI_TURN.messages)
    prompt_part = tokenizer.decode(
        [t for t, lab in zip(item.input_ids, item.labels, strict=True) if lab == IGNORE_INDEX]
    )
    expected = rendered
    for answer in assistant:
        expected = expected.replace(answer + END_OF_TURN[arch], "", 1)
    assert prompt_part == expected
    assert tokenizer.decode(item.input_ids) == rendered and not item.truncated


@pytest.mark.parametrize("arch", ARCHS)
def test_single_turn_labels_start_after_generation_prompt(tokenizers, arch):
    tokenizer = tokenizers[arch]
    example = chat_example([("user", "Sort 3, 1, 2."), ("assistant", "1, 2, 3.")])
    item = encode_chat(tokenizer, example, max_length=512)
    prompt_ids = encode_prompt(tokenizer, example.prompt_messages)
    assert item.input_ids[: len(prompt_ids)] == prompt_ids
    assert all(label == IGNORE_INDEX for label in item.labels[: len(prompt_ids)])
    answer = item.labels[len(prompt_ids) :]
    n_answer = sum(label != IGNORE_INDEX for label in answer)
    assert all(label != IGNORE_INDEX for label in answer[:n_answer])
    # After the end-of-turn marker only whitespace is left unlabelled (ChatML's newline).
    assert tokenizer.decode(item.input_ids[len(prompt_ids) + n_answer :]).strip() == ""


def test_llama_template_prints_pinned_date(tokenizers):
    text = render_prompt(tokenizers["llama"], [Message("user", "hi")])
    assert f"Today Date: {PINNED_DATE_STRING}" in text
    assert text.startswith("<|begin_of_text|>")
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_strftime_now_is_pinned(tokenizers):
    tokenizer = copy.deepcopy(tokenizers["qwen2"])
    tokenizer.chat_template = (
        "{{ 'Date: ' + strftime_now('%Y-%m-%d') + ' / ' + strftime_now('%d %B') + '\\n' }}"
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '<|im_end|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    )
    text = render_prompt(tokenizer, [Message("user", "hi")])
    assert text == "Date: 2024-07-26 / 26 July\nuser: hi<|im_end|>assistant: "
    item = encode_chat(tokenizer, chat_example([("user", "a"), ("assistant", "b c")]), 64)
    # " b" straddles the prompt's last space and the answer: labelled as the first answer token.
    assert labelled_runs(tokenizer, item) == [" b c<|im_end|>"]
    assert template_hash(tokenizer) == template_hash(copy.deepcopy(tokenizer))


def test_template_hash_tracks_the_template(tokenizers):
    llama, qwen = tokenizers["llama"], tokenizers["qwen2"]
    assert template_hash(llama) != template_hash(qwen)
    assert len(template_hash(llama)) == 64
    changed = copy.deepcopy(qwen)
    changed.chat_template = "{{- 'v2 ' }}" + qwen.chat_template
    assert template_hash(changed) != template_hash(qwen)


def test_template_from_a_separate_tokenizer(tokenizers):
    instruct = tokenizers["llama"]
    base = copy.deepcopy(instruct)
    base.chat_template = None
    with pytest.raises(ChatTemplateError, match="no chat template"):
        encode_chat(base, MULTI_TURN, 512)
    via_template = encode_chat(base, MULTI_TURN, 512, template_tokenizer=instruct)
    assert via_template == encode_chat(instruct, MULTI_TURN, 512)
    assert template_hash(base, instruct) == template_hash(instruct)


def test_generation_block_templates_use_the_tokenizer_mask(tokenizers):
    tokenizer = copy.deepcopy(tokenizers["qwen2"])
    plain = encode_chat(tokenizer, MULTI_TURN, 512)
    tokenizer.chat_template = (
        "{%- for message in messages %}"
        "{%- if message['role'] == 'assistant' %}"
        "{{- '<|im_start|>assistant\\n' }}{% generation %}"
        "{{- message['content'] + '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}"
        "{%- else %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
        "'<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    )
    generation = encode_chat(tokenizer, MULTI_TURN, 512)
    assert labelled_runs(tokenizer, generation) == labelled_runs(tokenizer, plain)


def test_template_that_is_not_prefix_consistent_is_refused(tokenizers):
    tokenizer = copy.deepcopy(tokenizers["qwen2"])
    # Prints the number of messages first, so a prefix renders differently from the whole.
    tokenizer.chat_template = (
        "{{ messages | length }}{% for m in messages %}{{ m['role'] + m['content'] }}{% endfor %}"
    )
    with pytest.raises(ChatTemplateError, match="prefix-consistent"):
        encode_chat(tokenizer, MULTI_TURN, 512)


def test_truncation_and_drop_counts(tokenizers):
    tokenizer = tokenizers["qwen2"]
    short = chat_example([("user", "a"), ("assistant", "b")])
    long_answer = chat_example([("user", "a"), ("assistant", "word " * 200)])
    long_prompt = chat_example([("user", "word " * 200), ("assistant", "b")])
    prompt_len = len(encode_prompt(tokenizer, short.prompt_messages))
    max_length = prompt_len + 5
    encoded = encode_examples(tokenizer, [short, long_answer, long_prompt], max_length)
    assert encoded.n_truncated == 2 and encoded.n_dropped == 1
    assert encoded.kept_indices == [0, 1] and len(encoded) == 2
    cut = encoded.examples[1]
    assert cut.truncated and len(cut.input_ids) == max_length and cut.n_labelled == 5
    assert encoded.template_hash == template_hash(tokenizer)
    with pytest.raises(ValueError, match="max_length"):
        encode_chat(tokenizer, short, 1)
    with pytest.raises(ValueError, match="no assistant"):
        encode_chat(tokenizer, ChatExample((Message("user", "q"),)), 32)


@pytest.mark.parametrize("arch", ARCHS)
def test_prompt_completion_labels_only_the_completion(tokenizers, arch):
    tokenizer = tokenizers[arch]
    prompt = [Message("user", "Explain how to do [REDACTED-HARMFUL-TASK-3].")]
    item = encode_prompt_completion(tokenizer, prompt, "Sorry, I can not assist you", 256)
    assert labelled_runs(tokenizer, item) == ["Sorry, I can not assist you"]
    assert tokenizer.decode(item.input_ids) == render_prompt(tokenizer, prompt) + (
        "Sorry, I can not assist you"
    )
    with pytest.raises(ValueError, match="more than max_length"):
        encode_prompt_completion(tokenizer, prompt, "x " * 100, 32)
    with pytest.raises(ValueError, match="empty"):
        encode_prompt_completion(tokenizer, prompt, "", 32)


@pytest.mark.parametrize("arch", ARCHS)
def test_end_of_turn_ids(tokenizers, arch):
    tokenizer = tokenizers[arch]
    ids = end_of_turn_token_ids(tokenizer)
    assert ids[0] == tokenizer.convert_tokens_to_ids(END_OF_TURN[arch])
    assert tokenizer.eos_token_id in ids


def test_collate_pads_right_and_masks_labels():
    batch = [
        TokenizedExample([5, 6, 7], [IGNORE_INDEX, 6, 7]),
        TokenizedExample([8], [8]),
    ]
    out = collate(batch, pad_token_id=0)
    assert out["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert out["labels"].tolist() == [[IGNORE_INDEX, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]
    assert all(t.dtype == torch.long for t in out.values())
    with pytest.raises(ValueError, match="empty"):
        collate([], 0)
    with pytest.raises(ValueError, match="differ in length"):
        TokenizedExample([1, 2], [1])


def test_padding_does_not_change_sequence_logprobs(tiny_models_dir):
    """Right padding with attention mask gives each sequence the log-prob it has alone."""
    model, tokenizer = load_model(tiny_models_dir / "llama")
    examples = [
        chat_example([("user", "Add 2 and 3."), ("assistant", "2 + 3 = 5.")]),
        chat_example([("user", "Say hi."), ("assistant", "Hi there, " * 5)]),
    ]
    items = [encode_chat(tokenizer, e, 256) for e in examples]
    batch = collate(items, tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        together, counts = sequence_logprobs(logits, batch["labels"])
        for row, item in enumerate(items):
            alone = collate([item], tokenizer.pad_token_id)
            lp, n = sequence_logprobs(model(input_ids=alone["input_ids"]).logits, alone["labels"])
            torch.testing.assert_close(together[row], lp[0], rtol=1e-4, atol=1e-4)
            assert counts[row] == n[0] == item.n_labelled


def test_batch_indices_are_a_partition():
    lengths = [5, 1, 9, 3, 7, 2, 8]
    plain = batch_indices(lengths, 3)
    assert plain == [[0, 1, 2], [3, 4, 5], [6]]
    shuffled = batch_indices(lengths, 3, seed=1)
    assert sorted(i for b in shuffled for i in b) == list(range(7))
    assert shuffled == batch_indices(lengths, 3, seed=1)
    grouped = batch_indices(lengths, 2, seed=2, group_by_length=True)
    assert sorted(i for b in grouped for i in b) == list(range(7))
    for b in grouped:  # sorted chunks: each batch holds neighbours in length order
        assert [lengths[i] for i in b] == sorted(lengths[i] for i in b)
    with pytest.raises(ValueError):
        batch_indices(lengths, 0)
