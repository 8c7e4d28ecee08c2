"""Generation tokens/s with and without the report grammar (constrained decoding), same run.

    python benchmarks/grammar_speed.py --model outputs/demo/bundle --data data/demo/test.jsonl
    python benchmarks/grammar_speed.py --tiny      # a tiny random Qwen2, no bundle needed

With a bundle: ``--n`` test requests (their image and/or sound) are prepared once, then
:func:`purrsight.inference.generate.generate_texts` writes each answer on from its scored
label (as the predictor does), alternately free and constrained to the bundle's grammar
(``--repeats`` rounds each, the better round kept). Printed: tokens/s of each, the ratio,
how many answers parse as valid, and whether the texts are the same (a trained model
writing valid answers anyway should give the same text both ways).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from purrsight.inference.generate import generate_texts
from purrsight.inference.grammar import AnswerGrammar
from purrsight.inference.report_parse import parse_report


def _run(model, tok, features, instructions, k, new, batch, starts, grammar, repeats, labels):
    best, texts = None, None
    for _ in range(repeats):
        texts, stats = generate_texts(
            model, tok, features, instructions, k, new, batch, prefixes=starts, grammar=grammar
        )
        rate = stats.tokens_per_second
        best = rate if best is None else max(best, rate)
    valid = sum(parse_report(t, labels).status == "valid" for t in texts)
    return best, stats.generated_tokens, valid, texts


def bundle_inputs(args):
    from purrsight.inference.predictor import Predictor, answer_start

    predictor = Predictor.from_bundle(args.model)
    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines() if line]
    rows = rows[: args.n]
    root = Path(args.data).parent
    prepared = [
        predictor.prepare(**{m: str(root / r[m]) for m in ("image", "audio") if r.get(m)})
        for r in rows
    ]
    probs = predictor.label_probabilities(prepared)
    starts = [answer_start(predictor.labels[int(p.argmax())]) for p in probs]
    bundle = predictor.bundle
    return (
        bundle.model,
        bundle.tokenizer,
        [p.features for p in prepared],
        [p.instruction for p in prepared],
        bundle.manifest.num_soft_tokens,
        starts,
        predictor.grammar,
        predictor.labels,
        predictor.max_new_tokens,
    )


def tiny_inputs(args):
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from purrsight.models.mm_llm import build_multimodal_llm
    from purrsight.report import READING_FIELDS
    from purrsight.vocabulary import DEFAULT_LABELS
    from qwen_fixture import qwen_tokenizer, tiny_qwen

    tok = qwen_tokenizer()
    torch.manual_seed(0)
    model = build_multimodal_llm(tiny_qwen(len(tok)), tok, in_dim=8, num_tokens=3).eval()
    gen = torch.Generator().manual_seed(0)
    mods = (["image"], ["audio"], ["image", "audio"])
    features = [{m: torch.randn(8, generator=gen) for m in mods[i % 3]} for i in range(args.n)]
    labels = list(DEFAULT_LABELS)
    starts = [f'{{"emotion":"{labels[i % 7]}","' for i in range(args.n)]
    grammar = AnswerGrammar(tuple(labels), READING_FIELDS)
    return model, tok, features, "Mood?", 3, starts, grammar, labels, 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="bundle folder")
    parser.add_argument("--data", help="JSONL of test requests (image/audio paths)")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model instead")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not args.tiny and not (args.model and args.data):
        parser.error("give --model and --data, or --tiny")
    model, tok, features, instructions, k, starts, grammar, labels, new = (
        tiny_inputs(args) if args.tiny else bundle_inputs(args)
    )
    # One untimed warm-up of each (the grammar's token table is built once per tokenizer).
    for g in (None, grammar):
        generate_texts(model, tok, features[:2], instructions if isinstance(instructions, str)
                       else instructions[:2], k, 4, 2, prefixes=starts[:2], grammar=g)  # fmt: skip
    started = time.perf_counter()
    results = {}
    for name, g in (("free", None), ("grammar", grammar), ("free", None), ("grammar", grammar)):
        rate, tokens, valid, texts = _run(
            model, tok, features, instructions, k, new, args.batch_size, starts, g,
            max(1, args.repeats // 2), labels,
        )  # fmt: skip
        old = results.get(name)
        if old is None or rate > old[0]:
            results[name] = (rate, tokens, valid, texts)
    free, constrained = results["free"], results["grammar"]
    for name, (rate, tokens, valid, _) in results.items():
        print(f"{name:8s} {rate:8.1f} tokens/s  {tokens} tokens  valid {valid}/{len(features)}")
    print(f"grammar / free tokens/s: {constrained[0] / free[0]:.3f}")
    same = sum(a == b for a, b in zip(free[3], constrained[3], strict=True))
    print(f"same text both ways: {same}/{len(features)}  ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
