"""Synthetic stand-ins for the paper's datasets, deterministic by seed and free of harmful content.

=================  ===================================  =======================================
paper stage        real data                            stand-in here
=================  ===================================  =======================================
S_inst             Instruct-SkillMix                    :func:`instruction_following`
S_tofu             TOFU (fictitious authors)            :func:`author_facts`
S_math             GSM8K, traces ending "#### N"        :func:`arithmetic`
S_U                SORRY-BENCH prompts + refusals       :func:`safety_refusals`
Sec. 4.3           40 prompts with R, C, U              :func:`rcu_set`
pre-training       web text                             :func:`generic_text`,
                                                      :func:`arithmetic_facts`,
                                                      :func:`repeated_phrases`
=================  ===================================  =======================================

Harmful requests are never written out: every such prompt names a placeholder like
``[REDACTED-HARMFUL-TASK-17]``. Each generator draws from ``random.Random(f"{name}:{seed}")``
(string seeds are hashed deterministically), so the same ``(n, seed)`` always gives the same data,
independent of other generators and of Python's hash randomisation.

One job per module: :mod:`~llm.synthetic.words` (word banks, shared helpers),
:mod:`~llm.synthetic.instructions` (S_inst), :mod:`~llm.synthetic.authors` (S_tofu),
:mod:`~llm.synthetic.math_problems` (S_math), :mod:`~llm.synthetic.refusals` (S_U and R/C/U),
:mod:`~llm.synthetic.pretraining` (generic documents), :mod:`~llm.synthetic.files` (the stage
files). The paper's fixed evaluation text (the unlearning label, the refusal sentence, the GSM8K
prompt) is not synthetic data and lives in :mod:`llm.prompts`.
"""

from __future__ import annotations

from llm.chat import RCUItem
from llm.synthetic.authors import AUTHOR_FACTS, Author, author_facts
from llm.synthetic.files import DatasetSizes, default_dataset_files, write_default_datasets
from llm.synthetic.instructions import INSTRUCTION_TASKS, instruction_following
from llm.synthetic.math_problems import (
    MATH_TASKS,
    PRETRAINING_MATH_TASKS,
    arithmetic,
    held_out_arithmetic,
    question_split,
)
from llm.synthetic.pretraining import arithmetic_facts, generic_text, repeated_phrases
from llm.synthetic.refusals import pair_with_refusals, rcu_set, rcu_stage, safety_refusals

__all__ = [
    "DatasetSizes",
    "RCUItem",
    "instruction_following",
    "INSTRUCTION_TASKS",
    "author_facts",
    "Author",
    "AUTHOR_FACTS",
    "arithmetic",
    "MATH_TASKS",
    "PRETRAINING_MATH_TASKS",
    "held_out_arithmetic",
    "safety_refusals",
    "pair_with_refusals",
    "rcu_set",
    "rcu_stage",
    "generic_text",
    "arithmetic_facts",
    "repeated_phrases",
    "question_split",
    "default_dataset_files",
    "write_default_datasets",
]
