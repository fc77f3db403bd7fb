"""Dataset loading: every supported layout, validation with file:line errors, round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm.chat import ChatExample, DatasetError, Message, RCUItem, chat_example
from llm.data import load_examples, load_rcu_items, save_examples, save_rcu_items


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def roles_and_contents(example: ChatExample) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in example.messages]


def test_openai_chat_messages(tmp_path):
    path = write_jsonl(
        tmp_path / "chat.jsonl",
        [
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello."},
                ],
                "id": 7,
            }
        ],
    )
    (example,) = load_examples(path)
    assert roles_and_contents(example) == [
        ("system", "Be brief."),
        ("user", "Hi"),
        ("assistant", "Hello."),
    ]
    assert example.meta["source"] == str(path) and example.meta["line"] == 1
    assert example.meta["format"] == "chat" and example.meta["id"] == 7
    assert example.response == "Hello." and len(example.prompt_messages) == 2


def test_sharegpt_conversations(tmp_path):
    path = write_jsonl(
        tmp_path / "sharegpt.jsonl",
        [
            {
                "conversations": [
                    {"from": "human", "value": "2+2?"},
                    {"from": "gpt", "value": "4"},
                    {"from": "human", "value": "and 3+3?"},
                    {"from": "gpt", "value": "6"},
                ]
            }
        ],
    )
    (example,) = load_examples(path)
    assert [m.role for m in example.messages] == ["user", "assistant", "user", "assistant"]
    assert example.messages[-1].content == "6"


def test_question_answer_and_tofu(tmp_path):
    records = [{"question": "Who wrote X?", "answer": "Y wrote X.", "paraphrased_answer": "X: Y"}]
    path = write_jsonl(tmp_path / "qa.jsonl", records)
    (auto,) = load_examples(path)
    (tofu,) = load_examples(path, fmt="tofu")
    assert auto.meta["format"] == "qa" and tofu.meta["format"] == "tofu"
    assert roles_and_contents(tofu) == [("user", "Who wrote X?"), ("assistant", "Y wrote X.")]
    assert tofu.meta["paraphrased_answer"] == "X: Y"


def test_gsm8k_layout_reads_final_answer(tmp_path):
    answer = "She earns 12 * 100 = <<12*100=1200>>1200.\nSo 1,200 in total.\n#### 1,200"
    path = write_jsonl(tmp_path / "gsm8k.jsonl", [{"question": "How much?", "answer": answer}])
    (example,) = load_examples(path)
    assert example.meta["format"] == "gsm8k" and example.meta["answer"] == "1200"
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "answer": "no marker"}])
    with pytest.raises(DatasetError, match=r"bad\.jsonl:1: GSM8K answer must end"):
        load_examples(bad, fmt="gsm8k")


def test_prompt_response_with_system(tmp_path):
    path = write_jsonl(tmp_path / "pr.jsonl", [{"prompt": "p", "response": "r", "system": "s"}])
    (example,) = load_examples(path)
    assert roles_and_contents(example) == [("system", "s"), ("user", "p"), ("assistant", "r")]


def test_sorry_bench_layout(tmp_path):
    release = [
        {
            "question_id": 1,
            "category": "1",
            "turns": ["[placeholder request]"],
            "prompt_style": "base",
        }
    ]
    prompts = write_jsonl(tmp_path / "question.jsonl", release)
    with pytest.raises(DatasetError, match=r"question\.jsonl:1: missing field 'response'"):
        load_examples(prompts)
    (prompt_only,) = load_examples(prompts, require_response=False)
    assert prompt_only.response is None and prompt_only.meta["question_id"] == 1
    assert prompt_only.meta["category"] == "1" and prompt_only.meta["format"] == "sorry_bench"
    paired = write_jsonl(
        tmp_path / "paired.jsonl", [{**release[0], "response": "Sorry, I can not assist you."}]
    )
    (example,) = load_examples(paired)
    assert roles_and_contents(example)[-1] == ("assistant", "Sorry, I can not assist you.")
    multi = write_jsonl(tmp_path / "multi.jsonl", [{**release[0], "turns": ["a", "b"]}])
    with pytest.raises(DatasetError, match="single-turn"):
        load_examples(multi, require_response=False)


def test_skillmix_layouts(tmp_path):
    path = write_jsonl(
        tmp_path / "skillmix.jsonl",
        [
            {"instruction": "Summarise.", "input": "Some text.", "output": "Short."},
            {"instruction": "Say hi.", "input": "", "output": "Hi."},
        ],
    )
    first, second = load_examples(path)
    assert roles_and_contents(first) == [
        ("user", "Summarise.\n\nSome text."),
        ("assistant", "Short."),
    ]
    assert roles_and_contents(second) == [("user", "Say hi."), ("assistant", "Hi.")]
    messages = write_jsonl(
        tmp_path / "sm2.jsonl",
        [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}],
    )
    (example,) = load_examples(messages, fmt="skillmix")
    assert example.meta["format"] == "skillmix" and example.response == "b"


def test_json_array_reports_element_line(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(
        '[\n  {"question": "a", "answer": "b"},\n  {"question": "c",\n   "answer": ""}\n]\n'
    )
    with pytest.raises(DatasetError) as info:
        load_examples(path)
    assert str(info.value) == f"{path}:3: field 'answer' is empty"
    assert info.value.line == 3 and info.value.path == str(path)
    good = tmp_path / "good.json"
    good.write_text('[{"question": "a", "answer": "b"},\n {"question": "c", "answer": "d"}]')
    assert [e.meta["line"] for e in load_examples(good)] == [1, 2]


def test_json_suffix_with_one_object_per_line(tmp_path):
    # TOFU's release files (forget10.json, ...) are JSON Lines despite the suffix.
    path = tmp_path / "forget10.json"
    path.write_text('{"question": "a", "answer": "b"}\n{"question": "c", "answer": "d"}\n')
    assert [e.meta["line"] for e in load_examples(path, fmt="tofu")] == [1, 2]
    trailing = tmp_path / "trailing.json"
    trailing.write_text('[{"question": "a", "answer": "b"}]\n{"x": 1}\n')
    with pytest.raises(DatasetError, match=r"trailing\.json:2: extra data after the JSON array"):
        load_examples(trailing)
    unclosed = tmp_path / "unclosed.json"
    unclosed.write_text('[{"question": "a", "answer": "b"}\n')
    with pytest.raises(DatasetError, match=r"unclosed\.json:2: invalid JSON"):
        load_examples(unclosed)


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"messages": [{"role": "robot", "content": "x"}]}], "unknown role 'robot'"),
        (
            [{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}],
            "expected role 'assistant'",
        ),
        ([{"messages": [{"role": "user", "content": "a"}]}], "does not end with an assistant"),
        (
            [
                {
                    "messages": [
                        {"role": "user", "content": "a"},
                        {"role": "assistant", "content": " "},
                    ]
                }
            ],
            "is empty",
        ),
        ([{"messages": []}], "non-empty list"),
        ([{"conversations": [{"from": "alien", "value": "x"}]}], "unknown ShareGPT speaker"),
        ([{"question": "a", "answer": 3}], "must be a string"),
        ([{"prompt": "a", "response": "b"}, ["not", "an", "object"]], "not a JSON object"),
    ],
)
def test_bad_records_name_file_and_line(tmp_path, records, message):
    path = write_jsonl(tmp_path / "bad.jsonl", records)
    with pytest.raises(DatasetError, match=message) as info:
        load_examples(path)
    line = len(records)  # the bad record is the last one
    assert str(info.value).startswith(f"{path}:{line}: ")


def test_nothing_returned_when_any_record_is_bad(tmp_path):
    good = {"question": "q", "answer": "a"}
    path = write_jsonl(tmp_path / "mixed.jsonl", [good, {"question": "q"}, good, {"answer": "a"}])
    with pytest.raises(DatasetError, match=r"mixed\.jsonl:2: .*\(and 1 more bad records\)"):
        load_examples(path)


def test_invalid_json_line_and_missing_file(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\n\n{"question": \n')
    with pytest.raises(DatasetError, match=r"broken\.jsonl:3: invalid JSON"):
        load_examples(path)
    with pytest.raises(DatasetError, match="not found"):
        load_examples(tmp_path / "nope.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DatasetError, match="no records"):
        load_examples(empty)
    with pytest.raises(DatasetError, match="cannot detect"):
        load_examples(write_jsonl(tmp_path / "odd.jsonl", [{"text": "x"}]))
    with pytest.raises(DatasetError, match="unknown dataset format"):
        load_examples(path, fmt="csv")


def test_save_load_round_trip(tmp_path):
    examples = [
        chat_example([("user", "a"), ("assistant", "b")], {"author": "Z", "id": 1}),
        chat_example([("system", "s"), ("user", "c"), ("assistant", "d")]),
    ]
    path = save_examples(examples, tmp_path / "sub" / "out.jsonl")
    loaded = load_examples(path)
    assert [e.messages for e in loaded] == [e.messages for e in examples]
    assert loaded[0].meta["author"] == "Z" and loaded[0].meta["id"] == 1
    assert loaded[1].meta["line"] == 2
    # Saving the loaded examples again gives the same bytes (provenance keys are not written).
    again = save_examples(loaded, tmp_path / "again.jsonl")
    assert again.read_bytes() == path.read_bytes()
    assert not list((tmp_path / "sub").glob("*.tmp"))


def test_chat_example_validates():
    with pytest.raises(ValueError, match="expected role"):
        chat_example([("assistant", "x")])
    example = ChatExample((Message("user", "q"),))
    assert example.response is None and example.to_dicts() == [{"role": "user", "content": "q"}]


def test_rcu_items_round_trip_and_errors(tmp_path):
    items = [RCUItem("p", "r", "c", "u"), RCUItem("p2", "r2", "c2", "u2")]
    path = save_rcu_items(items, tmp_path / "rcu.jsonl")
    assert load_rcu_items(path) == items
    bad = write_jsonl(tmp_path / "rcu_bad.jsonl", [{"prompt": "p", "refusal": "r"}])
    with pytest.raises(DatasetError, match=r"rcu_bad\.jsonl:1: missing field 'compliance_c'"):
        load_rcu_items(bad)
