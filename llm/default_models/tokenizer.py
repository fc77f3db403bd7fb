"""The default models' tokenizer: a byte-level BPE trained on synthetic text and stage chats.

:func:`tokenizer_corpus` gathers the training texts (generic documents, chats of every synthetic
stage rendered with the architecture's template, the evaluation phrases and the paper's GSM8K
prompt); :func:`train_tokenizer` trains the BPE with the architecture's pre-tokenisation and
special tokens and wraps it as a transformers fast tokenizer carrying the chat template.
"""

from __future__ import annotations

from typing import Any

from llm import prompts, synthetic
from llm.chat_template import render_chat
from llm.default_models.arch import ARCH_SPECS, ArchSpec
from llm.default_models.config import DefaultModelConfig


def tokenizer_corpus(config: DefaultModelConfig, arch: str) -> list[str]:
    """Texts the BPE is trained on: generic documents, rendered chats of every stage, the
    evaluation phrases and arithmetic questions inside the paper's GSM8K prompt.

    The chats come from seeds the dataset files do not use by default (``10_000 + seed``), so
    the tokenizer learns the stages' vocabulary, not their particular examples. Without the
    prompt in the corpus its English breaks into byte pieces: about 200 tokens for the prompt
    alone against about 95 with it, and a math chat asked through it no longer fits in a
    pre-training sequence (docs/choosing_the_toy.md, eighth round).
    """
    spec = ARCH_SPECS[arch]
    docs = synthetic.generic_text(config.tokenizer_docs, seed=config.seed)
    per_stage = max(1, config.tokenizer_docs // 4)
    chat_seed = 10_000 + config.seed
    tofu, tofu_para = synthetic.author_facts(max(1, per_stage // 8), seed=chat_seed)
    chats = (
        synthetic.instruction_following(per_stage, seed=chat_seed)
        + tofu
        + tofu_para
        + synthetic.arithmetic(per_stage, seed=chat_seed)
        + synthetic.safety_refusals(per_stage, seed=chat_seed)
        + synthetic.rcu_stage(synthetic.rcu_set(min(per_stage, 40), seed=chat_seed), "R")
    )
    marker = _TemplateOnly(spec)
    rendered = [render_chat(marker, ex.messages) for ex in chats]
    phrases = [
        prompts.UNLEARN_LABEL,
        prompts.REFUSAL_SENTENCE,
        *prompts.unlearn_paraphrases(),
    ]
    questions = synthetic.arithmetic(max(1, config.tokenizer_docs // 10), seed=chat_seed)
    math_prompts = [prompts.gsm8k_prompt(ex.messages[0].content) for ex in questions]
    return docs + rendered + phrases + math_prompts


class _TemplateOnly:
    """Just enough of a tokenizer for :func:`render_chat` before the real one exists."""

    def __init__(self, spec: ArchSpec):
        from transformers.utils.chat_template_utils import render_jinja_template

        self._render = render_jinja_template
        self.chat_template = spec.chat_template
        self.special_tokens_map = {
            k: v
            for k, v in (("bos_token", spec.bos_token), ("eos_token", spec.eos_token))
            if v is not None
        }

    def apply_chat_template(
        self, conversation, chat_template, tokenize, add_generation_prompt, **kw
    ):
        rendered, _ = self._render(
            conversations=[conversation],
            chat_template=chat_template,
            add_generation_prompt=add_generation_prompt,
            **{**self.special_tokens_map, **kw},
        )
        return rendered[0]


def train_tokenizer(config: DefaultModelConfig, arch: str) -> Any:
    """Train the byte-level BPE of ``arch`` and wrap it as a transformers fast tokenizer."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    spec = ARCH_SPECS[arch]
    bpe = Tokenizer(models.BPE())
    if spec.nfc:
        bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(spec.pretokenize_regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    # Untrimmed offsets: the assistant mask needs each token's true first character.
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        min_frequency=2,
        special_tokens=list(spec.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(tokenizer_corpus(config, arch), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=spec.bos_token,
        eos_token=spec.eos_token,
        pad_token=spec.pad_token,
        model_max_length=config.max_position_embeddings,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = spec.chat_template
    return tokenizer
