"""The two architectures of the default models: special tokens, chat templates, pre-tokenisation.

One :class:`ArchSpec` per architecture in :data:`ARCH_SPECS` (keys :data:`ARCHS`): Llama 3.1's
header-token template and Llama 3's pre-tokenisation, Qwen2's ChatML and its single-digit split.
Pure data; nothing here imports torch or transformers.
"""

from __future__ import annotations

from dataclasses import dataclass

ARCHS = ("llama", "qwen2")

# Llama-3.1-style template: BOS, a system header with the (pinned) date, header tokens per turn,
# <|eot_id|> ends a turn; the generation prompt opens an assistant header.
LLAMA_CHAT_TEMPLATE = (
    "{{- bos_token }}\n"
    "{%- if not date_string is defined %}\n"
    "    {%- if strftime_now is defined %}\n"
    '        {%- set date_string = strftime_now("%d %b %Y") %}\n'
    "    {%- else %}\n"
    '        {%- set date_string = "26 Jul 2024" %}\n'
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] | trim %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- else %}\n"
    '    {%- set system_message = "" %}\n'
    "{%- endif %}\n"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}\n"
    "{{- 'Today Date: ' + date_string + '\\n\\n' }}\n"
    "{{- system_message }}\n"
    "{{- '<|eot_id|>' }}\n"
    "{%- for message in messages %}\n"
    "    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + "
    "message['content'] | trim + '<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n"
)

# Qwen2 ChatML template (default system prompt when none is given).
QWEN2_CHAT_TEMPLATE = (
    "{%- for message in messages %}\n"
    "    {%- if loop.first and messages[0]['role'] != 'system' %}\n"
    "        {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "    {{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)


@dataclass(frozen=True)
class ArchSpec:
    """Special tokens and template of one architecture's tokenizer."""

    model_type: str
    special_tokens: tuple[str, ...]
    bos_token: str | None
    eos_token: str
    pad_token: str
    end_of_turn: str
    chat_template: str
    pretokenize_regex: str  # the family's own split, which its transformers tokenizer applies
    nfc: bool  # NFC-normalise text first (Qwen2Tokenizer does)


# Pre-tokenisation regexes of Llama 3 (digits in groups of up to 3) and Qwen2 (single digits).
LLAMA3_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


ARCH_SPECS = {
    "llama": ArchSpec(
        model_type="llama",
        special_tokens=(
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
            "<|finetune_right_pad_id|>",
        ),
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        pad_token="<|finetune_right_pad_id|>",
        end_of_turn="<|eot_id|>",
        chat_template=LLAMA_CHAT_TEMPLATE,
        pretokenize_regex=LLAMA3_PRETOKENIZE_REGEX,
        nfc=False,
    ),
    "qwen2": ArchSpec(
        model_type="qwen2",
        special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        bos_token=None,  # Qwen2 uses no BOS
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        end_of_turn="<|im_end|>",
        chat_template=QWEN2_CHAT_TEMPLATE,
        pretokenize_regex=QWEN2_PRETOKENIZE_REGEX,
        nfc=True,
    ),
}
