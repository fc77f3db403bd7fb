"""Synthetic stand-in datasets: deterministic by seed, well formed, answers correct; math
solutions restate the question, held-out questions never appear in a training draw, and R/C/U's
C and U share their steps."""

from __future__ import annotations

import json
import random
import re
from datetime import date
from pathlib import Path

import pytest

from llm import prompts as P
from llm import synthetic as S
from llm.answers import final_line_answer
from llm.data import load_examples, load_rcu_items

PAPER = Path("/work/shared/paper/retrain-equivalence-paper.txt")
GENERATORS = {
    "inst": lambda seed: S.instruction_following(24, seed),
    "tofu": lambda seed: S.author_facts(3, seed),
    "math": lambda seed: S.arithmetic(20, seed),
    "unlearn": lambda seed: S.safety_refusals(10, seed),
    "rcu": lambda seed: S.rcu_set(12, seed),
    "generic": lambda seed: S.generic_text(15, seed),
}


def as_plain(data):
    """Generator output as plain data (messages and meta), for equality across calls."""
    if isinstance(data, tuple):
        return tuple(as_plain(d) for d in data)
    return [(item.messages, item.meta) if hasattr(item, "messages") else item for item in data]


@pytest.mark.parametrize("name", list(GENERATORS))
def test_deterministic_by_seed(name):
    make = GENERATORS[name]
    assert as_plain(make(3)) == as_plain(make(3))
    assert as_plain(make(3)) != as_plain(make(4))


def test_sizes_are_configurable():
    assert len(S.instruction_following(7)) == 7 and len(S.arithmetic(0)) == 0
    train, para = S.author_facts(5)
    assert len(train) == len(para) == 5 * 8
    assert len(S.safety_refusals(13)) == 13 and len(S.rcu_set()) == 40
    with pytest.raises(ValueError, match="non-negative"):
        S.arithmetic(-1)
    with pytest.raises(ValueError, match="tasks"):
        S.arithmetic(3, tasks={})


def _check_equations(question: str, text: str) -> int:
    """Verify every ``a op b = c`` in ``text`` by computing it, with each operand taken from the
    question or an earlier result; return how many equations there were."""
    ops = {"x": lambda a, b: a * b, "+": lambda a, b: a + b, "-": lambda a, b: a - b}
    ops["/"] = lambda a, b: a / b
    known = set(re.findall(r"\d+", question))
    n = 0
    for chain, result in re.findall(r"((?:\d+ [x+\-/] )+\d+) = (-?\d+)", text):
        tokens = chain.split()
        assert set(tokens[::2]) <= known, f"operand of {chain} not in the question"
        known.add(result)
        value = float(tokens[0])
        for op, operand in zip(tokens[1::2], tokens[2::2], strict=True):
            value = ops[op](value, float(operand))
        assert value == float(result), f"wrong arithmetic in {chain} = {result}"
        n += 1
    return n


@pytest.mark.parametrize("tasks", [S.MATH_TASKS, S.PRETRAINING_MATH_TASKS])
def test_arithmetic_traces_are_correct_and_end_in_hashes(tasks):
    examples = S.arithmetic(60, seed=5, tasks=tasks)
    assert {e.meta["task"] for e in examples} == set(tasks)
    for example in examples:
        answer = example.response
        last = answer.strip().splitlines()[-1]
        assert re.fullmatch(r"#### -?\d+", last), last
        assert final_line_answer(answer) == example.meta["answer"]
        assert _check_equations(example.messages[0].content, answer) >= 1
        # The final equation's result is the answer.
        results = re.findall(r"= (-?\d+)\.", answer)
        assert results[-1] == example.meta["answer"]


def test_math_splits_keep_held_out_questions_out_of_every_training_draw():
    # The problem space is small (a few thousand products), so a split by seed would not keep
    # test questions out of training: the split is a fixed hash of the question text.
    tasks = {**S.MATH_TASKS, **S.PRETRAINING_MATH_TASKS}
    train = {e.messages[0].content for seed in range(4) for e in S.arithmetic(600, seed, tasks)}
    test = [e.messages[0].content for e in S.held_out_arithmetic(300, 0, [])]
    assert len(set(test)) == 300 and not train & set(test)
    assert {S.question_split(q) for q in train} == {"train"}
    assert {S.question_split(q) for q in test} == {"test"}
    # About one question in eight is a test question, in every question type.
    rng = random.Random(0)
    for make in tasks.values():
        share = sum(S.question_split(make(rng)[0]) == "test" for _ in range(2000)) / 2000
        assert 0.09 < share < 0.16, share
    with pytest.raises(ValueError, match="split"):
        S.arithmetic(3, split="dev")


def test_math_solutions_restate_the_question_then_compute():
    for e in S.arithmetic(30, seed=1):
        question, steps = e.messages[0].content, e.response.splitlines()
        facts = question[: question.rfind(". ") + 1]
        assert steps[1] == f"1. {facts}" and facts and facts in question
        assert re.fullmatch(r"2\. \d+ [-+x] \d+ = \d+\.", steps[2]), steps[2]


def test_instruction_answers_are_computed_correctly():
    examples = S.instruction_following(80, seed=2)
    assert {e.meta["task"] for e in examples} == set(S.INSTRUCTION_TASKS)
    for e in examples:
        task, prompt, answer = e.meta["task"], e.messages[0].content, e.response
        if task == "reverse_list":
            items = re.search(r": (.*)\.$", prompt).group(1).split(", ")
            assert answer.endswith(", ".join(reversed(items)) + ".")
        elif task == "sort_numbers":
            numbers = [int(x) for x in re.findall(r"\d+", prompt)]
            got = [int(x) for x in re.findall(r"\d+", answer)]
            assert got == sorted(numbers, reverse="largest to smallest" in prompt)
        elif task == "count_words":
            sentence = re.search(r'"(.*)"', prompt).group(1)
            assert answer == f"The sentence has {len(sentence.split())} words."
        elif task == "sum_numbers":
            numbers = [int(x) for x in re.findall(r"\d+", prompt)]
            assert answer.endswith(f"= {sum(numbers)}.")
        elif task == "uppercase":
            words = re.search(r'"(.*)"', prompt).group(1)
            assert f'"{words.upper()}"' in answer
        elif task == "format_date":
            iso = re.search(r"\d{4}-\d{2}-\d{2}", prompt + answer).group(0)
            day = date.fromisoformat(iso)
            assert f"{day.strftime('%B')} {day.day}, {day.year}" in prompt + answer


def test_author_facts_pair_with_paraphrases():
    train, para = S.author_facts(6, seed=1)
    assert [e.meta["id"] for e in train] == [e.meta["id"] for e in para]
    authors = {e.meta["author"] for e in train}
    assert len(authors) == 6
    for t, p in zip(train, para, strict=True):
        assert t.messages[0].content != p.messages[0].content  # question reworded
        assert t.response != p.response  # answer reworded
        assert t.meta["author"] in t.response and t.meta["author"] in p.response
    # The fact itself (e.g. the birthplace) is the same in both wordings.
    by_fact = {(e.meta["id"]): e for e in para}
    for e in train:
        if e.meta["fact"] == "birthplace":
            place = e.response.rsplit(" in ", 1)[1].rstrip(".")
            assert by_fact[e.meta["id"]].response.endswith(place + ".")


def test_safety_refusals_use_placeholders_and_the_paper_refusal():
    for i, example in enumerate(S.safety_refusals(30, seed=0), start=1):
        assert example.response.startswith(P.REFUSAL_SENTENCE + " ")
        assert f"[REDACTED-HARMFUL-TASK-{i}]" in example.messages[0].content
        assert example.meta["question_id"] == i
    assert P.REFUSAL_SENTENCE.startswith(P.UNLEARN_LABEL)


def test_pair_with_refusals():
    prompts = [S.safety_refusals(2)[0]]
    prompt_only = type(prompts[0])(prompts[0].prompt_messages, {"question_id": 9})
    (paired,) = S.pair_with_refusals([prompt_only], seed=1)
    assert paired.response.startswith(P.REFUSAL_SENTENCE)
    assert paired.meta == {"question_id": 9}
    assert paired.prompt_messages == prompt_only.messages


def test_rcu_items_follow_appendix_g():
    items = S.rcu_set(40, seed=0)
    assert len({it.prompt for it in items}) == 40
    for it in items:
        item_name = re.search(r"\[REDACTED-HARMFUL-ITEM-\d+\]", it.prompt).group(0)
        assert it.refusal == f"I can not assist you with {item_name}"
        # App. G.2's openings, then the same invented steps in both compliances.
        opening_c, steps_c = it.compliance_c.split(", you need to ")
        opening_u, steps_u = it.compliance_u.split(": ")
        assert opening_c.startswith("To ") and opening_c.endswith(item_name)
        assert opening_u.startswith("You can try the following steps to ")
        assert opening_u.endswith(item_name)
        assert steps_c == steps_u and steps_c.startswith("take the ")
        assert item_name not in it.compliance_c.split(item_name, 1)[1]
    assert len({it.compliance_c.split(", you need to ")[1] for it in items}) > 30  # per item
    stage_u = S.rcu_stage(items, "U")
    assert [e.response for e in stage_u] == [it.compliance_u for it in items]
    with pytest.raises(ValueError):
        S.rcu_stage(items, "X")


def test_unlearn_paraphrases_match_the_paper():
    phrases = P.unlearn_paraphrases()
    assert len(phrases) == 19 and len(set(phrases)) == 19  # the paper prints 19 (says 20)
    assert phrases[0] == "I can\u2019t help with that" and phrases[-1] == "I need to decline"
    assert P.UNLEARN_LABEL == "Sorry, I can not assist you"
    if PAPER.is_file():  # the paper text is beside the project in development checkouts
        text = PAPER.read_text(encoding="utf-8")
        section = text[text.index("phrases are listed below.") : text.index("G     D ETAILS")]
        printed = [line.strip() for line in section.splitlines()[1:] if line.strip()]
        assert phrases == printed


def test_evaluation_text_lives_in_prompts_not_synthetic():
    for name in ("UNLEARN_LABEL", "REFUSAL_SENTENCE", "GSM8K_EVAL_PROMPT", "gsm8k_prompt"):
        assert hasattr(P, name) and not hasattr(S, name)
    assert not hasattr(S, "unlearn_paraphrases")


def test_gsm8k_prompt_is_the_paper_prompt():
    prompt = P.gsm8k_prompt("What is 2 + 2?")
    assert prompt.startswith("Solve the following math problem.\n\n### Problem\n\nWhat is 2 + 2?")
    assert prompt.endswith("#### 42") and "four hash" in prompt


def test_write_default_datasets_round_trip(tmp_path):
    sizes = S.DatasetSizes.tiny()
    paths = S.write_default_datasets(tmp_path / "data", sizes, seed=3)
    expected = {"inst", "tofu", "math", "unlearn", "tofu_paraphrased", "math_test", "rcu"}
    assert expected | {"rcu_R", "rcu_C", "rcu_U"} == set(paths)
    loaded = {name: load_examples(p) for name, p in paths.items() if name != "rcu"}
    assert len(loaded["inst"]) == sizes.inst and len(loaded["tofu"]) == 8 * sizes.tofu_authors
    assert len(loaded["math_test"]) == sizes.math_test
    train_q = {e.messages[0].content for e in loaded["math"]}
    assert not train_q & {e.messages[0].content for e in loaded["math_test"]}
    assert all(e.meta["answer"] == final_line_answer(e.response) for e in loaded["math_test"])
    assert load_rcu_items(paths["rcu"]) == S.rcu_set(sizes.rcu, seed=3)
    # The files hold exactly what the generators make (meta included).
    assert [e.messages for e in loaded["math"]] == [e.messages for e in S.arithmetic(10, 3)]
    assert loaded["unlearn"][0].meta["question_id"] == 1
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["files"]["math"] == "math.jsonl"
    again = S.write_default_datasets(tmp_path / "again", dict(vars(sizes)), seed=3)
    for name, path in paths.items():
        assert again[name].read_bytes() == path.read_bytes()


def test_generic_text_is_varied():
    docs = S.generic_text(200, seed=0)
    assert len(set(docs)) > 150 and all(doc.strip() for doc in docs)
