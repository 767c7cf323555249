"""Ingest throughput: `ragtune` ingest of a folder vs plain sentence-transformers `encode`.

Both embed the same texts with all-MiniLM-L6-v2; ragtune also loads files, chunks, writes LanceDB
and builds the BM25 index. ragtune embeds on `--backend` (default `onnx`, ONNX Runtime float32, what
`make_embedder()` gives). Claim: ratio = baseline seconds / ragtune seconds >= 1.5 on ONNX (>= 0.9
with `--backend sentence-transformers`: the store and chunking add little). Medians over
--repeats alternating runs.

    python benchmarks/ingest_throughput.py [--docs 400] [--repeats 3] [--backend onnx]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, squad_dev  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backend", default="onnx", choices=("onnx", "onnx-int8", "sentence-transformers"))
    args = ap.parse_args()
    target = 0.9 if args.backend == "sentence-transformers" else 1.5

    from ragtune import Index
    from ragtune.chunking import chunk_documents
    from ragtune.config import ChunkConfig
    from ragtune.documents import load_paths
    from ragtune.embedders import sentence_embedder
    from ragtune.ingest import embed_text

    docs = squad_dev()[0][: args.docs]
    work = Path(tempfile.mkdtemp(prefix="ragtune-ingest-bench-"))
    folder = work / "corpus"
    folder.mkdir()
    for i, d in enumerate(docs):
        (folder / f"{i:05d}.txt").write_text(d.text, encoding="utf-8")

    embedder = sentence_embedder("all-minilm-l6-v2", backend=args.backend)
    baseline = sentence_embedder("all-minilm-l6-v2", backend="sentence-transformers").model
    chunking = ChunkConfig()
    # The baseline embeds exactly what ragtune embeds: the same chunks of the same files.
    texts = [
        embed_text(c.title, c.text)
        for c in chunk_documents(load_paths([folder]).documents, chunking, embedder.count_tokens)
    ]
    baseline.encode(texts[:64], batch_size=32)  # warm up both paths equally (an ONNX export happens here)
    embedder.embed(texts[:64])

    base, ours = [], []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        baseline.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
        base.append(time.perf_counter() - t0)
        index = work / f"index{r}"
        t0 = time.perf_counter()
        report = Index.create(index, embedder=embedder, chunking=chunking).ingest([folder])
        ours.append(time.perf_counter() - t0)
        assert report.counts()["added"] == len(docs)
        print(
            f"run {r}: baseline encode {base[-1]:.1f}s, ragtune ingest {ours[-1]:.1f}s"
            f" ({report.chunks_written} chunks, embed part {report.embed_seconds:.1f}s)",
            flush=True,
        )
    shutil.rmtree(work, ignore_errors=True)
    b, o = median(base), median(ours)
    ratio = b / o
    print(
        f"{len(texts)} chunks: baseline sentence-transformers encode median {b:.2f}s ({len(texts) / b:.1f} chunks/s); "
        f"ragtune ingest ({args.backend}) median {o:.2f}s ({len(texts) / o:.1f} chunks/s)"
    )
    print(f"ratio baseline/ragtune = {ratio:.3f}  (target >= {target})")
    return 0 if ratio >= target else 1


if __name__ == "__main__":
    sys.exit(main())
