"""Memory of loading and chunking one large text file, as a multiple of the file's size.

Writes a text file (default 30 MB of prose in paragraphs) to a temp folder, then runs
`load_paths` and `chunk_document` on it and prints the peak resident memory they added
(ru_maxrss after minus before), divided by the file size. Claim: ratio < 8 (the loader reads
the file once and does not keep several copies; the chunker holds the text, its sentences and
the chunks). Baseline: the file's size on disk.

    python benchmarks/large_file_memory.py [--mb 30] [--shape prose|one-paragraph|latin1] [--tracemalloc]
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

WORDS = (
    "the of and to in is was for on that with as by at from his her it an were are which this be or has had "
    "river capital museum bridge century council harbour railway garden library market cathedral university "
    "population founded built opened northern southern eastern western merchant festival province treaty"
).split()


def write_corpus(path: Path, n_bytes: int, shape: str, seed: int = 0) -> int:
    """Sentences of 8-20 words, paragraphs of 3-8 sentences, written in pieces (no big buffer)."""
    rng = random.Random(seed)
    encoding = "latin-1" if shape == "latin1" else "utf-8"
    para_sep = "\n" if shape == "one-paragraph" else "\n\n"
    written = 0
    with path.open("w", encoding=encoding) as fh:
        while written < n_bytes:
            sents = []
            for _ in range(rng.randint(3, 8)):
                words = rng.choices(WORDS, k=rng.randint(8, 20))
                if shape == "latin1":
                    words[rng.randrange(len(words))] = "café"
                sents.append(" ".join(words).capitalize() + ".")
            para = " ".join(sents) + para_sep
            fh.write(para)
            written += len(para.encode(encoding))
    return path.stat().st_size


def peak_rss_bytes() -> int:
    # Linux reports ru_maxrss in KiB, macOS in bytes.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=30.0)
    ap.add_argument("--shape", choices=("prose", "one-paragraph", "latin1"), default="prose")
    ap.add_argument("--tracemalloc", action="store_true", help="also report Python's own peak allocation (slower)")
    ap.add_argument("--max-ratio", type=float, default=8.0)
    args = ap.parse_args()

    from ragtune.chunking import chunk_document, whitespace_tokens
    from ragtune.config import ChunkConfig
    from ragtune.documents import load_paths

    with tempfile.TemporaryDirectory(prefix="ragtune-large-file-") as tmp:
        path = Path(tmp) / "large.txt"
        size = write_corpus(path, int(args.mb * 1e6), args.shape)
        if args.tracemalloc:
            tracemalloc.start()
        before = peak_rss_bytes()
        t0 = time.perf_counter()
        loaded = load_paths([path])
        t_load = time.perf_counter() - t0
        if loaded.skipped:
            print(f"skipped: {loaded.skipped}")
            return 1
        chunks = chunk_document(loaded.documents[0], ChunkConfig(), whitespace_tokens)
        seconds = time.perf_counter() - t0
        added = peak_rss_bytes() - before
        traced = tracemalloc.get_traced_memory()[1] if args.tracemalloc else None
        ratio = added / size
        print(
            f"file {size / 1e6:.1f} MB ({args.shape}): load {t_load:.1f}s, load+chunk {seconds:.1f}s,"
            f" {len(chunks)} chunks"
        )
        print(f"peak RSS added by load_paths + chunk_document: {added / 1e6:.1f} MB = {ratio:.2f}x the file size")
        if traced is not None:
            print(f"tracemalloc peak: {traced / 1e6:.1f} MB = {traced / size:.2f}x the file size")
        print(f"claim: ratio < {args.max_ratio:g} -> {'PASS' if ratio < args.max_ratio else 'FAIL'}")
        return 0 if ratio < args.max_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
