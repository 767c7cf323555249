"""Office converters compared on a sample made here (python-docx / python-pptx / openpyxl):
markitdown (ragtune's choice) vs docling (baseline, when a Python with docling is given).

Speed: files per second, median of 3 passes. Quality: the share of the sample's headings, table
cells (in the right row), slide titles and sheet names that appear in the converted Markdown.

    python benchmarks/office_loaders.py [--docling-python /path/to/venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

CHECKS = {  # file -> strings a faithful conversion keeps
    "policy.docx": [
        "# Travel policy",
        "## Allowances",
        "| Paris | 90 EUR |",
        "| Oslo | 120 EUR |",
        "Receipts are kept",
    ],
    "review.pptx": ["Quarterly review", "Next steps", "Revenue grew 12 percent.", "Open the Lisbon office."],
    "offices.xlsx": ["Offices", "Budget", "| Lisbon | Ana Duarte | 42 |"],
}

DOCLING = """
import json, sys, time
from docling.document_converter import DocumentConverter
conv = DocumentConverter()
out = {}
for p in sys.argv[1:]:
    t0 = time.perf_counter()
    md = conv.convert(p).document.export_to_markdown()
    out[p] = [md, time.perf_counter() - t0]
print(json.dumps(out))
"""


def make_sample(folder: Path, copies: int) -> list[Path]:
    from test_office import make_docx, make_pptx, make_xlsx

    files = []
    for i in range(copies):
        for name, make in (("policy.docx", make_docx), ("review.pptx", make_pptx), ("offices.xlsx", make_xlsx)):
            p = folder / f"{i}-{name}"
            make(p)
            files.append(p)
    return files


def quality(texts: dict[Path, str]) -> float:
    hits = total = 0
    for p, text in texts.items():
        flat = " ".join(text.split())
        for want in CHECKS[p.name.split("-", 1)[1]]:
            total += 1
            hits += " ".join(want.split()) in flat
    return hits / max(total, 1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=5)
    ap.add_argument("--docling-python", help="a Python whose environment has docling installed")
    args = ap.parse_args()
    from markitdown import MarkItDown

    folder = Path(tempfile.mkdtemp(prefix="ragtune-office-"))
    files = make_sample(folder, args.copies)
    rows = {}
    md = MarkItDown(enable_plugins=False)
    md.convert_local(str(files[0]))  # warm-up (imports)
    secs, texts = [], {}
    for _ in range(3):
        t0 = time.perf_counter()
        texts = {p: md.convert_local(str(p)).text_content for p in files}
        secs.append(time.perf_counter() - t0)
    rows["markitdown"] = {"files_per_s": len(files) / statistics.median(secs), "quality": quality(texts)}
    if args.docling_python:
        t0 = time.perf_counter()
        r = subprocess.run(
            [args.docling_python, "-c", DOCLING, *map(str, files)], capture_output=True, text=True, timeout=1200
        )
        wall = time.perf_counter() - t0
        if r.returncode == 0:
            out = json.loads(r.stdout.strip().splitlines()[-1])
            conv = [v[1] for v in out.values()]
            got = quality({Path(k): v[0] for k, v in out.items()})
            rows["docling"] = {"files_per_s": len(files) / sum(conv), "quality": got,
                               "wall_with_start_s": wall}  # fmt: skip
        else:
            rows["docling"] = {
                "error": r.stderr.strip().splitlines()[-1][:300] if r.stderr.strip() else f"exit {r.returncode}"
            }
    print(f"{len(files)} files ({args.copies} each of .docx .pptx .xlsx)")
    print("| converter | files/s (median of 3) | structure kept |")
    print("|---|---:|---:|")
    for name, r in rows.items():
        if "error" in r:
            print(f"| {name} | failed: {r['error']} | |")
        else:
            start = f" (whole run with start-up {r['wall_with_start_s']:.1f} s)" if "wall_with_start_s" in r else ""
            print(f"| {name} | {r['files_per_s']:.1f}{start} | {100 * r['quality']:.0f}% |")
    if "docling" in rows and "files_per_s" in rows["docling"]:
        print(f"ratio markitdown / docling files per second (baseline docling, same run): "
              f"{rows['markitdown']['files_per_s'] / rows['docling']['files_per_s']:.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
