"""Fit the synthetic questions' target scorer (src/ragtune/data/target-scorer.json) from SQuAD v1.1 dev.

Which answer in a sentence would a person write a question for? Every candidate of every sentence
(`synth.candidates.candidate_pool`: dates, numbers, entities, noun phrases) of the SQuAD dev
paragraphs outside `synth.qg.HELD_OUT_ARTICLES` is labelled 1 if it is a gold answer of one of the
paragraph's questions (SQuAD's normalisation: case, punctuation, articles) and 0 if not; the
sentences that hold no gold answer are left out (nobody asked about them, which says nothing of
their candidates). A logistic regression on the features (`target_features`) and their pairwise
products, standardised, with an L2 penalty (C=0.1), is folded into `TargetScorer`'s quadratic form.

Then, on the sentences of the held-out EVAL_ARTICLES' paragraphs (never fitted on) that hold a gold
answer, it prints how often the first target is a gold answer, and the share of the top-k targets
that are (all sentences), for the scorer and for the rule it replaced (dates, numbers, entities,
then noun phrases ending on a key phrase's word, in that order). ~2 minutes on 2 cores.

    python scripts/fit_target_scorer.py [--out src/ragtune/data/target-scorer.json] [--c 0.1]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import SQUAD_DEV  # noqa: E402


def sentence_rows(squad: dict, keep):
    """For each sentence of the kept articles' paragraphs: (sentence, its index, the passage's
    context, its candidate pool, the pool's labels, whether it holds a gold answer, the old rule's targets)."""
    from ragtune.chunking import split_sentences
    from ragtune.evaluation.metrics import normalize_answer as normalise
    from ragtune.synth.candidates import (
        PassageContext,
        candidate_pool,
        noun_chunks,
        passage_keywords,
        sentence_candidates,  # fmt: skip
    )

    for article in squad["data"]:
        if not keep(article["title"].replace(" ", "_")):
            continue
        for para in article["paragraphs"]:
            text = para["context"]
            keywords = passage_keywords(text)
            ctx = PassageContext.of(text, keywords)
            gold = {normalise(a["text"]) for q in para["qas"] for a in q["answers"]} - {""}
            key_words = {w.lower() for k in keywords for w in k.split()}
            for i, sentence in enumerate(split_sentences(text)):
                pool = candidate_pool(sentence)
                if not pool:
                    continue
                has_gold = any(g in normalise(sentence) for g in gold)
                phrases = [p for p in noun_chunks(sentence) if p.split()[-1].lower() in key_words]
                rule = [c.text for c in sentence_candidates(sentence, 6, phrases)]
                labels = [float(normalise(t) in gold) for t in pool]
                yield sentence, i, ctx, pool, labels, has_gold, rule


def fold(lr, mu, sd, m2, s2, n):
    """sklearn's model on standardised [z, z_i z_j (i <= j)], z = (x - mu) / sd, as w.x + x'Qx + b."""
    from ragtune.synth.candidates import TargetScorer

    coef = lr.coef_[0] / s2
    c = lr.intercept_[0] - float(lr.coef_[0] @ (m2 / s2))
    alpha, beta = coef[:n], coef[n:]
    b = np.zeros((n, n))
    iu = np.triu_indices(n)
    b[iu] = beta
    b = (b + b.T) / 2  # off-diagonal products split between (i, j) and (j, i); the diagonal stays
    q = b / np.outer(sd, sd)
    linear = alpha / sd - 2 * q @ mu
    bias = c - float(alpha @ (mu / sd)) + float(mu @ q @ mu)
    return TargetScorer(linear, q, bias)


def quadratic_terms(z: np.ndarray) -> np.ndarray:
    iu = np.triu_indices(z.shape[1])
    return np.hstack([z, (z[:, :, None] * z[:, None, :])[:, iu[0], iu[1]]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "src" / "ragtune" / "data" / "target-scorer.json"))
    ap.add_argument("--c", type=float, default=0.1)
    args = ap.parse_args()
    from sklearn.linear_model import LogisticRegression

    from ragtune.synth.candidates import MIN_TARGET_PROBABILITY, target_candidates, target_features
    from ragtune.synth.qg import EVAL_ARTICLES, HELD_OUT_ARTICLES

    squad = json.loads(SQUAD_DEV.read_text(encoding="utf-8"))
    xs, ys = [], []
    for sentence, i, ctx, pool, labels, has_gold, _ in sentence_rows(squad, lambda t: t not in HELD_OUT_ARTICLES):
        if has_gold:
            xs += [target_features(t, k, sentence, i, ctx) for t, k in pool.items()]
            ys += labels
    x, y = np.array(xs), np.array(ys)
    mu, sd = x.mean(0), x.std(0)
    sd[sd == 0] = 1.0
    p = quadratic_terms((x - mu) / sd)
    m2, s2 = p.mean(0), p.std(0)
    s2[s2 == 0] = 1.0
    lr = LogisticRegression(C=args.c, max_iter=5000).fit((p - m2) / s2, y)
    scorer = fold(lr, mu, sd, m2, s2, x.shape[1])
    check = lr.decision_function((p[:500] - m2) / s2)
    assert np.allclose(scorer.scores(x[:500]), check, atol=1e-6), "folding the standardisation changed the scores"
    print(f"fitted on the {len(y)} candidates ({int(y.sum())} gold answers) of the sentences holding a gold answer "
          f"(C={args.c})")

    # Held out: the first target, and the top k, against the rule.
    first = {"scorer": 0, "rule": 0}
    top = {(name, k): [0, 0] for name in ("scorer", "rule") for k in (1, 2, 4)}
    asked, below = 0, []  # below: (under the floor, a gold answer) for every candidate
    floor = math.log(MIN_TARGET_PROBABILITY / (1 - MIN_TARGET_PROBABILITY))
    for sentence, i, ctx, pool, labels, has_gold, rule in sentence_rows(squad, lambda t: t in EVAL_ARTICLES):
        gold = {t for t, lab in zip(pool, labels) if lab}
        scores = scorer.scores(np.array([target_features(t, k, sentence, i, ctx) for t, k in pool.items()]))
        below += [(sc < floor, lab) for sc, lab in zip(scores, labels)]
        ours = [c.text for c in target_candidates(sentence, 6, sentence_index=i, ctx=ctx, scorer=scorer)]
        asked += has_gold
        for name, targets in (("scorer", ours), ("rule", rule)):
            first[name] += has_gold and bool(targets) and targets[0] in gold
            for k in (1, 2, 4):
                top[name, k][0] += sum(t in gold for t in targets[:k])
                top[name, k][1] += len(targets[:k])
    print(f"held out ({', '.join(EVAL_ARTICLES)}): {asked} sentences hold a gold answer")
    for name in ("scorer", "rule"):
        print(f"  {name:6s} first target is a gold answer: {100 * first[name] / asked:.1f}%;  "
              + ";  ".join(f"top {k}: {100 * h / max(n, 1):.1f}% of {n}" for k in (1, 2, 4) for h, n in [top[name, k]]))
    b = np.array(below, dtype=bool)
    under = b[:, 0]
    print(f"  under the floor (probability < {MIN_TARGET_PROBABILITY}): {100 * under.mean():.1f}% of the {len(b)} "
          f"candidates, a gold answer for {100 * b[under, 1].mean():.1f}% "
          f"(the rest: {100 * b[~under, 1].mean():.1f}%), "
          f"{100 * b[under, 1].sum() / b[:, 1].sum():.1f}% of the gold answers")
    Path(args.out).write_text(json.dumps(_rounded(scorer.to_json())) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


def _rounded(d):
    if isinstance(d, float):
        return float(f"{d:.6g}")
    if isinstance(d, list):
        return [_rounded(v) for v in d]
    if isinstance(d, dict):
        return {k: _rounded(v) for k, v in d.items()}
    return d


if __name__ == "__main__":
    main()
