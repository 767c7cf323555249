"""Synthetic questions: candidates, stratified sampling, every filter counted, bad input, and the
one-command `evaluate` on scripted models (the real adapter is exercised in test_qg.py)."""

import json

import pytest

from ragtune import Index
from ragtune.errors import ConfigError, DocumentError, RagtuneError
from ragtune.rag import support
from ragtune.synth import generate as gen_mod
from ragtune.synth.candidates import looks_like_prose, noun_chunks, sentence_candidates, target_candidates
from ragtune.synth.generate import SynthConfig, clean_question, synthesize, write_questions
from ragtune.testing import ScriptedGenerator, make_chunks


def test_candidates_are_exact_spans_of_useful_kinds():
    s = "The Eiffel Tower was completed on 31 March 1889 and is 330 metres tall, designed by Gustave Eiffel."
    cands = sentence_candidates(s, max_candidates=6, keywords=["Eiffel Tower", "the tall", "designed by"])
    kinds = {c.text: c.kind for c in cands}
    assert kinds.get("31 March 1889") == "date" and kinds.get("330 metres") == "number"
    assert kinds.get("Gustave Eiffel") == "entity"
    assert all(c.text in s and s[c.start : c.start + len(c.text)] == c.text for c in cands)
    assert "the tall" not in kinds and "designed by" not in kinds  # phrases may not start or end with a stop word
    assert sentence_candidates("it was so.") == []


def test_noun_chunks_are_noun_phrases_without_verbs_or_function_words():
    s = "The museum environment is controlled to include temperature and light, so certain rivers were diverted."
    chunks = noun_chunks(s)
    assert chunks == ["museum environment", "temperature", "light", "certain rivers"]
    assert all(c in s for c in chunks)
    # a run that ends on an adjective is cut back to its last noun; one longer than max_words is left out
    assert noun_chunks("They kept the stone walls intact.") == ["stone walls"]
    assert noun_chunks("A large old stone water tower stood.", max_words=4) == []
    assert noun_chunks("A large old stone water tower stood.", max_words=5) == ["large old stone water tower"]
    assert noun_chunks("It was so.") == []


def test_synthetic_targets_are_the_pools_candidates_ranked_by_the_scorer_none_overlapping():
    import numpy as np

    from ragtune.synth.candidates import (
        TARGET_FEATURES,
        PassageContext,
        TargetScorer,
        candidate_pool,
        target_features,  # fmt: skip
        target_scorer,
    )

    s = "In 1889 the Paris museum was perceived as complicated, so wrought iron and tall stone walls were used."
    keywords = ["perceived as complicated", "wrought iron", "stone walls", "Paris museum"]
    pool = candidate_pool(s)
    assert pool["1889"] == "date" and pool["Paris"] == "entity" and pool["tall stone walls"] == "phrase"
    assert "perceived as complicated" not in pool  # a key phrase that is no noun phrase is no candidate
    ctx = PassageContext.of(s, keywords)
    targets = target_candidates(s, max_candidates=6, keywords=keywords)
    texts = [c.text for c in targets]
    assert "1889" in texts and all(s[c.start : c.start + len(c.text)] == c.text for c in targets)
    assert not any(a in b for a in texts for b in texts if a != b)  # "Paris" or "Paris museum", not both
    scores = target_scorer().scores(np.array([target_features(t, pool[t], s, 1, ctx) for t in texts]))
    assert list(scores) == sorted(scores, reverse=True)  # likeliest first
    assert len(target_candidates(s, max_candidates=2, keywords=keywords)) == 2
    # The order is the scorer's: one that likes only phrases, or only dates, puts them first.
    n = len(TARGET_FEATURES)
    for kind in ("phrase", "date"):
        w = np.zeros(n)
        w[TARGET_FEATURES.index(f"kind_{kind}")] = 1.0
        assert target_candidates(s, keywords=keywords, scorer=TargetScorer(w, np.zeros((n, n)), 0.0))[0].kind == kind
    assert target_candidates("it was so.") == []


def test_target_scorer_ships_with_this_versions_features_and_its_fit_folds_exactly():
    import importlib.util

    import numpy as np
    import pytest
    from sklearn.linear_model import LogisticRegression

    from ragtune.synth.candidates import TARGET_FEATURES, TargetScorer, target_scorer

    bundled = target_scorer()
    n = len(TARGET_FEATURES)
    assert bundled.linear.shape == (n,) and bundled.quadratic.shape == (n, n)
    assert np.allclose(bundled.quadratic, bundled.quadratic.T)
    bad = bundled.to_json() | {"features": list(TARGET_FEATURES[:-1])}
    with pytest.raises(ValueError, match="features"):
        TargetScorer.from_json(bad)
    # The fit script's folding of sklearn's standardised quadratic model into w.x + x'Qx + b is exact.
    spec = importlib.util.spec_from_file_location("fit_target_scorer", "scripts/fit_target_scorer.py")
    fit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fit)
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, size=(400, n))
    y = (x[:, 0] * x[:, 1] + rng.normal(size=400) > 6).astype(float)
    mu, sd = x.mean(0), x.std(0)
    p = fit.quadratic_terms((x - mu) / sd)
    m2, s2 = p.mean(0), p.std(0)
    lr = LogisticRegression(C=0.1, max_iter=5000).fit((p - m2) / s2, y)
    folded = fit.fold(lr, mu, sd, m2, s2, n)
    assert np.allclose(folded.scores(x), lr.decision_function((p - m2) / s2), atol=1e-6)


def test_prose_check_rejects_tables_binary_and_non_english():
    assert looks_like_prose("Rome is the capital of Italy and has many old churches.")
    assert not looks_like_prose("12 34 56 78 90 11 12 13 14 15 16")
    assert not looks_like_prose("Москва — столица России, крупнейший город страны и её политический центр.")
    assert not looks_like_prose("\x00\x01 ÿþ \x02 ### ### ### %%% ###")


def test_clean_question():
    assert clean_question("Question: When was it built? It was 1889.") == "When was it built?"
    assert clean_question("The answer is 1889") is None
    assert clean_question("??") is None


# -- scripted models: the prompt carries the answer as JSON, a shared table says what the reader answers --


class Scripted:
    """QG writes `script[answer]` (default: a fresh question per answer); the reader answers
    `replies[question]`, else the answer the question was written for."""

    def __init__(self, script=None, replies=None, default=None):
        self.script, self.replies, self.asked, self.answer_of = script or {}, replies or {}, [], {}
        self.default = default
        self.qg = ScriptedGenerator(self._question, name="scripted-qg")
        self.reader = ScriptedGenerator(self._answer, name="scripted-reader")

    def _question(self, messages):
        item = json.loads(messages[-1]["content"])
        self.asked.append(item)
        q = self.script.get(item["answer"], self.default or f"Which item does note {len(self.asked)} describe?")
        self.answer_of.setdefault(q, item["answer"])
        return q

    def _answer(self, messages):
        q = messages[-1]["content"].rsplit("Question:", 1)[1].strip()
        if q in self.replies:
            return self.replies[q]
        return f"{self.answer_of[q]} [1]" if q in self.answer_of else "I don't know based on the sources."


@pytest.fixture(autouse=True)
def json_prompts(monkeypatch):
    monkeypatch.setattr(
        gen_mod,
        "qg_messages",
        lambda passage, answer: [{"role": "user", "content": json.dumps({"passage": passage, "answer": answer})}],
    )


DOCS = {
    f"doc{i}": [
        f"The town of Alder{i} was founded in {1800 + i} by Marta Kell{i}. It lies on the river Sen{i} near Portham."
    ]
    for i in range(5)
}


def chunks_of(docs):
    return [c for d, texts in docs.items() for c in make_chunks(d, texts)]


def test_every_document_contributes_and_none_dominates():
    m = Scripted()
    qs, report = synthesize(chunks_of(DOCS), SynthConfig(n=5, seed=1), qg=m.qg, reader=m.reader)
    assert len(qs) == 5 and sorted(q.doc_id for q in qs) == sorted(DOCS)
    assert report.kept == 5 and report.documents == 5 and report.documents_with_questions == 5
    rec = qs[0].to_record()
    assert rec["synthetic"] is True and rec["answer"] in rec["context"] and rec["chunk_id"].startswith(rec["doc_id"])
    assert rec["scores"]["round_trip_f1"] >= 0.5


@pytest.fixture(autouse=True)
def fresh_candidates():
    """passage_candidates is cached; a test that patches what it calls must not leave its results behind."""
    yield
    gen_mod.passage_candidates.cache_clear()


def only_dates(monkeypatch):
    targets = gen_mod.target_candidates
    monkeypatch.setattr(gen_mod, "target_candidates", lambda *a, **k: [c for c in targets(*a, **k) if c.kind == "date"])
    gen_mod.passage_candidates.cache_clear()  # passages read before the patch (after it: `fresh_candidates`)


def test_each_filter_is_counted_with_examples(monkeypatch):
    only_dates(monkeypatch)  # one candidate per document: its year
    docs = {f"f{i}": [f"It was first founded in the year {1800 + i}."] for i in range(5)}
    m = Scripted()
    m.script = {
        "1800": "blah blah",  # not a question
        "1801": "Why?",  # too short
        "1802": "Was it founded in the year 1802?",  # gives the answer away
        "1803": "When was the third town founded?",  # the reader gets it wrong (below)
    }
    m.replies = {"When was the third town founded?": "in the spring"}
    qs, report = synthesize(chunks_of(docs), SynthConfig(n=20, seed=0), qg=m.qg, reader=m.reader)
    removed = {s.name: s.removed for s in report.steps}
    assert {x["answer"] for x in m.asked} == {"1800", "1801", "1802", "1803", "1804"}
    for step in ("not a question", "length", "contains the answer", "round trip"):
        assert removed[step] == 1, (step, removed)
        assert report.step(step).examples
    assert [q.answer for q in qs] == ["1804"]
    assert any("only 1 of the 20" in n for n in report.notes)
    assert all("?" in q.question and q.answer not in q.question for q in qs)
    md = report.to_markdown()
    assert "| round trip |" in md and "accepted per minute" in md


def test_a_question_that_repeats_a_word_of_its_answer_is_filtered_unless_allowed():
    m = Scripted(script={f"Marta Kell{i}": f"Which Marta founded the town of Alder{i}?" for i in range(5)})
    qs, report = synthesize(chunks_of(DOCS), SynthConfig(n=40, per_doc=8, seed=0), qg=m.qg, reader=m.reader)
    step = report.step("echoes the answer")
    marta = sum(x["answer"].startswith("Marta") for x in m.asked)
    assert step.removed == marta >= 2 and "Which Marta founded" in step.examples[0]
    assert qs and not any(q.answer.startswith("Marta") for q in qs)  # the others are kept
    assert all(support(q.answer, q.question) == 0 for q in qs)
    m = Scripted(script=m.script)
    qs, report = synthesize(chunks_of(DOCS), SynthConfig(n=40, per_doc=8, seed=0, max_echo=1.0), qg=m.qg,
                            reader=m.reader)  # fmt: skip
    marta = sum(x["answer"].startswith("Marta") for x in m.asked)
    assert report.step("echoes the answer").removed == 0 and sum(q.answer.startswith("Marta") for q in qs) == marta
    assert support("Marta Kell0", "Which Marta founded it?") == 0.5
    with pytest.raises(ConfigError, match="max_echo"):
        SynthConfig(max_echo=1.5)


class SpanReader:
    """A span reader (it has `score`): prefers `favourite(spans, question)` among the spans offered."""

    name = "span-reader"

    def __init__(self, favourite):
        self.favourite, self.offered = favourite, []

    def score(self, prompt, spans):
        self.offered.append(list(spans))
        best = self.favourite(spans, prompt[-1]["content"])
        return [1.0 if s == best else 0.0 for s in spans]


def test_a_span_reader_picks_among_the_passages_candidates():
    m = Scripted()
    right = SpanReader(lambda spans, q: m.answer_of[q.rsplit("Question:", 1)[1].strip()])
    qs, report = synthesize(chunks_of(DOCS), SynthConfig(n=5, seed=1), qg=m.qg, reader=right)
    assert len(qs) == 5 and "candidate spans" in report.reader
    assert all(len(offer) >= 3 for offer in right.offered)  # the year, the founder, the river...
    assert all(q.round_trip_answer == q.answer for q in qs)
    wrong = SpanReader(lambda spans, q: next(s for s in spans if s != m.answer_of[q.rsplit("Question:", 1)[1].strip()]))
    qs, report = synthesize(chunks_of(DOCS), SynthConfig(n=5, seed=1, round_trip_top=1), qg=m.qg, reader=wrong)
    assert (
        qs == [] and report.step("round trip").removed == report.attempts - report.step("contains the answer").removed
    )


class RankingReader:
    """A span reader that puts the target at place `place` (1-based) of its ranking, or last (and the
    spans that share a word with it just before)."""

    name = "ranking-reader"

    def __init__(self, target_of, place=None):
        self.target_of, self.place = target_of, place

    def score(self, prompt, spans):
        target = self.target_of(prompt[-1]["content"].rsplit("Question:", 1)[1].strip())
        others = [s for s in spans if s != target]
        if not self.place:  # last: after every span that shares no word with the target
            near = [s for s in others if set(s.split()) & set(target.split())]
            return [-float(([s for s in others if s not in near] + near + [target]).index(s)) for s in spans]
        order = others[: self.place - 1] + [target] + others[self.place - 1 :]
        return [-float(order.index(s)) for s in spans]


def test_round_trip_failures_are_collected_apart_when_asked(monkeypatch):
    only_dates(monkeypatch)  # one candidate per document: its year
    docs = {f"f{i}": [f"It was first founded in the year {1800 + i}."] for i in range(6)}
    m = Scripted()
    second = "When was the second town founded?"
    m.script = {"1801": second, "1802": second, "1803": "In what year was the old abbey of Brey founded?",
                "1800": "Was it founded in 1800?"}  # fmt: skip
    m.replies = {"When was the second town founded?": "in the spring",
                 "In what year was the old abbey of Brey founded?": "by Ola Venn"}  # fmt: skip
    cfg = SynthConfig(n=20, seed=0)
    kept_alone, _ = synthesize(chunks_of(docs), cfg, qg=m.qg, reader=m.reader)
    failed = []
    qs, report = synthesize(chunks_of(docs), cfg, qg=m.qg, reader=m.reader, failed=failed)
    assert [q.answer for q in qs] == [q.answer for q in kept_alone]  # what is kept does not change
    assert {q.answer for q in qs} == {"1804", "1805"}
    # Failed only the round trip (not 1800: it gives its answer away); the twice-written question once.
    assert sorted(f.answer for f in failed) in (["1801", "1803"], ["1802", "1803"])
    assert all(f.round_trip_rank == 0 and f.to_record()["scores"]["round_trip_rank"] == 0 for f in failed)
    assert len({f.id for f in failed}) == 2 and not {f.id for f in failed} & {q.id for q in qs}
    assert report.step("round trip").removed == 3
    assert any("2 questions that failed only the round trip were kept for training" in n for n in report.notes)


def test_the_round_trip_keeps_a_target_among_the_readers_top_spans_and_records_its_rank():
    m = Scripted()
    second = RankingReader(lambda q: m.answer_of[q], place=2)
    qs, report = synthesize(chunks_of(DOCS), SynthConfig(n=5, seed=1, round_trip_top=3), qg=m.qg, reader=second)
    assert len(qs) == 5 and all(q.round_trip_rank == 2 and q.round_trip_answer != q.answer for q in qs)
    assert all(q.to_record()["scores"]["round_trip_rank"] == 2 for q in qs)
    assert report.kept_by_rank == {2: 5} and "among its 3 most likely" in report.reader
    qs, report = synthesize(chunks_of(DOCS), SynthConfig(n=5, seed=1, round_trip_top=1), qg=m.qg, reader=second)
    assert qs == [] and report.step("round trip").removed > 0  # Alberti et al.'s filter: the reader's answer only
    last = RankingReader(lambda q: m.answer_of[q])  # every passage here has 10 candidates
    qs, report = synthesize(chunks_of(DOCS), SynthConfig(n=5, seed=1, round_trip_top=3), qg=m.qg, reader=last)
    assert qs == [] and report.step("round trip").examples
    # The default reaches as far down the reader's ranking as real questions do (93% within 10): a target
    # ranked 10th is kept, the last of more than 10 is not.
    tenth = RankingReader(lambda q: m.answer_of[q], place=10)
    qs, report = synthesize(chunks_of(DOCS), SynthConfig(n=5, seed=1), qg=m.qg, reader=tenth)
    assert len(qs) == 5 and report.kept_by_rank == {10: 5} and "among its 10 most likely" in report.reader
    longer = {f"doc{i}": [f"The town of Alder{i} was founded in {1800 + i} by Marta Kell{i} on the river Sen{i} near "
                          "Portham, where its mayor Ola Venn opened a mill and a school in 1850 with 300 workers."]
              for i in range(5)}  # fmt: skip
    assert all(len(gen_mod.span_candidates(c.text, "1850")) > 10 for c in chunks_of(longer))
    qs, report = synthesize(chunks_of(longer), SynthConfig(n=5, seed=1), qg=m.qg, reader=last)
    assert qs == [] and report.step("round trip").removed > 0
    with pytest.raises(ConfigError, match="round_trip_top"):
        SynthConfig(round_trip_top=0)


def test_the_bundled_writer_runs_on_the_backend_asked_for():
    from ragtune.generators import TransformersGenerator
    from ragtune.synth.generate import synth_models
    from ragtune.synth.qg import bundled_adapter

    qg, reader, name = synth_models(SynthConfig())
    assert isinstance(qg, TransformersGenerator) and isinstance(reader, TransformersGenerator)
    assert "bundled question-generation adapter" in name
    with pytest.raises(ConfigError, match="writer_backend='vllm'"):
        SynthConfig(writer_backend="vllm")
    pytest.importorskip("llama_cpp")
    from ragtune.llama_generator import LlamaCppGenerator

    qg, reader, name = synth_models(SynthConfig(writer_backend="llama"))  # nothing loads until used
    assert isinstance(qg, LlamaCppGenerator) and qg.adapter == bundled_adapter()
    assert isinstance(reader, TransformersGenerator)  # the reader scores spans: transformers is faster at that
    assert name.startswith("smollm2-135m-instruct@llama+")


def test_near_duplicates_are_dropped():
    m = Scripted(default="Which town lies on the river near Portham?")
    m.replies = {"Which town lies on the river near Portham?": ""}
    qs, report = synthesize(chunks_of(DOCS), SynthConfig(n=5, seed=0, min_round_trip_f1=0.0), qg=m.qg, reader=m.reader)
    assert len(qs) == 1 and report.step("near duplicate").removed >= 1


def test_empty_and_junk_input_give_a_report_not_a_crash(tmp_path):
    m = Scripted()
    qs, report = synthesize([], SynthConfig(n=5), qg=m.qg, reader=m.reader)
    assert qs == [] and any("empty" in n for n in report.notes)
    junk = make_chunks(
        "junk", ["0101 0110 1110 9999 1234 5678 0000 1111", "Это просто текст на другом языке без ответа."]
    )
    qs, report = synthesize(junk, SynthConfig(n=5), qg=m.qg, reader=m.reader)
    assert qs == [] and report.step("not prose").removed == 2 and report.notes
    with pytest.raises(RagtuneError, match="no synthetic question survived"):
        write_questions(qs, report, tmp_path / "qa.jsonl")
    assert not (tmp_path / "qa.jsonl").exists() and "not prose" in (tmp_path / "qa.report.md").read_text()


def test_output_is_read_by_prepare_and_compare(tmp_path):
    from ragtune.evaluation.compare import load_questions
    from ragtune.finetune.data import PrepareConfig, prepare

    m = Scripted()
    qs, report = synthesize(chunks_of(DOCS), SynthConfig(n=5), qg=m.qg, reader=m.reader)
    out, md = write_questions(qs, report, tmp_path / "qa.jsonl")
    assert json.loads((tmp_path / "qa.report.json").read_text())["kept"] == 5
    loaded = load_questions(str(out), 100)
    assert [e.question for e in loaded] == [q.question for q in qs] and all(e.doc_ids for e in loaded)
    rep = prepare([out], tmp_path / "prep", PrepareConfig(ratios=(0.6, 0.2, 0.2), seed=0))
    assert rep.kept == 5


def town_folder(folder):
    """Eight short documents about made-up towns: a folder `evaluate` can make questions from."""
    folder.mkdir()
    for i in range(8):
        (folder / f"town{i}.txt").write_text(
            f"The town of Alder{i} was founded in {1800 + i} by Marta Kell{i}. "
            f"It lies on the river Sen{i} near Portham. "
            f"Its mayor is Jon Hale{i}, elected in {1990 + i}. The museum of Alder{i} opened in {1950 + i}."
        )
    return folder


def test_evaluate_on_a_folder_with_scripted_models(tmp_path, monkeypatch):
    from ragtune.evaluation.evaluate import EvaluateConfig, run_evaluate

    folder = town_folder(tmp_path / "docs")
    m = Scripted()

    def rag_answer(messages):
        user = messages[-1]["content"]
        return user.split(">", 1)[1].split(".")[0] + " [1]" if "<source" in user else "Madrid"

    def reader(messages):  # fails the round trip of every fourth question it is asked
        q = messages[-1]["content"].rsplit("Question:", 1)[1].strip()
        n = int(q.split()[-2]) if q.startswith("Which item does note") else 1
        return "nothing at all" if n % 4 == 0 else m._answer(messages)

    round_trip = ScriptedGenerator(reader, name="failing-reader")
    gens = {"qg": m.qg, "reader": round_trip, "base": m.reader, "rag": ScriptedGenerator(rag_answer)}
    cfg = EvaluateConfig(budget_min=3, strategies=("base", "rag"), embedder="hashing-64")
    said = []
    res = run_evaluate([folder], tmp_path / "out", cfg, say=said.append, generators=gens)
    out = tmp_path / "out"
    assert (out / "report.html").is_file() and (out / "plan.json").is_file()
    assert any(s.startswith("plan:") for s in said)
    assert res.questions["source"] == "synthetic" and res.questions["synthetic"]["kept"] >= 10
    assert set(res.aggregates) == {"base", "rag"} and res.aggregates["base"]["n_answerable"] > 0
    test_ids = {json.loads(l)["id"] for l in (out / "data" / "test.jsonl").read_text().splitlines()}
    train_ids = {json.loads(l)["id"] for l in (out / "data" / "train.jsonl").read_text().splitlines()}
    assert test_ids and not test_ids & train_ids  # test questions are never trained on
    # Questions that failed only the round trip are trained on, never tested or validated on.
    failed = [json.loads(l) for l in (out / "questions" / "training-only.jsonl").read_text().splitlines()]
    assert failed and all(f["scores"]["round_trip_rank"] == 0 and f["training_only"] for f in failed)
    val_ids = {json.loads(l)["id"] for l in (out / "data" / "validation.jsonl").read_text().splitlines()}
    assert {f["id"] for f in failed} & train_ids and not {f["id"] for f in failed} & (test_ids | val_ids)
    assert any("failed only the round trip, for training" in s for s in said)
    # A reader that answers in its own words ranks nothing: every kept question is its own first answer, and
    # the test cannot leave them out (TEST_WITHOUT_READERS_OWN) — it says so.
    assert any("the test includes questions the round-trip reader answered itself" in s for s in said)
    assert res.questions["untested"] == 0 and res.questions["splits"]["test"] == len(test_ids)
    held = res.questions["held_out_documents"]
    assert held and not set(held) & {d.id for d in Index.open(out / "index").documents()}
    html = (out / "report.html").read_text()
    assert "The questions" in html and "synthetic" in html
    # Retrieval was tuned on training questions and recorded in the index the comparison read.
    chosen = res.tuning["retrieval"]["chosen"]
    assert Index.open(out / "index").rag_config().dense_weight == chosen["dense_weight"]
    assert "Retrieval, tuned to these documents" in html
    # A second run reuses the questions.
    said.clear()
    run_evaluate([folder], tmp_path / "out", cfg, say=said.append, generators=gens)
    assert any("reusing the synthetic questions" in s for s in said)


def test_evaluate_stops_with_the_loaders_reasons(tmp_path):
    from ragtune.evaluation.evaluate import run_evaluate

    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.txt").write_bytes(b"\x00\x01\x02" * 50)
    (folder / "b.txt").write_text("")
    said = []
    with pytest.raises(DocumentError, match="nothing to evaluate.*a.txt.*b.txt: empty file"):
        run_evaluate([folder], tmp_path / "out", say=said.append)
    assert not said  # the reasons are in the error, not said twice


def test_question_sheet_is_blind_and_reads_back(tmp_path):
    from ragtune.errors import InputError
    from ragtune.evaluation.ratings import QUESTION_COLUMNS, read_question_ratings, write_question_sheet

    syn, real = tmp_path / "syn.jsonl", tmp_path / "real.jsonl"
    syn.write_text(
        "".join(
            json.dumps({"id": f"s{i}", "question": f"Which harbour is number {i}?", "answer": "x", "context": "p"})
            + "\n"
            for i in range(6)
        )
    )
    real.write_text(
        "".join(
            json.dumps({"id": f"r{i}", "question": f"Which gate is number {i}?", "answers": ["y"]}) + "\n"
            for i in range(9)
        )
    )
    sheet, key = write_question_sheet(syn, tmp_path / "sheet.csv", real=real, n=4)
    import csv

    rows = list(csv.DictReader(sheet.open()))
    assert len(rows) == 8 and list(rows[0]) == QUESTION_COLUMNS  # nothing on the sheet says which is which
    assert not {"synthetic", "real"} & set(sheet.read_text().lower().replace(",", " ").split())
    sources = json.loads(key.read_text())
    assert sorted(v["source"] for v in sources.values()) == ["real"] * 4 + ["synthetic"] * 4
    for r in rows:
        r["good question (1-5)"] = "4" if sources[r["item"]]["source"] == "synthetic" else "5"
        r["answer right (y/n)"] = "y"
    with sheet.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    got = read_question_ratings(sheet)
    assert got["synthetic"]["mean"] == 4 and got["real"]["mean"] == 5 and got["real"]["answer_right"] == 1.0
    rows[0]["good question (1-5)"] = "9"
    with sheet.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(InputError, match="outside 1-5"):
        read_question_ratings(sheet)


@pytest.mark.parametrize("s_answer", [0.2, 0.45, 1.5])
def test_the_plan_fits_the_budget_and_grows_with_it(s_answer):
    from ragtune.evaluation.evaluate import EvaluateConfig, make_plan

    plans = {b: make_plan(100, 90, 103, EvaluateConfig(budget_min=b), s_answer) for b in (15, 30, 60)}
    for budget, plan in plans.items():
        if plan.test > 10:  # the floor of 10 test questions may overrun a tiny budget on a slow machine
            assert sum(plan.minutes.values()) <= budget * 1.02, (budget, plan.minutes)
        assert plan.synthetic >= 3 * plan.test and plan.unanswerable >= plan.test // 3
    assert plans[15].test <= plans[30].test <= plans[60].test
    assert plans[15].rag_ft_steps < plans[60].rag_ft_steps
    real = make_plan(100, 90, 103, EvaluateConfig(budget_min=15), s_answer, real_test=40)
    assert real.test == 40 and real.synthetic >= 20  # the synthetic questions are all for training


def test_past_the_test_cap_a_bigger_budget_buys_training_questions():
    from ragtune.evaluation.evaluate import MAX_TEST, EvaluateConfig, _ratios, make_plan

    plans = {b: make_plan(100, 90, 103, EvaluateConfig(budget_min=b), 0.2, candidates=10_000) for b in (15, 60)}
    assert plans[15].test < MAX_TEST and plans[15].synthetic == 3 * plans[15].test  # below the cap: as before
    capped = plans[60]
    assert capped.test == MAX_TEST and capped.synthetic > 3 * MAX_TEST  # the spare time buys training questions
    assert sum(capped.minutes.values()) <= 60 * 1.02
    assert capped.synthetic <= 12 * 90 + MAX_TEST  # a dozen per document at most
    # ... and the split still gives about MAX_TEST test questions, not a fixed share of many more.
    train, _, test = _ratios(capped.synthetic, capped.test)
    assert abs(test * capped.synthetic - MAX_TEST) <= 1 and train > 0.6
    no_training = make_plan(100, 90, 103, EvaluateConfig(budget_min=60, strategies=("base", "rag")), 0.2)
    assert no_training.synthetic == 3 * no_training.test  # nothing to train: no extra questions


def test_the_plan_prices_training_steps_at_this_machines_speed():
    from ragtune.evaluation.evaluate import EvaluateConfig, make_plan

    fast, slow = (make_plan(100, 90, 103, EvaluateConfig(budget_min=15), s) for s in (0.32, 0.64))
    # Twice as slow per answer: about half the steps, in about the same fine-tuning minutes.
    assert slow.rag_ft_steps <= fast.rag_ft_steps // 2 + 1 and slow.qa_steps <= fast.qa_steps // 2 + 1
    assert abs(slow.minutes["fine-tune"] - fast.minutes["fine-tune"]) < 0.15 * fast.minutes["fine-tune"]
    assert fast.rag_ft_steps >= 25  # the reader's gain needs its steps (see RAG_FT_SHARE)
    only = make_plan(100, 90, 103, EvaluateConfig(budget_min=15, strategies=("rag", "rag+ft")), 0.32)
    assert only.rag_ft_steps > fast.rag_ft_steps and only.qa_steps == 0  # no ft: rag+ft gets its time


def test_synthesis_keeps_to_its_time_once_it_has_the_questions_it_must_have():
    m = Scripted()
    cfg = SynthConfig(n=10, seed=1, batch=2)
    everything, _ = synthesize(chunks_of(DOCS), cfg, qg=m.qg, reader=m.reader)
    assert len(everything) == 10
    m = Scripted()
    qs, report = synthesize(chunks_of(DOCS), cfg, qg=m.qg, reader=m.reader, deadline_s=0.0, keep_at_least=3)
    assert 3 <= len(qs) < 10 and report.kept == len(qs)  # past the deadline, no batch starts once 3 are kept
    assert any("stopped at the time planned" in n for n in report.notes)
    assert not any("survived" in n for n in report.notes)  # not blamed on a filter
    m = Scripted()
    qs, _ = synthesize(chunks_of(DOCS), cfg, qg=m.qg, reader=m.reader, deadline_s=60.0, keep_at_least=3)
    assert len(qs) == 10  # in time: as without a deadline


def test_a_short_document_gives_more_than_one_answer_per_sentence():
    m = Scripted()
    one = {"doc0": DOCS["doc0"]}  # two sentences, several candidates each
    qs, report = synthesize(chunks_of(one), SynthConfig(n=4, seed=0), qg=m.qg, reader=m.reader)
    assert len(qs) == 4 and len({q.answer for q in qs}) == 4
    assert len({x["answer"] for x in m.asked}) == len(m.asked) >= 4  # each answer asked once


def test_a_sentences_second_candidate_is_tried_only_after_every_sentences_first_one():
    import random

    from ragtune.synth.generate import SynthReport, passage_candidates, plan_attempts

    text = (
        "In 1889 Gustave Eiffel of Paris built the Eiffel Tower for the World Fair with 300 workers and 7300 "
        "tonnes of iron. In 1931 Alfred Smith of New York opened the Empire State Building on Fifth Avenue at a "
        "cost of 41 million dollars."
    )
    rank = {}
    for _, cands in passage_candidates(text):
        assert len(cands) > 2  # the test needs sentences with several candidates
        rank |= {c.text: r for r, c in enumerate(cands)}
    chunks = make_chunks("doc0", [text])
    plan = plan_attempts(chunks, SynthConfig(n=100, oversample=1.0), random.Random(0), SynthReport("scripted"))
    ranks = [rank[a.answer] for a in plan]
    assert len(plan) == len(rank) and len({a.answer for a in plan}) == len(plan)  # every candidate once
    assert ranks == sorted(ranks)  # each sentence's likeliest first, then their second likeliest ...


def test_evaluate_retrains_when_the_training_questions_change(tmp_path, monkeypatch):
    """The fine-tuned adapters are reused only for the same configuration *and* the same training
    questions: an adapter trained on other questions could have seen this run's test questions."""
    from ragtune.evaluation import evaluate as ev
    from ragtune.evaluation.evaluate import EvaluateConfig, run_evaluate
    from ragtune.finetune import train as train_mod
    from ragtune.finetune.run import MANIFEST

    calls = []

    def fake_train(cfg, data, folder, index=None, progress=None):
        from dataclasses import asdict

        folder.mkdir(parents=True, exist_ok=True)
        calls.append((asdict(cfg), (data / "train.jsonl").read_text()))
        (folder / MANIFEST).write_text(json.dumps({"config": json.loads(json.dumps(asdict(cfg)))}))
        (folder / "results.json").write_text("{}")
        (folder / "adapter").mkdir(exist_ok=True)
        (folder / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": cfg.base_model}))
        return type("R", (), {"best_val_loss": 1.0, "best_step": cfg.max_steps})()

    monkeypatch.setattr(train_mod, "train", fake_train)
    folder = town_folder(tmp_path / "docs")
    m = Scripted()
    gens = {"qg": m.qg, "reader": m.reader, "base": m.reader, "ft": m.reader, "rag+ft": m.reader}
    cfg = EvaluateConfig(budget_min=3, strategies=("base", "ft", "rag+ft"), embedder="hashing-64")
    said = []
    run_evaluate([folder], tmp_path / "out", cfg, say=said.append, generators=gens)
    assert [(c["mode"], c["lr"]) for c, _ in calls] == [("qa", 3e-4), ("reader", ev.RAG_FT_LR)]
    run_evaluate([folder], tmp_path / "out", cfg, say=said.append, generators=gens)
    assert len(calls) == 2 and any(s.startswith("fine-tune ft: reusing") for s in said)
    (folder / "town3.txt").write_text("The town of Brey was founded in 1711 by Ola Venn. It lies on the river Tam.")
    said.clear()
    run_evaluate([folder], tmp_path / "out", cfg, say=said.append, generators=gens)
    assert len(calls) == 4 and not any("reusing" in s and "fine-tune" in s for s in said)
    assert calls[2][0] == calls[0][0] and calls[2][1] != calls[0][1]  # same configuration, other questions


def test_the_gate_is_calibrated_on_the_questions_the_round_trip_reader_answered_first(tmp_path, monkeypatch):
    from ragtune.evaluation import evaluate as ev

    synth = tmp_path / "synthetic.jsonl"
    ranks = {"s0": 3, "s1": 1, "s2": 2, "s3": 1, "s4": 1}
    synth.write_text("".join(json.dumps({"id": i, "scores": {"round_trip_rank": r}}) + "\n" for i, r in ranks.items()))
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"id": i, "question": f"q {i}?", "answer": "a", "doc_id": f"d{i}"} for i in ranks]
    failed = {"id": "t0", "question": "q t0?", "answer": "a", "doc_id": "dt"}  # trained on, not ranked: not tuned on
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*rows[:4], failed]))
    (data / "validation.jsonl").write_text(json.dumps(rows[4]) + "\n")
    seen = {}

    def no_tuning(index, examples):
        raise RagtuneError("not tuned here")

    monkeypatch.setattr(ev, "calibrate_gate",
                        lambda index, gen, ex, say, split: seen.update(ids=[e.id for e in ex], split=split))
    monkeypatch.setattr("ragtune.tuning.tune_retrieval", no_tuning)
    out = ev.tune_phase(None, data, None, 3, lambda m: None, ranks=ev.round_trip_ranks(synth))
    # one validation question is too few for a gate: the training questions then, rank 1 first (validation's
    # too), then 2, then 3
    assert seen["ids"] == ["s1", "s3", "s4"] and seen["split"] == "training"
    # with enough validation questions (a gate needs 8), those alone: rag+ft's adapter never trained on them
    val = [{"id": f"v{i}", "question": f"q v{i}?", "answer": "a", "doc_id": f"dv{i}"} for i in range(9)]
    (data / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in val))
    synth.write_text("".join(json.dumps({"id": f"v{i}", "scores": {"round_trip_rank": 2 - i % 2}}) + "\n"
                             for i in range(9)))  # fmt: skip
    ev.tune_phase(None, data, None, 6, lambda m: None, ranks=ev.round_trip_ranks(synth))
    assert seen["split"] == "validation" and seen["ids"] == ["v1", "v3", "v5", "v7", "v0", "v2"]
    assert [e.id for e in out["examples"]] == ["s1", "s3", "s4", "s2", "s0"]


def test_the_readers_own_questions_are_left_out_of_the_test_only_when_the_rest_suffice():
    from ragtune.evaluation import evaluate as ev

    ranks = {f"q{i}": 1 + i % 3 for i in range(90)}  # a third the reader's own first answer
    own, note = ev._readers_own(ranks, test=30)
    assert own == {f"q{i}" for i in range(0, 90, 3)} and note == ""
    own, note = ev._readers_own(ranks, test=80)  # 60 others: more than half the questions, so still left out
    assert len(own) == 30 and note == ""
    few = {f"q{i}": 1 if i < 80 else 2 for i in range(90)}  # 10 others for a 30-question test
    own, note = ev._readers_own(few, test=30)
    assert own == set() and "only 10 are not its own first answer" in note
    own, note = ev._readers_own({f"q{i}": 1 for i in range(50)}, test=20)
    assert own == set() and "ranked no answers" in note
