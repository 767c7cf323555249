"""Fit the extract reader's span ranker (src/ragtune/data/span-ranker.json) from SQuAD v1.1 dev.

Questions: a seeded sample of SQuAD v1.1 dev questions from every article except
`synth.qg.HELD_OUT_ARTICLES` (the demo's articles and the benchmarks' held-out ones never enter the
fit). Each question is read as the pipeline reads it (`rag.read_spans` with two sentences read, the
bundled generator and embedder, each sentence's spans also scored under `span_ranker.NULL_QUESTION`
for the PMI features), with its gold paragraph as the only source; each candidate span is
labelled with its F1 against the gold answers, and `span_ranker.fit_ranker` fits the conditional
logit. Five-fold cross-validation (by question) prints the mean F1 of the chosen span (two sentences
and one read) against the model's likelihood alone (the reader before the ranker) and the best
candidate (the ceiling). Takes ~8 minutes for 1500 questions on 2 cores.

    python scripts/fit_span_ranker.py [--n 1500] [--seed 0] [--out src/ragtune/data/span-ranker.json]
"""

from __future__ import annotations

import argparse
import pickle
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import SQUAD_DEV, squad_dev  # noqa: E402


def fit_reads(n: int, seed: int, held_out: bool = False):
    """Yield (a batch of the n training questions, their `read_spans` reads), the
    questions a seeded sample outside `synth.qg.HELD_OUT_ARTICLES` (`held_out`: of those articles,
    for a test never fitted on), each read with its gold paragraph as the only source."""
    from ragtune import RagConfig, make_generator
    from ragtune.context import Source
    from ragtune.rag import read_spans
    from ragtune.registry import make_embedder
    from ragtune.synth.qg import HELD_OUT_ARTICLES

    docs, examples = squad_dev()
    text = {d.id: d.text for d in docs}
    pool = [e for e in examples if (e.doc_ids[0].rsplit("/", 1)[0] in HELD_OUT_ARTICLES) == held_out]
    random.Random(seed).shuffle(pool)
    pool = pool[:n]
    # Two sentences read per question, so the ranker also learns to weigh sentence relevance
    # (RagConfig.reader_sentences may be 1 or more; with 1 those features are the same for every span).
    gen, embedder, config = make_generator(), make_embedder(), RagConfig(reader_sentences=2)
    t0 = time.perf_counter()
    for b in range(0, len(pool), 32):
        batch = pool[b : b + 32]
        contexts = [[Source(1, e.doc_ids[0], e.doc_ids[0], "", text[e.doc_ids[0]], 1.0)] for e in batch]
        yield batch, read_spans(gen, embedder, [e.question for e in batch], contexts, config)
        print(f"  {b + len(batch)}/{len(pool)} questions read, {time.perf_counter() - t0:.0f} s", flush=True)


def span_f1(read, answers: list[str]) -> list[float]:
    """Each span read's F1 against the gold answers (its label)."""
    from ragtune.evaluation.metrics import f1_score

    return [max(f1_score(s.text, [a]) for a in answers) for s in read.spans]


def collect(n: int, seed: int, cache: Path | None, held_out: bool = False):
    """([(question, [SpanItem], [F1 of each span])] for n training questions (`held_out`: test
    questions, see `fit_reads`), their articles)."""
    if cache and cache.is_file():
        return pickle.loads(cache.read_bytes())
    out, articles = [], set()
    for batch, reads in fit_reads(n, seed, held_out):
        articles |= {e.doc_ids[0].rsplit("/", 1)[0] for e in batch}
        for e, read in zip(batch, reads):
            if read is not None:
                out.append((e.question, read.items, span_f1(read, e.answers)))
    articles = sorted(articles)
    if cache:
        cache.write_bytes(pickle.dumps((out, articles)))
    return out, articles


def chosen_f1(ranker, rows) -> tuple[float, float, float, float]:
    """Mean F1 of the span the ranker picks, of the one it picks reading only the most relevant
    sentence (`reader_sentences=1`), of the model's most likely span in that sentence (the reader
    before the ranker), and of the best span read."""
    from ragtune.span_ranker import choose

    picked, first, likeliest, best = [], [], [], []
    for question, items, f1 in rows:
        picked.append(f1[choose(question, items, ranker)])
        top = [j for j, it in enumerate(items) if it.rank == 0]
        first.append(f1[top[choose(question, [items[j] for j in top], ranker)]])
        likeliest.append(f1[top[choose(question, [items[j] for j in top], None)]])
        best.append(max(f1))
    return float(np.mean(picked)), float(np.mean(first)), float(np.mean(likeliest)), float(np.mean(best))


def main() -> int:
    from ragtune.span_ranker import fit_ranker, span_features

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1500, help="training questions")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--l2", type=float, default=1.0)
    ap.add_argument("--cache", type=Path, help="keep the read questions here (a refit skips the reading)")
    ap.add_argument("--out", type=Path, default=ROOT / "src" / "ragtune" / "data" / "span-ranker.json")
    args = ap.parse_args()

    rows, articles = collect(args.n, args.seed, args.cache)
    groups = [(span_features(q, items), np.array(f1)) for q, items, f1 in rows]
    folds = [[], [], [], []]
    for k in range(5):
        ranker = fit_ranker([g for i, g in enumerate(groups) if i % 5 != k], args.l2)
        for acc, value in zip(folds, chosen_f1(ranker, [r for i, r in enumerate(rows) if i % 5 == k])):
            acc.append(value)
    cv, cv_one, likeliest, ceiling = (float(np.mean(f)) for f in folds)
    print(
        f"{len(rows)} questions from {len(articles)} articles; 5-fold CV, mean F1 of the chosen span: ranker "
        f"{100 * cv:.1f} (2 sentences read), {100 * cv_one:.1f} (1 sentence); likelihood alone, 1 sentence "
        f"(the reader before the ranker) {100 * likeliest:.1f}; best candidate read {100 * ceiling:.1f}"
    )
    fitted_on = {
        "data": f"SQuAD v1.1 dev ({SQUAD_DEV.name}, CC BY-SA 4.0): {len(rows)} questions, seed {args.seed}, "
        f"{len(articles)} articles outside synth.qg.HELD_OUT_ARTICLES",
        "script": "scripts/fit_span_ranker.py",
        "l2": args.l2,
        "cv_f1_ranker": round(cv, 4),
        "cv_f1_ranker_one_sentence": round(cv_one, 4),
        "cv_f1_likelihood_alone_one_sentence": round(likeliest, 4),
        "cv_f1_best_candidate": round(ceiling, 4),
    }
    ranker = fit_ranker(groups, args.l2, fitted_on)
    ranker.save(args.out)
    print(f"wrote {args.out}: " + ", ".join(f"{n} {w:+.2f}" for n, w in zip(ranker.features, ranker.weights)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
