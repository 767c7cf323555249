"""Property tests (hypothesis) of every parser and text function: whatever the input, each one
either works or raises the RagtuneError subclass for its kind of input, with the properties that
make its output usable (chunks cover the text, scores stay in range, context fits the budget)."""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ragtune.chunking import chunk_document, whitespace_tokens
from ragtune.config import ChunkConfig, RagConfig, Settings, build, load_settings, read_toml
from ragtune.context import select_context
from ragtune.documents import LOADERS, Chunk, Document, Hit, load_squad, normalise_text, read_file
from ragtune.errors import ConfigError, DocumentError
from ragtune.evaluation import metrics
from ragtune.finetune import data as prep
from ragtune.testing import HashingEmbedder

from .hostile_corpus import pdf_bytes

# RAGTUNE_FUZZ_EXAMPLES=1000 for a longer hunt; the defaults keep the file well under a minute.
_SCALE = int(os.environ.get("RAGTUNE_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=_SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=max(1, _SCALE * 2 // 5), deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text that exercises the parsers: markup, separators, odd whitespace, controls, non-Latin scripts.
TEXTISH = st.text(
    alphabet=st.one_of(
        st.sampled_from(list(" \t\n\r\x0b\x0c\x00\x1c\x85\u2028\u2029\u00a0\u200b\ufeff.!?#|-*+:;,\"'()[]{}<>/\\=&")),
        st.characters(codec="utf-8", exclude_categories=("Cs",)),
    ),
    max_size=400,
)
WORDS = st.lists(
    st.one_of(
        st.sampled_from(["The", "harbour", "Dr.", "e.g.", "No.", "U.S.", "1884", "built", "it.", "Why?", "Yes!"]),
        st.sampled_from(["#", "##", "- item", "1.", "| a | b |", "|---|---|", "\n", "\n\n", "\n\n# Title\n\n"]),
        st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Zs", "Cc")), min_size=1, max_size=12),
    ),
    max_size=120,
).map(" ".join)

_DIR = tempfile.TemporaryDirectory(prefix="ragtune-fuzz-")
_N = iter(range(10**9))


def _file(suffix: str, data: bytes) -> Path:
    path = Path(_DIR.name) / f"f{next(_N)}{suffix}"
    path.write_bytes(data)
    return path


def _only_document_errors(path: Path) -> None:
    try:
        result = read_file(path, path.name)
    except DocumentError as exc:
        assert str(exc).strip(), "a reason is given"
        return
    assert result.documents and all(d.text.strip() for d in result.documents)
    for d in result.documents:
        assert d.content_hash  # encodable: no lone surrogates
        json.dumps(d.meta)
    assert all(s.reason.strip() for s in result.skipped)


# -- loaders ------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", sorted(LOADERS))
@FEW
@given(data=st.binary(max_size=3000))
def test_any_bytes_load_or_raise_a_document_error(suffix, data):
    _only_document_errors(_file(suffix, data))


TEXT_CODECS = ["utf-8", "utf-16", "utf-16-le", "utf-32", "latin-1", "cp1252", "cp1251", "shift_jis", "gb18030"]


@pytest.mark.parametrize("suffix", [".txt", ".md", ".html", ".csv", ".jsonl", ".json", ".eml"])
@FEW
@given(text=TEXTISH, codec=st.sampled_from(TEXT_CODECS), cut=st.integers(0, 8), flip=st.integers(0, 255))
def test_text_in_any_encoding_cut_or_flipped_loads_or_raises(suffix, text, codec, cut, flip):
    data = text.encode(codec, "replace")
    if cut and len(data) > cut:
        data = data[:-cut]  # a character cut in half at the end
    if data and flip:
        data = data[: flip % len(data)] + bytes([flip]) + data[flip % len(data) + 1 :]
    _only_document_errors(_file(suffix, data))


LOWER = "abcdefghijklmnopqrstuvwxyz"
ACCENTED = "àáâäãåæçèéêëìíîïñòóôöõøùúûüýÿß"
# Western words as they come: lower case, some capitalised, an accented letter here and there.
WESTERN_WORD = st.builds(
    lambda a, b, c, cap: (a + b + c).capitalize() if cap else a + b + c,
    st.text(LOWER, min_size=2, max_size=8),
    st.sampled_from(["", *ACCENTED]),
    st.text(LOWER, max_size=4),
    st.booleans(),
)


@FUZZ
@given(words=st.lists(WESTERN_WORD, min_size=1, max_size=30), sep=st.sampled_from([" ", ", ", ". ", "\n", " – "]))
def test_western_text_in_latin1_or_cp1252_is_decoded_not_skipped(words, sep):
    text = sep.join(words)
    assume(any(c in ACCENTED for c in text))
    for codec in ("latin-1", "cp1252"):
        docs = read_file(_file(".txt", text.encode(codec, "replace")), "t").documents
        assert docs[0].text == normalise_text(text.encode(codec, "replace").decode(codec))
        assert docs[0].meta["encoding"] == "cp1252"


def _pdf(text: str) -> bytes:
    return pdf_bytes(text)


@FUZZ
@given(cut=st.integers(0, 600), pos=st.integers(0, 600), byte=st.integers(0, 255), words=st.text(max_size=40))
def test_a_damaged_pdf_loads_or_raises(cut, pos, byte, words):
    data = bytearray(_pdf("".join(c for c in words if c.isalnum() or c == " ") or "text"))
    data[pos % len(data)] = byte
    _only_document_errors(_file(".pdf", bytes(data[: len(data) - cut % len(data)])))


def _docx_bytes() -> bytes:
    from docx import Document as Docx

    doc = Docx()
    doc.add_heading("Policy", 1)
    doc.add_paragraph("Trains for trips under 500 km.")
    buf = io.BytesIO()
    doc.save(buf)
    return buf.getvalue()


_DOCX: list[bytes] = []


@FEW
@given(cut=st.integers(0, 5000), pos=st.integers(0, 20000), byte=st.integers(0, 255))
def test_a_damaged_office_file_loads_or_raises(cut, pos, byte):
    if not _DOCX:
        _DOCX.append(_docx_bytes())
    data = bytearray(_DOCX[0])
    data[pos % len(data)] = byte
    _only_document_errors(_file(".docx", bytes(data[: len(data) - cut % len(data)])))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
FIELDS = ["data", "title", "paragraphs", "context", "qas", "id", "question", "answers", "text", "meta", "groups"]


def _shaped(depth: int = 3):
    """JSON objects with the field names our loaders read, holding values of any type."""
    if depth == 0:
        return JSON
    inner = _shaped(depth - 1)
    return st.one_of(
        JSON,
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(FIELDS), inner, max_size=5),
    )


SHAPED = _shaped()


@FUZZ
@given(value=SHAPED)
def test_any_json_loads_as_squad_or_records_or_raises(value):
    path = _file(".json", json.dumps(value).encode())
    _only_document_errors(path)
    try:
        docs, examples = load_squad(path)
    except DocumentError:
        return
    assert all(e.doc_ids[0] in {d.id for d in docs} for e in examples)
    assert len({d.id for d in docs}) == len(docs)


@FUZZ
@given(records=st.lists(st.one_of(SHAPED, st.dictionaries(st.sampled_from(FIELDS), SHAPED, max_size=5)), max_size=8))
def test_jsonl_records_each_load_or_are_skipped_with_their_line(records):
    lines = [json.dumps(r) for r in records]
    path = _file(".jsonl", "\n".join(lines).encode())
    try:
        result = read_file(path, "f")
    except DocumentError:
        return
    # Every line is accounted for: a document, or a skipped entry naming that line.
    skipped = {int(s.path.rsplit(":", 1)[1]) for s in result.skipped}
    assert len(result.documents) + len(skipped) == len(lines)
    for d in result.documents:
        groups = d.meta.get("groups")
        assert groups is None or (groups == sorted(set(groups)) and all(isinstance(g, str) and g for g in groups))


# -- chunking, context, metrics -----------------------------------------------------------------


@FUZZ
@given(text=st.one_of(TEXTISH, WORDS), size=st.integers(16, 60), overlap=st.integers(0, 7))
def test_chunks_cover_the_text(text, size, overlap):
    doc = Document(id="d", text=normalise_text(text), title="T")
    chunks = chunk_document(doc, ChunkConfig(chunk_tokens=size, overlap_tokens=overlap), whitespace_tokens)
    assert [c.id for c in chunks] == [f"d#{i}" for i in range(len(chunks))]
    assert all(c.text.strip() for c in chunks)
    assert set(doc.text.split()) <= {w for c in chunks for w in c.text.split()}
    assert not doc.text.split() or chunks


def _hit(i: int, text: str) -> Hit:
    return Hit(Chunk(id=f"c{i}", doc_id=f"d{i}", text=text, position=0), score=1.0 / (i + 1), rank=i + 1, via="t")


@FUZZ
@given(question=TEXTISH, texts=st.lists(st.one_of(TEXTISH, WORDS), max_size=5), budget=st.integers(1, 120))
def test_context_fits_the_budget_and_comes_from_the_hits(question, texts, budget):
    embedder = HashingEmbedder(dim=32)
    hits = [_hit(i, t) for i, t in enumerate(texts)]
    sources = select_context(question, hits, embedder, budget_tokens=budget)
    assert [s.number for s in sources] == list(range(1, len(sources) + 1))
    assert sum(embedder.count_tokens([s.text for s in sources])) <= max(budget, 1)
    by_id = {h.chunk.id: h.chunk for h in hits}
    for s in sources:
        assert set(s.text.split()) <= set(by_id[s.chunk_id].text.split())
        assert math.isfinite(s.score)


ANSWER = st.one_of(TEXTISH, WORDS, st.sampled_from(["", " ", "the", "a an the", "Paris", "!!!"]))


@FUZZ
@given(pred=ANSWER, golds=st.lists(ANSWER, max_size=4))
def test_answer_metrics_stay_in_range(pred, golds):
    for score in (metrics.exact_match(pred, golds), metrics.f1_score(pred, golds), metrics.rouge_l(pred, golds)):
        assert 0.0 <= score <= 1.0
    assert 0.0 <= metrics.sentence_bleu(pred, golds) <= 100.0
    if golds:
        assert metrics.exact_match(golds[0], golds) == 1.0
        assert metrics.f1_score(golds[0], golds) == (1.0 if metrics.normalize_answer(golds[0]) else 0.0)


@FUZZ
@given(pairs=st.lists(st.tuples(ANSWER, st.lists(ANSWER, max_size=3)), max_size=5))
def test_corpus_bleu_stays_in_range(pairs):
    preds = [p for p, _ in pairs]
    golds = [g for _, g in pairs]
    assert 0.0 <= metrics.corpus_bleu(preds, golds) <= 100.0


# -- prepare's reader and cleaner -----------------------------------------------------------------


@FUZZ
@given(text=TEXTISH)
def test_normalisers_are_idempotent(text):
    assert normalise_text(normalise_text(text)) == normalise_text(text)
    assert prep._norm(prep._norm(text)) == prep._norm(text)
    prep._key(text)


QA = st.fixed_dictionaries(
    {},
    optional={
        "id": JSON,
        "question": st.one_of(TEXTISH, JSON),
        "answer": st.one_of(TEXTISH, JSON),
        "answers": st.one_of(st.lists(st.one_of(TEXTISH, JSON), max_size=3), JSON),
        "context": st.one_of(TEXTISH, JSON),
        "instruction": st.one_of(TEXTISH, JSON),
        "input": st.one_of(TEXTISH, JSON),
        "output": st.one_of(TEXTISH, JSON),
        "doc_id": JSON,
    },
)


JUNK_LINE = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\n"))


@FUZZ
@given(rows=st.lists(st.one_of(QA, JSON), max_size=10), junk=st.lists(JUNK_LINE, max_size=3))
def test_prepare_reads_any_jsonl_and_cleans_what_it_reads(rows, junk):
    text = "\n".join([json.dumps(r) for r in rows] + junk)
    path = _file(".jsonl", text.encode("utf-8"))
    with _maybe(DocumentError):
        prep.read_jsonl(path, skip_bad=False, bad=prep.StepReport("bad"))
    bad = prep.StepReport("bad")
    try:
        examples = prep.read_jsonl(path, skip_bad=True, bad=bad)
    except DocumentError as exc:  # the file as a whole: binary, say
        assert not str(exc).removeprefix(str(path)).split(" ")[0].strip(":").isdigit()  # not a line's problem
        return
    # Every line is an example or a counted bad line (NUL bytes are dropped before reading).
    assert len(examples) + bad.removed == sum(1 for line in text.replace("\x00", "").split("\n") if line.strip())
    assert all(isinstance(e.question, str) and all(isinstance(a, str) for a in e.answers) for e in examples)
    report = prep.DataReport(inputs=[str(path)])
    kept = prep.clean(examples, prep.PrepareConfig(), whitespace_tokens, report)
    assert len(kept) + sum(s.removed for s in report.steps) == len(examples)
    assert {e.id for e in kept} <= {e.id for e in examples}


class _maybe:
    """A context manager that lets `kind` pass and nothing else (like pytest.raises, minus the must)."""

    def __init__(self, kind):
        self.kind = kind

    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        return typ is not None and issubclass(typ, self.kind)


# -- configuration ---------------------------------------------------------------------------------

KEYS = [f.name for cls in (ChunkConfig, RagConfig) for f in cls.__dataclass_fields__.values()]
SCALARS = st.one_of(st.integers(-(2**40), 2**40), st.floats(), st.booleans(), st.text(max_size=12))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(st.text(max_size=5), SCALARS, max_size=2))


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"


@FUZZ
@given(
    sections=st.dictionaries(
        st.sampled_from(["chunk", "rag", "other"]),
        st.one_of(st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), VALUES, max_size=4), SCALARS),
        max_size=3,
    )
)
def test_any_config_file_gives_settings_or_a_config_error(sections):
    lines = []
    for name, body in sections.items():
        if isinstance(body, dict):
            lines.append(f"[{name}]")
            lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in body.items()]
        else:
            lines.insert(0, f"{name} = {_toml_value(body)}")
    path = _file(".toml", "\n".join(lines).encode("utf-8", "surrogatepass"))
    try:
        got = load_settings(path)
    except ConfigError as exc:
        assert str(exc)
        return
    assert isinstance(got, Settings)
    assert isinstance(got.chunk.chunk_tokens, int) and isinstance(got.rag.k, int)


@FUZZ
@given(raw=st.binary(max_size=200))
def test_any_bytes_as_a_config_file_give_a_config_error_or_a_table(raw):
    try:
        assert isinstance(read_toml(_file(".toml", raw)), dict)
    except ConfigError:
        pass


@FUZZ
@given(values=st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=4), cls=st.sampled_from([ChunkConfig, RagConfig]))
def test_build_rejects_bad_values_with_a_config_error_naming_the_field(values, cls):
    values = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
    try:
        build(cls, values, "section")
    except ConfigError as exc:
        assert any(k in str(exc) for k in values), str(exc)


def test_fuzz_files_are_in_a_temp_folder():
    assert Path(_DIR.name).is_dir() and zipfile.is_zipfile(io.BytesIO(_docx_bytes()))
