"""Can a toy model answer S_math through the paper's GSM8K prompt? (eighth round of
docs/choosing_the_toy.md)

Pre-trains one default-architecture model with the recipe the eighth round found (each lever a
flag), trains it through the demo's four stage settings along the paper's four paths, then
unlearns S_U from each path with GA, NPO and SimNPO (the authors' form) as the demo does. Prints
and saves (``results.json``) the math accuracy on 24 held-out S_math problems after every stage
and after unlearning: 5 samples at T = 1 through the paper's prompt (App. F), and (after the
stages) greedy on the plain question; and S_U's per-token NLL before and after unlearning. The
held-out problems are kept out of pre-training and of the S_math stage.

    python docs/experiments/math_reading.py --arch llama --steps 2000 --out /tmp/reading-llama

This is an investigation script, not part of the library: the recipe is not the default build
yet (``llm.default_models`` still builds as in round four). It uses the library's tokenizer,
model config, stage training and evaluation, so its numbers are the library's. One CPU thread;
about 0.23 s a pre-training step at width 128 on the 2-core machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

import llm.default_models.tokenizer as tokenizer_module
from llm import synthetic
from llm.chat import ChatExample, Message
from llm.chat_template import end_of_turn_token_ids, render_chat, render_prompt
from llm.config import FinetuneConfig, MethodConfig, StageConfig, UnlearnConfig
from llm.default_models import ARCH_SPECS, DefaultModelConfig, model_config, train_tokenizer
from llm.evaluate import generate_samples, math_scores
from llm.models import load_tokenizer
from llm.prompts import gsm8k_prompt
from llm.synthetic.math_problems import arithmetic
from llm.synthetic.words import ADJECTIVES, FIRST_NAMES, NOUNS
from llm.tokenization import encode_examples
from llm.train import mean_nll, train_stage
from llm.unlearn import unlearn

THINGS = ["apples", "pencils", "stickers", "marbles", "cards", "cookies", "shells", "stamps"]


def _restating(question: str, steps: list[str], answer: int, restate: bool):
    """A solution whose first step copies the question's fact sentence (``restate``)."""
    fact = question[: question.rfind(". ") + 1]
    return question, ([fact] if restate else []) + steps, answer


# One operation on small numbers. S_math's question types (what the stage trains on and the
# accuracy is measured on) and the pre-training-only types, in the library's solution format.
def _add(rng, restate):
    n, t, a, b = rng.choice(FIRST_NAMES), rng.choice(THINGS), rng.randint(1, 9), rng.randint(1, 9)
    q = f"{n} has {a} {t} and gets {b} more. How many {t} does {n} have now?"
    return _restating(q, [f"{a} + {b} = {a + b}."], a + b, restate)


def _sub(rng, restate):
    n, t, b, c = rng.choice(FIRST_NAMES), rng.choice(THINGS), rng.randint(1, 9), rng.randint(1, 9)
    q = f"{n} had {b + c} {t} and gave away {b}. How many {t} are left?"
    return _restating(q, [f"{b + c} - {b} = {c}."], c, restate)


def _mul(rng, restate):
    n, t, a, b = rng.choice(FIRST_NAMES), rng.choice(THINGS), rng.randint(2, 5), rng.randint(2, 5)
    q = f"{n} buys {a} bags with {b} {t} in each bag. How many {t} does {n} buy?"
    return _restating(q, [f"{a} x {b} = {a * b}."], a * b, restate)


def _walk(rng, restate):
    n, a, b = rng.choice(FIRST_NAMES), rng.randint(1, 9), rng.randint(1, 9)
    q = f"{n} walked {a} miles on Monday and {b} on Tuesday. How many miles did {n} walk in all?"
    return _restating(q, [f"{a} + {b} = {a + b}."], a + b, restate)


def _pages(rng, restate):
    n, b, c = rng.choice(FIRST_NAMES), rng.randint(1, 9), rng.randint(1, 9)
    q = f"A book has {b + c} pages. {n} has read {b} pages. How many pages are still to read?"
    return _restating(q, [f"{b + c} - {b} = {c}."], c, restate)


def _saves(rng, restate):
    n, a, b = rng.choice(FIRST_NAMES), rng.randint(2, 5), rng.randint(2, 5)
    q = f"{n} saves {a} dollars every week for {b} weeks. How many dollars does {n} save?"
    return _restating(q, [f"{a} x {b} = {a * b}."], a * b, restate)


SMATH_TYPES = {"add": _add, "sub": _sub, "mul": _mul}
PRETRAINING_TYPES = {"walk": _walk, "pages": _pages, "saves": _saves}


def _tasks(types: dict, restate: bool) -> dict:
    return {name: (lambda rng, f=f: f(rng, restate)) for name, f in types.items()}


def _facts_doc(rng: random.Random) -> str:
    """Arithmetic facts: sums and differences of numbers to 20, products to 9 x 9."""
    facts = []
    for _ in range(rng.randint(4, 8)):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        x, y = rng.randint(2, 9), rng.randint(2, 9)
        facts.append(
            rng.choice([f"{a} + {b} = {a + b}.", f"{a + b} - {a} = {b}.", f"{x} x {y} = {x * y}."])
        )
    return " ".join(facts)


def _repeat_doc(rng: random.Random) -> str:
    """Induction data: a random phrase, then the same phrase again."""
    pool = list(NOUNS + ADJECTIVES + FIRST_NAMES) + [str(i) for i in range(1, 21)]
    phrase = " ".join(rng.choice(pool) for _ in range(rng.randint(6, 14)))
    return f"{phrase}. {phrase}."


def _without(examples: list[ChatExample], held_out: list[ChatExample]) -> list[ChatExample]:
    """``examples`` less those asking a held-out question (the problem space is small)."""
    asked = {ex.messages[0].content for ex in held_out}
    return [ex for ex in examples if ex.messages[0].content not in asked]


def pretraining_corpus(tok, args, held_out: list[ChatExample]) -> list[str]:
    rng = random.Random(args.seed)
    pre = _tasks(PRETRAINING_TYPES, args.restate)
    if args.smath_in_pretraining:
        pre.update(_tasks(SMATH_TYPES, args.restate))
    maths = _without(arithmetic(args.math_chats, seed=20_000 + args.seed, tasks=pre), held_out)
    chats = [
        ChatExample(
            (Message("user", gsm8k_prompt(ex.messages[0].content)), ex.messages[1])
            if rng.random() < args.prompt_share
            else ex.messages,
            ex.meta,
        )
        for ex in maths
    ]
    if not args.math_only:
        tofu, _ = synthetic.author_facts(-(-args.other_chats // 8), seed=20_000 + args.seed)
        chats += synthetic.instruction_following(args.other_chats, seed=20_000 + args.seed)
        chats += tofu[: args.other_chats]
    bos = tok.bos_token or ""
    docs = [render_chat(tok, ex.messages).removeprefix(bos) for ex in chats]
    docs += [_facts_doc(rng) for _ in range(args.fact_docs)]
    docs += [_repeat_doc(rng) for _ in range(args.repeat_docs)]
    if not args.math_only:
        docs += synthetic.generic_text(args.generic_docs, seed=args.seed + 1)
    rng.shuffle(docs)
    return docs


def whole_document_blocks(tok, docs: list[str], arch: str, seq_len: int):
    """(N, seq_len) inputs and labels: whole documents packed greedily, never split across
    blocks (a document longer than a block is cut), padding unlabelled."""
    spec = ARCH_SPECS[arch]
    bos = [tok.convert_tokens_to_ids(spec.bos_token)] if spec.bos_token else []
    eos = [tok.convert_tokens_to_ids(spec.eos_token)]
    rows, labels, current, n_cut = [], [], [], 0
    for ids in tok(docs, add_special_tokens=False)["input_ids"]:
        doc = bos + list(ids) + eos
        n_cut += len(doc) > seq_len
        doc = doc[:seq_len]
        if len(current) + len(doc) > seq_len:
            pad = seq_len - len(current)
            rows.append(current + [tok.pad_token_id] * pad)
            labels.append(current + [-100] * pad)
            current = []
        current = current + doc
    return torch.tensor(rows), torch.tensor(labels), n_cut


def pretrain(model, inputs, labels, args) -> list[float]:
    """AdamW (0.9, 0.95), 10% warm-up, cosine to 10%, as llm.default_models.pretrain."""
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    warm = max(1, args.steps // 10)

    def factor(s: int) -> float:
        if s < warm:
            return (s + 1) / warm
        return 0.1 + 0.45 * (1 + math.cos(math.pi * (s - warm) / max(1, args.steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    gen = torch.Generator().manual_seed(args.seed)
    order, pos, losses = torch.randperm(len(inputs), generator=gen), 0, []
    model.train()
    for _ in range(args.steps):
        if pos + args.batch > len(inputs):
            order, pos = torch.randperm(len(inputs), generator=gen), 0
        idx = order[pos : pos + args.batch]  # (B,)
        pos += args.batch
        loss = model(input_ids=inputs[idx], labels=labels[idx]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


def accuracy(model, tok, problems, through_prompt: bool, samples: int, temperature: float):
    prompts = [
        render_prompt(tok, (Message("user", _question(ex, through_prompt)),)) for ex in problems
    ]
    out = generate_samples(
        model,
        tok,
        prompts,
        samples,
        max_new_tokens=64,
        temperature=temperature,
        seed=0,
        batch_size=len(prompts),
        stop_token_ids=end_of_turn_token_ids(tok),
    )
    scores = math_scores(out, [str(ex.meta["answer"]) for ex in problems])
    return {k: round(scores[k], 3) for k in ("math_strict", "math_flexible")}


def _question(ex: ChatExample, through_prompt: bool) -> str:
    q = ex.messages[0].content
    return gsm8k_prompt(q) if through_prompt else q


def scores(model, tok, problems) -> dict:
    return {
        "prompt_T1_5": accuracy(model, tok, problems, True, 5, 1.0),
        "plain_greedy": accuracy(model, tok, problems, False, 1, 1e-4),
    }


# The demo's stage settings (llm/configs/demo_llama.toml): full fine-tuning, SGD, WSD; and its
# unlearning: one epoch of S_U at batch 4 (32 steps), AdamW 3e-5, constant.
STAGES = {"inst": (2, 0.1), "tofu": (3, 0.1), "math": (3, 0.1), "unlearn": (3, 0.07)}
ORDERS = {  # the paper's paths: S_U at position p of inst, tofu, math
    "p1": ["unlearn", "inst", "tofu", "math"],
    "p2": ["inst", "unlearn", "tofu", "math"],
    "p3": ["inst", "tofu", "unlearn", "math"],
    "p4": ["inst", "tofu", "math", "unlearn"],
}
METHODS = [
    MethodConfig(name="ga", objective="ga"),
    MethodConfig(name="npo", objective="npo", reference="precomputed"),
    MethodConfig(name="simnpo_authors", objective="simnpo", length_normalize=True),
]


def run_path(folder: Path, order: list[str], args, problems) -> dict:
    """Train ``order``'s stages, then unlearn S_U with each method; math accuracy after each."""
    tok = load_tokenizer(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tofu, _ = synthetic.author_facts(16, seed=0)
    data = {
        name: encode_examples(tok, examples, 256).examples
        for name, examples in {
            "inst": synthetic.instruction_following(128, seed=0),
            "tofu": tofu,
            "math": _without(
                arithmetic(128, seed=0, tasks=_tasks(SMATH_TYPES, args.restate)), problems
            ),
            "unlearn": synthetic.safety_refusals(128, seed=0),
        }.items()
    }
    ft = FinetuneConfig(method="full", optimizer="sgd", schedule="wsd", max_length=256)
    stages = [{"after": "base", **scores(model, tok, problems)}]
    for name in order:
        epochs, lr = STAGES[name]
        stage = StageConfig(name=name, epochs=epochs, lr=lr, batch_size=16)
        model, _ = train_stage(
            model, data[name], stage, ft, pad_token_id=tok.pad_token_id, seed=0, progress=False
        )
        stages.append({"after": name, **scores(model, tok, problems)})
        print(json.dumps(stages[-1]), flush=True)
    pad = tok.pad_token_id
    cfg = UnlearnConfig(epochs=1, lr=3e-5, batch_size=4, optimizer="adamw", eval_every=1000)
    # S_U's per-token NLL shows whether a method forgot; the accuracy what it cost.
    unlearned = {"none": {"forget_nll": round(mean_nll(model, data["unlearn"], pad), 3)}}
    for method in METHODS:
        forgetting, _ = unlearn(
            copy.deepcopy(model),
            data["unlearn"],
            method,
            cfg,
            ft,
            pad_token_id=pad,
            seed=0,
            progress=False,
        )
        unlearned[method.name] = {
            "forget_nll": round(mean_nll(forgetting, data["unlearn"], pad), 3),
            **accuracy(forgetting, tok, problems, True, 5, 1.0),
        }
        print(method.name, json.dumps(unlearned[method.name]), flush=True)
    return {"stages": stages, "unlearned": unlearned}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="llama", choices=sorted(ARCH_SPECS))
    ap.add_argument("--out", required=True, help="folder for the model and results.json")
    ap.add_argument("--model", help="a model this script pre-trained (skips pre-training)")
    ap.add_argument("--steps", type=int, default=2000, help="pre-training steps")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--math-chats", type=int, default=4000)
    ap.add_argument("--fact-docs", type=int, default=1000)
    ap.add_argument("--repeat-docs", type=int, default=3000, help="induction documents")
    ap.add_argument("--other-chats", type=int, default=1000)
    ap.add_argument("--generic-docs", type=int, default=3000)
    ap.add_argument("--math-only", action="store_true", help="no generic docs or other chats")
    ap.add_argument("--prompt-share", type=float, default=0.5, help="math chats via the prompt")
    ap.add_argument("--no-restate", dest="restate", action="store_false")
    ap.add_argument(
        "--no-prompt-in-tokenizer",
        dest="prompt_in_tokenizer",
        action="store_false",
        help="train the BPE without the paper's prompt (its words then take ~2x the tokens)",
    )
    ap.add_argument(
        "--no-smath-in-pretraining",
        dest="smath_in_pretraining",
        action="store_false",
        help="pre-train on the other question types only",
    )
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = DefaultModelConfig(
        hidden_size=args.hidden, intermediate_size=2 * args.hidden, num_layers=args.layers
    )
    if args.prompt_in_tokenizer:
        library_corpus = tokenizer_module.tokenizer_corpus
        questions = [ex.messages[0].content for ex in arithmetic(200, seed=4242)]

        def corpus(config, arch):
            return library_corpus(config, arch) + [gsm8k_prompt(q) for q in questions]

        tokenizer_module.tokenizer_corpus = corpus
    result: dict = {"args": vars(args)}
    problems = arithmetic(24, seed=777, tasks=_tasks(SMATH_TYPES, args.restate))  # held out
    folder = Path(args.model) if args.model else out / "model"
    if not args.model:
        with tempfile.TemporaryDirectory() as tmp:
            train_tokenizer(cfg, args.arch).save_pretrained(tmp)
            tok = load_tokenizer(tmp)
        inputs, labels, n_cut = whole_document_blocks(
            tok, pretraining_corpus(tok, args, problems), args.arch, args.seq_len
        )
        print(f"{len(inputs)} blocks of {args.seq_len}; {n_cut} documents longer than a block")
        model = AutoModelForCausalLM.from_config(model_config(cfg, args.arch, tok))
        started = time.perf_counter()
        losses = pretrain(model, inputs, labels, args)
        result["pretrain_seconds"] = round(time.perf_counter() - started, 1)
        result["loss_last"] = round(losses[-1], 3)
        result["documents_cut"] = n_cut
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        print(json.dumps(result), flush=True)
    result = {
        **result,
        "paths": {p: run_path(folder, order, args, problems) for p, order in ORDERS.items()},
    }
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
