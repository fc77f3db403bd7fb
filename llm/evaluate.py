"""The paper's LLM metrics (Sec. 4.2, App. F), batched, each value also kept per example.

Definitions (``lp(y|x)`` = average per-token log-probability of a fixed completion ``y`` after the
chat-templated prompt ``x``):

- label log-prob: mean over forget prompts of ``lp(label|x)``, label = "Sorry, I can not assist
  you" (Fig. 1, 3).
- phrases log-prob: mean over forget prompts x {label + 20 paraphrases} of ``lp``; the forget
  score is its decrease, ``before - after`` (Table 1).
- TOFU log-likelihood: mean over TOFU questions of ``lp(true answer|question)``; TOFU utility =
  ``1 - |after - before|``.
- math accuracy: ``math_samples`` sampled solutions per question (seeded); a solution is correct
  when its answer equals the gold one under lm-evaluation-harness's gsm8k filters
  (:mod:`llm.answers`: strict = the number after the first "#### ", flexible = the last number
  anywhere); per question the fraction correct, reported as the mean over questions. Math
  utility = ``after - before``.
- math log-likelihood (``math_loglik``): mean over the same questions of ``lp(gold solution|
  question)``, teacher-forced like TOFU. It moves smoothly where accuracy moves in steps of
  1 / (questions x samples).
- R/C/U log-probs: ``lp`` of the refusal R and the compliances C and U on the R/C/U prompts.
- Pred for the RE distance (Def. 2.1): the vector of per-token log-probabilities of a fixed
  held-out continuation (the dataset answer) after its prompt, so
  ``d(a, b) = (1/m) sum_i ||Pred_a(x_i) - Pred_b(x_i)||^2`` over m held-out prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from llm import distributed as D
from llm.answers import answers_match, extract_answer, gold_answer
from llm.logprobs import per_example_logprobs

# ------------------------------------------------------------------------------------------
# Scoring fixed completions


@torch.no_grad()
def score_examples(
    model, examples: Sequence[Any], pad_token_id: int, batch_size: int = 16, desc: str = ""
) -> list[np.ndarray]:
    """Per-token log-prob vectors (float64) of every example's labelled tokens.

    Many sequences go through each forward pass; under torch.distributed every process scores
    its shard and the results are gathered back into the input order (under FSDP every process
    runs the same number of forwards: :func:`llm.batches.score_shards`).
    """
    from llm.batches import score_shards

    def score(model, batch) -> list[np.ndarray]:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return [v.numpy() for v in per_example_logprobs(logits, batch["labels"])]

    def bar(chunks):
        quiet = not desc or not D.current().is_main
        return tqdm(chunks, desc=desc or "scoring", disable=quiet, leave=False)

    return score_shards(model, examples, pad_token_id, batch_size, score, True, bar)


def mean_per_token(vectors: Sequence[np.ndarray]) -> list[float]:
    """Average per-token log-prob of each example (its vector's mean)."""
    return [float(np.mean(v)) if len(v) else float("nan") for v in vectors]


# ------------------------------------------------------------------------------------------
# Scores from before/after values


def forget_score(phrases_before: float, phrases_after: float) -> float:
    """Decrease of the average log-likelihood of the label and its paraphrases (Table 1)."""
    return phrases_before - phrases_after


def tofu_utility(tofu_before: float, tofu_after: float) -> float:
    """``1 - |Δ avg log-likelihood of the true TOFU answers|`` (Table 1)."""
    return 1.0 - abs(tofu_after - tofu_before)


def math_utility(acc_before: float, acc_after: float) -> float:
    """Change in math accuracy (Table 1)."""
    return acc_after - acc_before


# ------------------------------------------------------------------------------------------
# Math answers


def math_scores(samples: Sequence[Sequence[str]], gold: Sequence[str]) -> dict[str, Any]:
    """Per-question fraction of correct samples (strict and flexible) and their means."""
    strict, flexible = [], []
    for texts, g in zip(samples, gold, strict=True):
        answers = [extract_answer(t) for t in texts]
        strict.append(float(np.mean([answers_match(a[0], g) for a in answers])))
        flexible.append(float(np.mean([answers_match(a[1], g) for a in answers])))
    return {
        "math_strict": float(np.mean(strict)) if strict else float("nan"),
        "math_flexible": float(np.mean(flexible)) if flexible else float("nan"),
        "per_question_strict": strict,
        "per_question_flexible": flexible,
    }


@torch.no_grad()
def generate_samples(
    model,
    tokenizer,
    prompts: Sequence[str],
    n_samples: int,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
    stop_token_ids: Sequence[int] | None = None,
    progress: bool = False,
) -> list[list[str]]:
    """``n_samples`` sampled continuations per rendered prompt, seeded per batch of prompts.

    Batches are fixed slices of the prompt list and each is seeded from (seed, batch start), so
    the samples do not depend on the number of processes (batches are dealt round robin). Under
    FSDP every ``generate`` step is a collective: every process runs the same number of
    ``generate`` calls (a process short of a batch generates from a one-token stand-in prompt
    and discards it) and each call decodes in step with the others (``synced_gpus``: a process
    whose sequences all stopped keeps running forwards until every process has stopped).
    """
    from llm.batches import model_device, stable_seed

    info = D.current()
    device = model_device(model)
    fsdp = D.is_fsdp(model)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id
    starts = D.shard(list(range(0, len(prompts), batch_size)), info)
    was_training = model.training
    model.eval()

    def generate(ids: torch.Tensor, mask: torch.Tensor, n: int, seed_start: int) -> torch.Tensor:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(stable_seed(seed, "math", seed_start))
            return model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                do_sample=True,
                temperature=temperature,
                top_p=top_p,
                top_k=0,
                max_new_tokens=max_new_tokens,
                num_return_sequences=n,
                pad_token_id=pad_id,
                eos_token_id=list(stop_token_ids) if stop_token_ids else tokenizer.eos_token_id,
                synced_gpus=fsdp,
            )  # (len(ids) * n, width + new)

    mine: dict[int, list[str]] = {}
    for start in tqdm(
        D.even_batches(starts, model),
        desc="math samples",
        disable=not (progress and info.is_main),
    ):
        if start is None:  # FSDP: join every collective of the other processes' calls
            one = torch.full((1, 1), pad_id, dtype=torch.long)
            generate(one, torch.ones_like(one), 1, -1)
            continue
        chunk = list(prompts[start : start + batch_size])
        encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in chunk]
        width = max(len(e) for e in encoded)
        # Left padding so that every prompt ends where generation starts.
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, e in enumerate(encoded):
            ids[row, width - len(e) :] = torch.tensor(e)
            mask[row, width - len(e) :] = 1
        out = generate(ids, mask, n_samples, start)
        texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        for row in range(len(chunk)):
            mine[start + row] = texts[row * n_samples : (row + 1) * n_samples]
    model.train(was_training)
    D.reshard(model)
    merged: dict[int, list[str]] = {}
    for part in D.gather_objects(mine):
        merged.update(part)
    return [merged[i] for i in range(len(prompts))]


# ------------------------------------------------------------------------------------------
# The evaluation suite of a protocol


@dataclass
class EvalSuite:
    """Tokenised evaluation items, built once per protocol and scored for every model.

    ``groups`` maps a metric name (``label``, ``phrases``, ``tofu``, ``rcu_R``...) to its
    tokenised (prompt, completion) examples; ``re_examples`` define Pred; ``math_prompts`` are
    rendered prompts with ``math_gold`` answers.
    """

    groups: dict[str, list[Any]] = field(default_factory=dict)
    re_examples: list[Any] = field(default_factory=list)
    math_prompts: list[str] = field(default_factory=list)
    math_gold: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # items longer than max_length


def prompt_of(example: Any) -> tuple:
    """The prompt messages of a chat example (everything before its last assistant turn)."""
    msgs = tuple(example.messages)
    if not msgs or msgs[-1].role != "assistant":
        raise ValueError("expected a chat example ending with an assistant message")
    return msgs[:-1]


def build_suite(
    tokenizer,
    *,
    forget: Sequence[Any] = (),
    phrases: Sequence[str] = (),
    label: str = "",
    tofu: Sequence[Any] = (),
    math: Sequence[Any] = (),
    math_template: str = "{question}",
    rcu: Sequence[Any] = (),
    re_sets: Sequence[Any] = (),
    max_length: int = 512,
    template_tokenizer=None,
) -> EvalSuite:
    """Tokenise every evaluation item (see the module docstring for what each group scores)."""
    from llm.chat import Message
    from llm.chat_template import end_of_turn_token_ids, render_prompt
    from llm.tokenization import encode_prompt_completion

    def fits(prompt, completion):
        try:
            return encode_prompt_completion(
                tokenizer, prompt, completion, max_length, template_tokenizer
            )
        except ValueError:  # longer than max_length: a cut completion would change the score
            return None

    suite = EvalSuite()
    # Prompts are kept only when every completion scored after them fits ``max_length``, so the
    # label, phrase and R/C/U groups stay aligned prompt by prompt.
    prompts = [prompt_of(ex) for ex in forget]
    completions = ([label] if label else []) + [ph for ph in phrases if ph != label]
    kept = [p for p in prompts if all(fits(p, c) is not None for c in completions)]
    suite.skipped["forget_prompts"] = len(prompts) - len(kept)
    if label:
        suite.groups["label"] = [fits(p, label) for p in kept]
    if phrases:
        suite.groups["phrases"] = [fits(p, ph) for p in kept for ph in phrases]
    if tofu:
        items = [fits(prompt_of(ex), ex.messages[-1].content) for ex in tofu]
        suite.groups["tofu"] = [x for x in items if x is not None]
        suite.skipped["tofu"] = len(items) - len(suite.groups["tofu"])
    if rcu:
        attrs = (("rcu_R", "refusal"), ("rcu_C", "compliance_c"), ("rcu_U", "compliance_u"))
        rows = [
            [fits((Message("user", it.prompt),), getattr(it, a)) for _, a in attrs] for it in rcu
        ]
        rows = [r for r in rows if all(x is not None for x in r)]
        suite.skipped["rcu"] = len(rcu) - len(rows)
        for j, (key, _) in enumerate(attrs):
            suite.groups[key] = [r[j] for r in rows]
    items = [fits(prompt_of(ex), ex.messages[-1].content) for ex in re_sets]
    suite.re_examples = [x for x in items if x is not None]
    suite.skipped["re"] = len(items) - len(suite.re_examples)
    for name, group in suite.groups.items():
        if not group:
            raise ValueError(f"evaluation group {name!r} is empty (every item > max_length?)")
    if math:
        items = [fits(prompt_of(ex), ex.messages[-1].content) for ex in math]
        kept_math = [x for x in items if x is not None]
        suite.skipped["math_loglik"] = len(items) - len(kept_math)
        if kept_math:  # solutions longer than max_length leave accuracy as the only math metric
            suite.groups["math_loglik"] = kept_math
    for ex in math:
        question = prompt_of(ex)[-1].content
        text = math_template.format(question=question)
        suite.math_prompts.append(
            render_prompt(tokenizer, (Message("user", text),), template_tokenizer)
        )
        suite.math_gold.append(gold_answer(ex))
    if math:
        suite.stop_token_ids = end_of_turn_token_ids(tokenizer, template_tokenizer)
    return suite


def evaluate_model(
    model,
    tokenizer,
    suite: EvalSuite,
    *,
    batch_size: int = 16,
    math: bool = True,
    math_samples: int = 5,
    math_batch_size: int = 8,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    pad_token_id: int | None = None,
    groups: Sequence[str] | None = None,
) -> tuple[dict[str, float], dict[str, list[float]], list[np.ndarray]]:
    """Score a model on the suite (only ``groups`` of it when given; Pred always).

    Returns ``(summary, per_example, pred)``: summary holds the mean of every group (``label``,
    ``phrases``, ``tofu``, ``rcu_R``... as average per-token log-probs) and ``math_strict`` /
    ``math_flexible`` when ``math``; per_example holds the per-item values behind each mean;
    pred is the list of Pred vectors of ``suite.re_examples``.
    """
    if pad_token_id is None:
        pad_token_id = tokenizer.pad_token_id
        if pad_token_id is None:
            pad_token_id = tokenizer.eos_token_id
    summary: dict[str, float] = {}
    per_example: dict[str, list[float]] = {}
    for name, examples in suite.groups.items():
        if groups is not None and name not in groups:
            continue
        values = mean_per_token(score_examples(model, examples, pad_token_id, batch_size))
        per_example[name] = values
        summary[name] = float(np.mean(values))
    pred = score_examples(model, suite.re_examples, pad_token_id, batch_size)
    broken = sorted(k for k, v in summary.items() if not np.isfinite(v))
    if broken or not all(np.isfinite(v).all() for v in pred):
        from llm.loop import NonFiniteError

        raise NonFiniteError(f"the model's log-probabilities are non-finite ({broken or 'Pred'})")
    if math and suite.math_prompts:
        samples = generate_samples(
            model,
            tokenizer,
            suite.math_prompts,
            math_samples,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            batch_size=math_batch_size,
            stop_token_ids=suite.stop_token_ids,
        )
        scores = math_scores(samples, suite.math_gold)
        summary["math_strict"] = scores["math_strict"]
        summary["math_flexible"] = scores["math_flexible"]
        per_example["math_strict"] = scores["per_question_strict"]
        per_example["math_flexible"] = scores["per_question_flexible"]
    return summary, per_example, pred
