import json
import re
import time
from dataclasses import asdict
from html.parser import HTMLParser

import pytest

from ragtune.documents import Document, QAExample
from ragtune.errors import InputError
from ragtune.evaluation.compare import ExperimentConfig, load_experiment, load_results, run_experiment
from ragtune.evaluation.freshness import edit_facts, is_fresh, is_stale, value_kind
from ragtune.evaluation.metrics import corpus_bleu, exact_match, f1_score, normalize_answer, rouge_l
from ragtune.evaluation.ratings import read_ratings, write_rate_sheet
from ragtune.evaluation.report import render
from ragtune.evaluation.stats import bootstrap_ci, paired_bootstrap
from ragtune.evaluation.strategies import Strategy
from ragtune.index import Index
from ragtune.testing import ScriptedGenerator


def test_squad_official_rules():
    # Cases in the spirit of the official evaluate-v1.1.py: articles, punctuation, case, whitespace.
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert exact_match("the Denver Broncos", ["Denver Broncos", "Broncos"]) == 1.0
    assert exact_match("Denver", ["Denver Broncos"]) == 0.0
    assert f1_score("Broncos", ["Denver Broncos"]) == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert f1_score("Santa Clara, California", ["Levi's Stadium", "Santa Clara"]) == pytest.approx(0.8)
    assert f1_score("", ["x"]) == 0.0
    assert rouge_l("Denver Broncos", ["Denver Broncos"]) == pytest.approx(1.0)
    assert 0 < rouge_l("the Broncos of Denver", ["Denver Broncos"]) < 1
    assert corpus_bleu(["the cat sat on the mat"], [["the cat sat on the mat"]]) == pytest.approx(100.0)


def test_bootstrap_is_deterministic_and_paired_test_separates():
    x = [float(i % 3 == 0) for i in range(60)]
    a, b = bootstrap_ci(x, 500, seed=7), bootstrap_ci(x, 500, seed=7)
    assert a == b and a.low <= a.mean <= a.high and a.low < a.high
    same = paired_bootstrap(x, x, ("a", "b"), "f1", 500, 0)
    assert same.diff == 0 and same.p_value == 1.0
    good = [1.0] * 30 + [0.0] * 10
    bad = [0.0] * 30 + [0.0] * 10
    t = paired_bootstrap(good, bad, ("good", "bad"), "f1", 500, 0)
    assert t.diff == pytest.approx(0.75) and t.p_value < 0.05 and t.low > 0


def test_fact_editor_changes_passage_and_gold():
    docs = [
        Document("d1", "The bridge opened in 1932 and cost 40 million."),
        Document("d2", "It was designed by Anna Weber in Berlin."),
    ]
    exs = [
        QAExample("q1", "When did the bridge open?", ("1932",), ("d1",)),
        QAExample("q2", "Who designed it?", ("Anna Weber",), ("d2",)),
        QAExample("q3", "Who else?", ("Karl Marx",), ("d9",)),
    ]
    edited, edits = edit_facts(docs, exs, n=5, seed=1)
    assert {e.example.id for e in edits} == {"q1", "q2"}
    by_doc = {d.id: d for d in edited}
    for ed in edits:
        text = by_doc[ed.doc_id].text
        assert ed.old not in text and ed.new in text and ed.example.answers == (ed.new,)
        assert value_kind(ed.new) == value_kind(ed.old)
    year = next(e for e in edits if e.kind == "year")
    assert year.new.isdigit() and year.new != "1932"
    assert next(e for e in edits if e.kind == "name").new == "Karl Marx"  # another name from the corpus
    assert is_fresh(f"in {year.new}", year) and not is_fresh("in 1932", year) and is_stale("1932", year)


def test_fact_editor_keeps_type_unit_and_magnitude():
    docs = [
        Document("Lakes/0", "Tamsin lake is 40 metres deep."),
        Document("Lakes/1", "The abbey was founded in the 16th century."),
        Document("Lakes/2", "The Kelvor bridge was designed by Ada Renn."),
        Document("Lakes/3", "The mill cost $3,400,000 to build."),
        Document("Lakes/4", "The town follows Catholicism."),
        Document("Lakes/5", "Its mayor is Tom Hale."),
    ]
    exs = [
        QAExample("q0", "How deep is Tamsin lake?", ("40 metres",), ("Lakes/0",)),
        QAExample("q1", "When was the abbey founded?", ("16th century",), ("Lakes/1",)),
        QAExample("q2", "Who designed the Kelvor bridge?", ("Ada Renn",), ("Lakes/2",)),
        QAExample("q3", "How much did the mill cost?", ("$3,400,000",), ("Lakes/3",)),
        QAExample("q4", "What does the town follow?", ("Catholicism",), ("Lakes/4",)),
        QAExample("q5", "Who is the mayor?", ("Tom Hale",), ("Lakes/5",)),
        QAExample("q6", "Who funded the Kelvor bridge?", ("Catholic Church",), ("Other/0",)),
    ]
    for seed in range(5):
        _, edits = edit_facts(docs, exs, n=10, seed=seed)
        by_q = {e.example.id: e for e in edits}
        depth = by_q["q0"].new
        assert depth.endswith(" metres") and 20 <= int(depth.split()[0]) <= 76 and depth != "40 metres"
        assert re.fullmatch(r"\d+(st|nd|rd|th) century", by_q["q1"].new) and by_q["q1"].new != "16th century"
        assert by_q["q2"].new == "Tom Hale" and by_q["q5"].new == "Ada Renn"  # a person for a person, same article
        cost = by_q["q3"].new
        assert cost.startswith("$") and len(cost) == len("$3,400,000") and cost != "$3,400,000"
        assert "q4" not in by_q  # "what" is too vague a type: no believable substitute, left alone


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.th, self.tags, self._in_th = [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._in_th = tag == "th"

    def handle_data(self, data):
        if self._in_th:
            self.th.append(data.strip())

    def handle_endtag(self, tag):
        self._in_th = False


def _answers_from_sources(messages):
    """Right when given the sources: the first capitalised word after 'capital of X.' -> its city."""
    user = messages[-1]["content"]
    for city in ("Paris", "Rome", "Berlin", "Madrid"):
        if city in user and "capital" in user:
            q = user.rsplit("Question:", 1)[-1]
            country = {"France": "Paris", "Italy": "Rome", "Germany": "Berlin"}
            for c, cap in country.items():
                if c in q and cap in user:
                    return f"{cap} [1]"
    return "I don't know based on the sources."


def test_small_compare_with_scripted_generators(tmp_path, corpus_dir, embedder, small_chunking):
    Index.create(tmp_path / "ix", embedder=embedder, chunking=small_chunking).ingest([corpus_dir])
    qs = [
        {"id": f"{c}{i}", "question": f"What is the capital of {c}?", "answers": [cap], "doc_id": doc}
        for i in range(8)
        for c, cap, doc in (("France", "Paris", "corpus/paris.txt"), ("Italy", "Rome", "corpus/rome.txt"))
    ]
    (tmp_path / "q.jsonl").write_text("\n".join(json.dumps(q) for q in qs))
    (tmp_path / "u.jsonl").write_text(
        json.dumps({"id": "u1", "question": "What is the capital of Peru?", "answers": ["Lima"], "doc_id": "peru"})
    )
    cfg = ExperimentConfig(
        index=str(tmp_path / "ix"),
        questions=str(tmp_path / "q.jsonl"),
        unanswerable=str(tmp_path / "u.jsonl"),
        strategies=(Strategy("base", False), Strategy("rag", True)),
        fresh_edits=0,
        bootstrap=200,
    )
    class SlowGenerator(ScriptedGenerator):  # a model call costs 0.8 s, whatever the batch
        def generate(self, prompts, max_new_tokens=48):
            time.sleep(0.8)
            return super().generate(prompts, max_new_tokens)

    gens = {"base": ScriptedGenerator(lambda m: "Madrid"), "rag": SlowGenerator(_answers_from_sources)}
    res = run_experiment(cfg, tmp_path / "out", generators=gens)
    A = res.aggregates
    # Latency: a question asked alone waits for a whole model call; in batches of 8 the call is shared
    # (0.1 s each, and the rest of the pipeline's time: 0.13 s in all was seen on a busy machine).
    assert A["rag"]["latency_alone_s"] >= 0.8 > 2 * A["rag"]["latency_p50_s"]
    assert A["rag"]["f1"]["mean"] == 100.0 and A["rag"]["em"]["mean"] == 100.0
    assert A["base"]["f1"]["mean"] == 0.0
    assert A["rag"]["abstain_unanswerable"]["mean"] == 1.0 and A["base"]["abstain_unanswerable"]["mean"] == 0.0
    assert A["rag"]["citation_precision"] == 1.0 and A["rag"]["recall_at_k"] == 1.0
    assert A["base"]["recall_at_k"] is None
    p = next(p for p in res.paired if p["metric"] == "f1")
    assert (p["a"], p["b"]) == ("base", "rag") and p["diff"] == -100.0 and p["p_value"] < 0.05
    assert len(res.records) == 2 * 17
    # What ran each model is recorded (index-info shows the embedder's too).
    assert res.runtime["rag"] == {"name": "scripted", "backend": "SlowGenerator", "device": "cpu"}
    assert res.runtime["embedder"]["backend"] == "HashingEmbedder"
    assert Index.open(tmp_path / "ix", embedder=embedder).info().embedder_runtime["backend"] == "HashingEmbedder"
    # Files: results.json round-trips, records.csv has a row per question and strategy.
    again = load_results(tmp_path / "out")
    assert again.aggregates == json.loads(json.dumps(res.aggregates))
    assert len((tmp_path / "out" / "records.csv").read_text().strip().splitlines()) == 1 + 34

    page = render(res)
    parser = _Collect()
    parser.feed(page)
    assert "base" in parser.th and "rag" in parser.th and "svg" in parser.tags and "script" in parser.tags
    assert "http" not in page.replace("http-equiv", "")  # self-contained: nothing to fetch
    assert "Recommendation for this data: rag" in page
    assert "<td>ScriptedGenerator, cpu</td>" in page and "(HashingEmbedder, cpu)" in page  # what ran where
    assert "Latency, one question alone (s)" in page

    # Blind rating sheet out, scores back in.
    sheet, key = write_rate_sheet(res, tmp_path / "sheet.csv")
    rows = sheet.read_text().splitlines()
    assert "rag" not in rows[1] and "base" not in rows[1].split(",")[3]
    mapping = json.loads(key.read_text())
    import csv

    filled = list(csv.DictReader(sheet.open()))
    for r in filled:
        r["score (1-5)"] = "5" if mapping[r["item"]][r["label"]] == "rag" else "1"
    with sheet.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(filled[0]))
        w.writeheader()
        w.writerows(filled)
    assert read_ratings(sheet) == {"base": {"mean": 1.0, "n": 17}, "rag": {"mean": 5.0, "n": 17}}


def test_experiment_file_and_leak_check(tmp_path, corpus_dir, embedder, small_chunking):
    Index.create(tmp_path / "ix", embedder=embedder, chunking=small_chunking).ingest([corpus_dir])
    (tmp_path / "q.jsonl").write_text(
        json.dumps({"question": "Where?", "answers": ["Paris"], "doc_id": "corpus/paris.txt"})
    )
    (tmp_path / "exp.toml").write_text(
        '[experiment]\nindex = "ix"\nquestions = "q.jsonl"\nunanswerable = "q.jsonl"\nfresh_edits = 0\n'
        '[[strategy]]\nname = "rag"\nretrieval = true\n[prices]\ncpu_hour = 0.1\n'
    )
    cfg = load_experiment(tmp_path / "exp.toml")
    assert (
        cfg.index == str(tmp_path / "ix") and cfg.prices.cpu_hour == 0.1 and [s.name for s in cfg.strategies] == ["rag"]
    )
    from ragtune.errors import ConfigError

    with pytest.raises(ConfigError, match="unanswerable"):
        run_experiment(cfg, tmp_path / "out", generators={"rag": ScriptedGenerator(lambda m: "x")})
    (tmp_path / "bad.toml").write_text('[experiment]\nindex = "ix"\nquestions = "q.jsonl"\nbogus = 1\n')
    with pytest.raises(ConfigError, match="bogus"):
        load_experiment(tmp_path / "bad.toml")


def test_edit_sheet_is_blind_and_reads_back_believability(tmp_path):
    import csv

    from ragtune.evaluation.compare import Results
    from ragtune.evaluation.ratings import read_edit_ratings, write_edit_sheet

    edits = [
        {"question": f"q{i}", "doc_id": f"d{i}", "old": str(1900 + i), "new": str(1950 + i), "kind": "year",
         "sentence": f"The bridge number {i} opened in {1950 + i}."}
        for i in range(20)
    ]  # fmt: skip
    res = Results(config={}, strategies=[], freshness={"edits": edits})
    sheet, key = write_edit_sheet(res, tmp_path / "edits.csv", seed=3)
    mapping = json.loads(key.read_text())
    rows = list(csv.DictReader(sheet.open()))
    shown = {r["item"]: r["sentence"] for r in rows}
    assert {m["edited"] for m in mapping.values()} == {True, False}  # both kinds, mixed
    for item, m in mapping.items():
        assert (m["new"] in shown[item]) == m["edited"] and (m["old"] in shown[item]) != m["edited"]
    for r in rows:  # a rater who believes every original and half of the edits
        r["believable (y/n)"] = "y" if not mapping[r["item"]]["edited"] or int(r["item"][1:]) % 2 else "n"
    with sheet.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    got = read_edit_ratings(sheet)
    n_edited = sum(m["edited"] for m in mapping.values())
    believed = sum(1 for item, m in mapping.items() if m["edited"] and int(item[1:]) % 2)
    assert got["original"]["believable"] == 1.0 and got["edited"] == {"believable": believed / n_edited, "n": n_edited}
    with pytest.raises(InputError, match="no edited facts"):
        write_edit_sheet(Results(config={}, strategies=[]), tmp_path / "x.csv")


def _tied_results(fresh_rag: list[bool], fresh_ft: list[bool], test_freshness: bool = True):
    """rag and rag+ft tied on F1 (rag+ft a hair ahead), rag cheaper; freshness as given, one record per edit."""
    from ragtune.evaluation.compare import Results
    from ragtune.evaluation.strategies import EvalRecord

    records = [
        EvalRecord(s, f"e{i}", "edited", "q", ["a"], "a", abstained=False, fresh=f)
        for s, fr in (("rag", fresh_rag), ("rag+ft", fresh_ft))
        for i, f in enumerate(fr)
    ]
    res = Results(config={}, strategies=[{"name": "rag", "adapter": None}, {"name": "rag+ft", "adapter": "ft-raft"}],
                  records=records, freshness={"edits": [{}] * len(fresh_rag)})  # fmt: skip
    res.aggregates = {
        s: {"f1": {"mean": f1, "low": 0, "high": 100}, "n_answerable": 200, "fresh_rate": sum(fr) / len(fr)}
        for s, f1, fr in (("rag", 44.4, fresh_rag), ("rag+ft", 44.6, fresh_ft))
    }
    res.costs = {"rag": {"setup_usd": 0.0, "per_1000_questions_usd": 0.01},
                 "rag+ft": {"setup_usd": 0.02, "per_1000_questions_usd": 0.01}}  # fmt: skip
    res.paired = [{"a": "rag", "b": "rag+ft", "metric": "f1", "diff": -0.2, "low": -3.0, "high": 2.6, "p_value": 0.9}]
    if test_freshness:
        fa, fb = ([100.0 * f for f in fr] for fr in (fresh_rag, fresh_ft))
        res.paired.append(asdict(paired_bootstrap(fa, fb, ("rag", "rag+ft"), "fresh", 1000, 0)))
    return res


def test_recommendation_weighs_freshness_by_its_noise_too():
    from ragtune.evaluation.report import recommendation

    def pick(res) -> str:
        return re.search(r"Recommendation for this data: (.+?)</b>", recommendation(res)[-1]).group(1)

    # One edit of twelve more for rag+ft is noise: the cheaper rag, tied on F1, is the pick.
    one_more = _tied_results([True] * 10 + [False] * 2, [True] * 11 + [False])
    assert pick(one_more) == "rag"
    assert "as accurate and as fresh as the best within noise, and cheaper" in recommendation(one_more)[-1]
    # ...and what "within noise" spans: rag+ft's lead +0.2, its interval [-2.6, +3.0] (the test took rag - rag+ft).
    assert "rag+ft − rag: F1 +0.2, 95% interval [-2.6, +3.0] on 200 questions" in recommendation(one_more)[-1]
    # rag+ft really fresher (12 of 12 against 3 of 12): it stays the pick.
    assert pick(_tied_results([True] * 3 + [False] * 9, [True] * 12)) == "rag+ft"
    # Results written before freshness was tested compare the rates as they are.
    assert pick(_tied_results([True] * 10 + [False] * 2, [True] * 11 + [False], test_freshness=False)) == "rag+ft"


def test_a_synthetic_tie_for_the_fine_tuned_reader_says_not_shown_rather_than_no_gain():
    from ragtune.evaluation.report import recommendation

    def caveat(res) -> list[str]:
        return [s for s in recommendation(res) if "understated" in s]

    tied = _tied_results([True] * 10 + [False] * 2, [True] * 11 + [False])  # rag picked, rag+ft tied with it
    assert caveat(tied) == []  # no source recorded: nothing said about synthetic questions
    tied.questions = {"source": "real"}
    assert caveat(tied) == []
    tied.questions = {"source": "synthetic"}
    (said,) = caveat(tied)
    assert "<b>rag+ft</b>" in said and "--questions real.jsonl" in said and "not shown" in said
    # rag+ft picked (really fresher): no caveat; nor when rag+ft is significantly behind.
    fresher = _tied_results([True] * 3 + [False] * 9, [True] * 12)
    fresher.questions = {"source": "synthetic"}
    assert caveat(fresher) == []
    tied.paired[0]["p_value"] = 0.01
    tied.aggregates["rag"]["f1"]["mean"] = 50.0
    assert caveat(tied) == []
