"""Metrics equal their definitions on hand-built cases; batching does not change a score; math
sampling with left padding equals one prompt at a time, and two processes sample what one does."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from llm import evaluate as E
from llm.distances import re_distance
from llm.logprobs import per_example_logprobs, sequence_logprobs

pytestmark = pytest.mark.usefixtures("one_thread")


def test_math_scores_by_hand():
    samples = [["#### 5", "#### 6", "5", "#### 5.0", "x"], ["the answer 12", "#### 12", "", "", ""]]
    scores = E.math_scores(samples, ["5", "12"])
    # "#### 5.0" is not "5" (lm-eval compares text); "5" alone counts only for flexible
    assert scores["per_question_strict"] == [0.2, 0.2]
    assert scores["per_question_flexible"] == [0.4, 0.4]
    assert scores["math_strict"] == pytest.approx(0.2)
    assert scores["math_flexible"] == pytest.approx(0.4)


def test_scores_by_hand():
    assert E.forget_score(-2.0, -5.5) == 3.5
    assert E.tofu_utility(-1.0, -1.25) == 0.75
    assert E.tofu_utility(-1.0, -0.5) == 0.5
    assert E.math_utility(0.4, 0.1) == pytest.approx(-0.3)


def test_re_distance_by_hand():
    a = [np.array([0.0, 1.0]), np.array([2.0])]
    b = [np.array([1.0, 1.0]), np.array([0.0])]
    assert re_distance(a, b) == pytest.approx((1.0 + 4.0) / 2)
    assert re_distance(a, a) == 0.0
    with pytest.raises(ValueError, match="shapes"):
        re_distance(a, [np.array([1.0]), np.array([0.0])])


def test_per_example_logprobs_sum_to_sequence_logprobs():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11, dtype=torch.float64)
    labels = torch.tensor([[-100, 3, 4, -100, -100, -100], [-100, -100, 1, 2, 5, 9]])
    vecs = per_example_logprobs(logits, labels)
    assert [len(v) for v in vecs] == [2, 4]
    logp, n = sequence_logprobs(logits, labels)
    assert torch.allclose(torch.stack([v.sum() for v in vecs]), logp)
    lsm = torch.log_softmax(logits, -1)
    assert float(vecs[0][1]) == pytest.approx(float(lsm[0, 1, 4]))


@pytest.fixture
def llama(tiny_models_dir: Path):
    from llm.models import load_model

    return load_model(tiny_models_dir / "llama")


def test_batched_scoring_equals_one_at_a_time(llama):
    from llm.prompts import UNLEARN_LABEL, unlearn_paraphrases
    from llm.synthetic import safety_refusals

    model, tok = llama
    forget = safety_refusals(3, 0)
    phrases = [UNLEARN_LABEL, *unlearn_paraphrases()[:3]]
    suite = E.build_suite(tok, forget=forget, phrases=phrases, label=UNLEARN_LABEL)
    assert len(suite.groups["phrases"]) == 3 * 4
    batched = E.score_examples(model, suite.groups["phrases"], tok.pad_token_id, batch_size=5)
    single = [
        E.score_examples(model, [ex], tok.pad_token_id, 1)[0] for ex in suite.groups["phrases"]
    ]
    for a, b in zip(batched, single, strict=True):
        assert a.shape == b.shape and np.allclose(a, b, atol=1e-5)
    # The label score by hand: mean over prompts of the per-token average of the label tokens.
    summary, per_example, pred = E.evaluate_model(model, tok, suite, batch_size=4, math=False)
    ex = suite.groups["label"][0]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ex.input_ids])).logits[0]
    toks = [
        float(torch.log_softmax(logits[t - 1], -1)[ex.labels[t]])
        for t in range(1, len(ex.labels))
        if ex.labels[t] != -100
    ]
    assert per_example["label"][0] == pytest.approx(sum(toks) / len(toks), abs=1e-5)
    assert summary["label"] == pytest.approx(np.mean(per_example["label"]))
    assert summary["phrases"] == pytest.approx(np.mean(per_example["phrases"]))
    assert pred == []


def test_math_loglik_scores_the_gold_solution_teacher_forced(llama):
    from llm.synthetic import held_out_arithmetic
    from llm.tokenization import encode_prompt_completion

    model, tok = llama
    questions = held_out_arithmetic(3, 0, [])
    suite = E.build_suite(tok, math=questions)
    assert len(suite.groups["math_loglik"]) == 3 and len(suite.math_prompts) == 3
    summary, per_example, _ = E.evaluate_model(model, tok, suite, batch_size=2, math=False)
    ex = encode_prompt_completion(
        tok, E.prompt_of(questions[1]), questions[1].messages[-1].content, 512
    )
    answer = [t for t, y in zip(ex.input_ids, ex.labels, strict=True) if y != -100]
    assert "####" in tok.decode(answer)
    with torch.no_grad():
        lsm = torch.log_softmax(model(input_ids=torch.tensor([ex.input_ids])).logits[0], -1)
    toks = [float(lsm[t - 1, ex.labels[t]]) for t in range(1, len(ex.labels)) if ex.labels[t] >= 0]
    assert per_example["math_loglik"][1] == pytest.approx(np.mean(toks), abs=1e-5)
    assert summary["math_loglik"] == pytest.approx(np.mean(per_example["math_loglik"]))
    assert "math_strict" not in summary  # accuracy only when math=True
    short = E.build_suite(tok, math=questions, max_length=24)  # no solution fits: no group
    assert "math_loglik" not in short.groups and short.skipped["math_loglik"] == 3
    assert len(short.math_prompts) == 3


def test_math_sampling_is_seeded(llama):
    from llm.synthetic import held_out_arithmetic

    model, tok = llama
    questions = held_out_arithmetic(3, 0, [])
    suite = E.build_suite(tok, math=questions)
    kwargs = dict(max_new_tokens=6, seed=4, batch_size=2, stop_token_ids=suite.stop_token_ids)
    a = E.generate_samples(model, tok, suite.math_prompts, 2, **kwargs)
    b = E.generate_samples(model, tok, suite.math_prompts, 2, **kwargs)
    assert a == b and len(a) == 3 and all(len(s) == 2 for s in a)
    summary, per_example, _ = E.evaluate_model(
        model, tok, suite, math_samples=2, max_new_tokens=6, seed=4
    )
    assert len(per_example["math_strict"]) == 3
    assert 0.0 <= summary["math_flexible"] <= 1.0 and not math.isnan(summary["math_strict"])


def _near_greedy(model, tok, prompts, batch_size):
    # Temperature 1e-6: sampling picks the argmax, so batching cannot change the draws and any
    # difference would come from the left padding.
    return E.generate_samples(
        model, tok, prompts, 2, max_new_tokens=8, temperature=1e-6, seed=1, batch_size=batch_size
    )


def test_left_padded_batches_generate_what_single_prompts_do(llama):
    from transformers import AutoModelForCausalLM

    from llm.synthetic import held_out_arithmetic

    trained, tok = llama
    # Random weights: the tiny trained model answers "    " to every prompt, which would hide a
    # padding error; float64, because near-ties of float32 logits could flip between shapes.
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(trained.config).double()
    with torch.no_grad():  # larger than the init's weights: the answer depends on the question
        for p in model.parameters():
            p.mul_(8.0)
    prompts = E.build_suite(tok, math=held_out_arithmetic(5, 3, [])).math_prompts
    lengths = {len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts}
    assert len(lengths) > 1  # the batch really is padded
    one = _near_greedy(model, tok, prompts, 1)
    assert _near_greedy(model, tok, prompts, 5) == one
    assert len({s for row in one for s in row}) > 1  # not one constant string


def _generate_worker(rank: int, world: int, port: int, model_dir: str, out: str) -> None:
    from _distributed import init_gloo_worker

    init_gloo_worker(rank, world, port)
    samples = _sampled(Path(model_dir))
    if rank == 0:
        Path(out).write_text(json.dumps(samples))
    # Both ranks past every collective before either closes its connections: a rank that tore
    # down its group while the other was still finishing the gather aborted the other (gloo).
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def _sampled(model_dir: Path) -> list[list[str]]:
    from llm.models import load_model
    from llm.synthetic import held_out_arithmetic

    model, tok = load_model(model_dir)
    prompts = E.build_suite(tok, math=held_out_arithmetic(5, 3, [])).math_prompts
    return E.generate_samples(model, tok, prompts, 3, max_new_tokens=6, seed=7, batch_size=2)


def test_sampling_sharded_over_two_processes_equals_one(tiny_models_dir, tmp_path):
    """Batches are dealt round robin and seeded by their start, so the gathered samples of two
    ranks are those of one process (three batches: the ranks hold two and one)."""
    import torch.multiprocessing as mp
    from _distributed import free_port

    out = tmp_path / "two.json"
    args = (2, free_port(), str(tiny_models_dir / "llama"), str(out))
    mp.start_processes(_generate_worker, args=args, nprocs=2, join=True, start_method="spawn")
    assert json.loads(out.read_text()) == _sampled(tiny_models_dir / "llama")
