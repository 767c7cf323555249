"""Fit ragtune's default answerability gate (`src/ragtune/data/default-gate.json`): the gate an index
uses with the bundled generator and embedder until `ragtune tune` calibrates one on its own documents.

Data: SQuAD v1.1 dev from ../shared/datasets, the 36 articles outside `synth.qg.HELD_OUT_ARTICLES`
(the demo's and the benchmarks' held-out articles are never fitted on; `benchmarks/abstention.py`
measures the gate on them and on PubMedQA). Three quarters of their paragraphs are indexed (the same
hash split as the benchmark); answerable questions are those of indexed paragraphs, unanswerable ones
those of the other paragraphs whose answer is nowhere in the indexed text. Each is answered by the
bundled model through `rag` without a gate, and the gate is fitted on the evidence as `ragtune tune`
fits one (`gate.fit_answers`, target false abstention 10 %).

    python scripts/fit_default_gate.py [--n 300] [--out src/ragtune/data/default-gate.json]

About 4 minutes on an idle 2-core CPU (index ~70 s, 600 answers; bfloat16 scores move with batch shape,
so a rerun's figures may differ in the third decimal).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SQUAD = ROOT.parent / "shared" / "datasets" / "squad_v1.1_dev" / "dev-v1.1.json"
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import exclusion_split  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300, help="answerable and unanswerable questions each")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--squad", default=str(SQUAD))
    ap.add_argument("--out", default=str(ROOT / "src" / "ragtune" / "data" / "default-gate.json"))
    args = ap.parse_args()

    from ragtune import ChunkConfig, Index, make_generator
    from ragtune.config import DEFAULT_EMBEDDER, DEFAULT_GENERATOR
    from ragtune.documents import load_squad
    from ragtune.gate import calibration_answers, fit_answers
    from ragtune.synth.qg import HELD_OUT_ARTICLES

    docs, examples = load_squad(Path(args.squad))
    docs = [d for d in docs if d.id.rsplit("/", 1)[0] not in HELD_OUT_ARTICLES]
    ids = {d.id for d in docs}
    examples = [e for e in examples if e.doc_ids[0] in ids]
    indexed, answerable, unanswerable = exclusion_split(docs, examples)  # as benchmarks/abstention.py splits
    rng = random.Random(args.seed)
    answerable, unanswerable = rng.sample(answerable, args.n), rng.sample(unanswerable, args.n)
    articles = sorted({d.id.rsplit("/", 1)[0] for d in docs})
    print(f"{len(articles)} articles, {len(indexed)} of {len(docs)} paragraphs indexed; "
          f"{len(answerable)} answerable and {len(unanswerable)} unanswerable questions", flush=True)  # fmt: skip

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ragtune-default-gate-") as tmp:
        index = Index.create(Path(tmp) / "ix", embedder=DEFAULT_EMBEDDER, chunking=ChunkConfig())
        index.ingest(indexed, sync=True)
        print(f"indexed in {time.perf_counter() - t0:.0f} s", flush=True)
        generator = make_generator(DEFAULT_GENERATOR)
        answered, refused = calibration_answers(
            index, generator, [e.question for e in answerable], [e.question for e in unanswerable]
        )
    gate = fit_answers(answered, refused)
    cal = gate.calibration
    cal.update({
        "default": True,
        "dtype": getattr(generator, "precision", None),
        "fitted_on": f"SQuAD v1.1 dev, {len(articles)} articles outside the held-out ones: {args.n} answerable and "
                     f"{args.n} unanswerable questions (scripts/fit_default_gate.py, seed {args.seed})",
    })  # fmt: skip
    out = {"generator": DEFAULT_GENERATOR, "embedder": DEFAULT_EMBEDDER, "gate": gate.to_dict()}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"fitted in {time.perf_counter() - t0:.0f} s: threshold {gate.threshold:.3f}; on its own questions "
          f"abstains {100 * cal['abstention']:.0f}% of unanswerable, {100 * cal['false_abstention']:.0f}% of "
          f"answerable; written to {args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
