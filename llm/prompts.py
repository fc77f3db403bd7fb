"""The paper's fixed evaluation text (not synthetic data): the unlearning label and refusal
sentence, the forget-score paraphrases of App. F, and the GSM8K evaluation prompt of App. F."""

from __future__ import annotations

import json
from importlib import resources

__all__ = [
    "UNLEARN_LABEL",
    "REFUSAL_SENTENCE",
    "GSM8K_EVAL_PROMPT",
    "gsm8k_prompt",
    "unlearn_paraphrases",
]

UNLEARN_LABEL = "Sorry, I can not assist you"
REFUSAL_SENTENCE = "Sorry, I can not assist you with this question."

# Paper App. F, the user prompt for GSM8K evaluation, with its line breaks as printed. The "|" of
# the text extraction is an em dash (slot 124 of the OT1-encoded font the PDF uses).
GSM8K_EVAL_PROMPT = (
    "Solve the following math problem.\n\n"
    "### Problem\n\n"
    "{question}\n"
    "### Output Requirement\n\n"
    "Provide a step-by-step explanation of your reasoning as you work through the problem.\n"
    'After your explanation, output a delimiter line that contains exactly "####" (four hash\n'
    "symbols) on a new line. Then, output only the final numerical answer\u2014nothing else, no\n"
    "extra text, symbols, or units.\n\n"
    "For example, if the final answer is 42, your output should end with:\n\n"
    "#### 42"
)


def gsm8k_prompt(question: str) -> str:
    """The paper's GSM8K evaluation prompt (App. F) around ``question``."""
    return GSM8K_EVAL_PROMPT.format(question=question)


def unlearn_paraphrases() -> list[str]:
    """The phrases of App. F that, with :data:`UNLEARN_LABEL`, define the forget score.

    Copied verbatim (typographic apostrophes included) from the paper into
    ``llm/resources/unlearn_paraphrases.json``. The paper announces 20 phrases but prints 19;
    all 19 printed ones are returned, none invented.
    """
    text = resources.files("llm.resources").joinpath("unlearn_paraphrases.json").read_text("utf-8")
    return list(json.loads(text)["paraphrases"])
