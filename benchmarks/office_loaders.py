"""Office converters compared on a sample made here (python-docx / python-pptx / openpyxl / csv):
docling (the baseline, when a Python with docling is given), markitdown as a user calls it
(`MarkItDown().convert_local`), and ragtune's loaders (markitdown's per-format converters plus
ragtune's tidying: slide titles as section headings, Word header rows).

Speed: files per second, median of 3 passes after one warm-up file, converter start-up not counted
(shown apart). Structure: for each aspect the share of the sample's items that come out as Markdown
structure: headings as `#` lines, table cells in the right Markdown table row, list items as `*`/`-`
lines, slide titles and sheet names as heading lines, speaker notes present. Docling runs without
network (`unshare -n`, when run as root) to show that its docx/pptx/xlsx/csv backends need no models.

    python benchmarks/office_loaders.py [--copies 5] [--docling-python /path/to/venv/bin/python]
                                        [--install 'markitdown[docx,pptx,xlsx,xls]' --install docling]

`--install SPEC` times `pip install --no-cache-dir SPEC` into a fresh virtual environment and
reports its size (slow; the environment is deleted afterwards).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

WORKER = r"""
import json, sys, time
from pathlib import Path
name, files = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
if name == "docling":
    from docling.document_converter import DocumentConverter
    conv = DocumentConverter()
    convert = lambda p: conv.convert(p).document.export_to_markdown()
elif name == "markitdown":
    from markitdown import MarkItDown
    md = MarkItDown(enable_plugins=False)
    convert = lambda p: md.convert_local(p).text_content
else:
    from ragtune.documents import load_file
    convert = lambda p: load_file(Path(p), Path(p).name)[0].text
convert(files[0])  # warm-up: imports, first-use set-up
start = time.perf_counter() - t0
passes, texts = [], {}
for _ in range(3):
    t = time.perf_counter()
    texts = {p: convert(p) for p in files}
    passes.append(time.perf_counter() - t)
print(json.dumps({"start_s": start, "passes": passes, "texts": texts}))
"""

HEADING = r"^#{1,6}\s+%s\s*$"
# sample file -> aspect -> what a faithful conversion holds: a regex for a line, a table row, or ("^", *header row)
CHECKS = {
    "policy.docx": {
        "headings": [HEADING % "Travel policy", HEADING % "Allowances"],
        "tables": [("City", "Daily allowance"), ("Paris", "90 EUR"), ("Oslo", "120 EUR")],
        "table headers": [("^", "City", "Daily allowance")],
        "lists": [r"^[-*+]\s+Receipts are kept for seven years\.$", r"^[-*+]\s+Taxis need a manager's approval\.$"],
    },
    "review.pptx": {
        "slide titles": [r"^#{1,6}\s+(Slide 1: )?Quarterly review\s*$", r"^#{1,6}\s+(Slide 2: )?Next steps\s*$"],
        "notes": [r"Mention the Porto pilot\."],
        "text": [r"Revenue grew 12 percent\.", r"Open the Lisbon office\."],
    },
    "offices.xlsx": {
        "sheet names": [HEADING % "Offices", HEADING % "Budget"],
        "tables": [("Office", "Head", "Staff"), ("Lisbon", "Ana Duarte", "42"), ("2024", "125000")],
        "table headers": [("^", "Office", "Head", "Staff"), ("^", "Year", "Amount")],
    },
    "rates.csv": {
        "tables": [("currency", "rate"), ("EUR", "1.00"), ("NOK", "11.5")],
        "table headers": [("^", "currency", "rate")],
    },
}
ASPECTS = ["headings", "tables", "table headers", "lists", "slide titles", "notes", "sheet names", "text"]


def make_sample(folder: Path, copies: int) -> list[Path]:
    import csv

    from test_office import make_docx, make_pptx, make_xlsx

    def make_csv(p: Path) -> None:
        with p.open("w", newline="") as fh:
            csv.writer(fh).writerows([["currency", "rate"], ["EUR", "1.00"], ["NOK", "11.5"]])

    files = []
    for i in range(copies):
        for name, make in (
            ("policy.docx", make_docx),
            ("review.pptx", make_pptx),
            ("offices.xlsx", make_xlsx),
            ("rates.csv", make_csv),
        ):
            p = folder / f"{i}-{name}"
            make(p)
            files.append(p)
    return files


def _rows(text: str) -> set[tuple[str, ...]]:
    """Markdown table rows as cell tuples; a header row (one above a `---` line) also as ("^", *cells)."""
    lines = [line.strip() for line in text.splitlines()]
    rows: set[tuple[str, ...]] = set()
    for i, line in enumerate(lines):
        if line.startswith("|"):
            cells = tuple(c.strip() for c in line.strip("|").split("|"))
            rows.add(cells)
            if i + 1 < len(lines) and re.match(r"^\|?\s*:?-{3,}", lines[i + 1]):
                rows.add(("^", *cells))
    return rows


def structure(texts: dict[str, str]) -> dict[str, float]:
    """Per aspect, the share of the sample's items found as Markdown structure."""
    hits: dict[str, list[int]] = {}
    for path, text in texts.items():
        for aspect, wants in CHECKS[Path(path).name.split("-", 1)[1]].items():
            rows = _rows(text)
            for want in wants:
                ok = want in rows if isinstance(want, tuple) else re.search(want, text, flags=re.M) is not None
                hits.setdefault(aspect, []).append(int(ok))
    return {a: sum(h) / len(h) for a, h in hits.items()}


def run_converter(name: str, python: str, files: list[Path]) -> dict:
    cmd = [python, "-c", WORKER, name, *map(str, files)]
    if name == "docling" and os.geteuid() == 0 and shutil.which("unshare"):
        cmd = ["unshare", "-n", *cmd]  # no network: docling must not fetch models for these formats
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        tail = r.stderr.strip().splitlines()
        return {"error": tail[-1][:300] if tail else f"exit {r.returncode}"}
    out = json.loads(r.stdout.strip().splitlines()[-1])
    return {
        "files_per_s": len(files) / statistics.median(out["passes"]),
        "start_s": out["start_s"],
        "wall_s": wall,
        "structure": structure(out["texts"]),
        "sample": list(out["texts"].values())[:4],  # one file of each kind
    }


def measure_install(spec: str) -> str:
    with tempfile.TemporaryDirectory(prefix="ragtune-install-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        before = _size_mib(venv)
        t0 = time.perf_counter()
        r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-cache-dir", spec], capture_output=True)
        secs = time.perf_counter() - t0
        if r.returncode != 0:
            return f"| `{spec}` | failed (exit {r.returncode}) | |"
        return f"| `{spec}` | {secs:.0f} | {_size_mib(venv) - before:.0f} |"


def _size_mib(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=5)
    ap.add_argument("--docling-python", help="a Python whose environment has docling installed (the baseline)")
    ap.add_argument("--install", action="append", default=[], help="a pip spec whose install to time and size")
    ap.add_argument("--show", action="store_true", help="print each converter's Markdown of one file of each kind")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="ragtune-office-") as tmp:
        files = make_sample(Path(tmp), args.copies)
        runs = {}
        if args.docling_python:
            runs["docling (baseline)"] = run_converter("docling", args.docling_python, files)
        runs["markitdown convert_local"] = run_converter("markitdown", sys.executable, files)
        runs["ragtune loaders (markitdown)"] = run_converter("ragtune", sys.executable, files)

    print(f"{len(files)} files ({args.copies} each of .docx .pptx .xlsx .csv), {os.cpu_count()} CPUs")
    print("| converter | files/s (median of 3) | start-up s | " + " | ".join(ASPECTS) + " |")
    print("|---|---:|---:|" + "---:|" * len(ASPECTS))
    for name, r in runs.items():
        if "error" in r:
            print(f"| {name} | failed: {r['error']} |")
            continue
        cells = [f"{100 * r['structure'][a]:.0f}%" if a in r["structure"] else "" for a in ASPECTS]
        print(f"| {name} | {r['files_per_s']:.1f} | {r['start_s']:.1f} | " + " | ".join(cells) + " |")
    base = runs.get("docling (baseline)", {})
    if "files_per_s" in base:
        for name, r in runs.items():
            if name != "docling (baseline)" and "files_per_s" in r:
                print(f"{name}: {r['files_per_s'] / base['files_per_s']:.2f}x docling's files/s (baseline docling)")
    if args.show:
        for name, r in runs.items():
            for text in r.get("sample", []):
                print(f"\n--- {name}:\n{text}")
    if args.install:
        print("\n| pip install (fresh venv, no cache) | seconds | MiB |\n|---|---:|---:|")
        for spec in args.install:
            print(measure_install(spec), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
