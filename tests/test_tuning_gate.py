"""Weighted fusion, `tune`, the answerability gate, extracted answers and answer shaping."""

import random
from dataclasses import replace

import pytest

from ragtune.config import RagConfig
from ragtune.documents import Document, Hit, QAExample
from ragtune.errors import ConfigError, InputError
from ragtune.gate import Gate, fit_gate
from ragtune.index import Index
from ragtune.prompts import shape_answer
from ragtune.rag import EVIDENCE_FEATURES, Evidence, Pipeline, answer_spans
from ragtune.retrieval import fuse, reciprocal_rank_fusion
from ragtune.testing import ScriptedGenerator, make_chunks
from ragtune.tuning import tune_retrieval


def _hits(ids, via):
    chunks = {c.id: c for i in ids for c in make_chunks(i.split("#")[0], ["x"])}
    return [Hit(chunks[i], 1.0 / (r + 1), r + 1, via) for r, i in enumerate(ids)]


def test_fusion_weights_reach_both_single_orders_and_keep_raw_scores():
    dense = _hits(["a#0", "b#0", "c#0"], "dense")
    text = _hits(["c#0", "d#0", "a#0"], "bm25")
    ids = lambda hs: [h.chunk.id for h in hs]  # noqa: E731
    assert ids(fuse(dense, text, 3, "rrf", 1.0)) == ["a#0", "b#0", "c#0"]
    assert ids(fuse(dense, text, 3, "rrf", 0.0)) == ["c#0", "d#0", "a#0"]
    assert ids(fuse(dense, text, 4, "score", 1.0))[:3] == ["a#0", "b#0", "c#0"]
    assert ids(fuse(dense, text, 4, "rrf", 0.5)) == ids(reciprocal_rank_fusion([dense, text], 4))
    top = fuse(dense, text, 4, "rrf", 0.5)
    a = next(h for h in top if h.chunk.id == "a#0")
    assert (a.dense_score, a.text_score) == (1.0, 1.0 / 3)
    assert next(h for h in top if h.chunk.id == "b#0").text_score is None
    with pytest.raises(ConfigError, match="fusion"):
        fuse(dense, text, 3, "max")
    with pytest.raises(ConfigError, match="dense_weight"):
        RagConfig(dense_weight=1.5)


FACTS = [
    ("alder", "The Alder bridge was built by engineer Mara Voss in 1871."),
    ("birch", "Birch lake is 40 metres deep and lies north of Ostrel."),
    ("cedar", "The Cedar tower holds a bell cast in 1604 by Hugo Lind."),
    ("dunmore", "Dunmore castle was rebuilt after a fire in 1790."),
    ("elm", "Elm station opened in 1902 and serves the Tarn railway."),
    ("fenwick", "The Fenwick mill ground flour for Karsby until 1955."),
    ("garth", "Garth island has a lighthouse painted red and white."),
    ("holm", "The Holm festival is held every August on the green."),
    ("ivel", "The river Ivel floods the meadows each spring."),
    ("juniper", "Juniper hall keeps a library of 12,000 books."),
    ("kelvor", "The Kelvor bridge was designed by Ada Renn in 1888."),
    ("larch", "Larch school was founded by the weavers guild in 1820."),
]
QUESTIONS = [
    ("Who built the Alder bridge?", "Mara Voss", "alder"),
    ("How deep is Birch lake?", "40 metres", "birch"),
    ("Who cast the bell in the Cedar tower?", "Hugo Lind", "cedar"),
    ("When was Dunmore castle rebuilt?", "1790", "dunmore"),
    ("When did Elm station open?", "1902", "elm"),
    ("Until when did the Fenwick mill grind flour?", "1955", "fenwick"),
    ("What colour is the lighthouse on Garth island?", "red and white", "garth"),
    ("When is the Holm festival held?", "every August", "holm"),
    ("What does the river Ivel flood?", "the meadows", "ivel"),
    ("How many books does Juniper hall keep?", "12,000", "juniper"),
    ("Who designed the Kelvor bridge?", "Ada Renn", "kelvor"),
    ("Who founded Larch school?", "the weavers guild", "larch"),
]


@pytest.fixture
def facts_index(tmp_path, embedder):
    index = Index.create(tmp_path / "facts", embedder=embedder)
    index.ingest([Document(d, text, d.title()) for d, text in FACTS])
    return Index.open(tmp_path / "facts", embedder=embedder)


def test_tune_is_never_below_the_better_single_retriever_and_is_recorded(facts_index):
    examples = [QAExample(str(i), q, (a,), (d,)) for i, (q, a, d) in enumerate(QUESTIONS)]
    report = tune_retrieval(facts_index, examples)
    best_single = max(report.before["dense"]["recall@5"], report.before["bm25"]["recall@5"])
    assert report.after["recall@5"] >= best_single
    assert report.after["recall@5"] == max(t.recall_at_k for t in report.trials)
    reopened = Index.open(facts_index.url).rag_config()
    assert (reopened.fusion, reopened.dense_weight, reopened.k) == (
        report.chosen["fusion"],
        report.chosen["dense_weight"],
        report.chosen["k"],
    )
    assert any("chosen:" in line for line in report.lines())
    with pytest.raises(InputError, match="at least 10 questions"):
        tune_retrieval(facts_index, examples[:3])


def _evidence(rng, good: bool) -> Evidence:
    mu = 0.7 if good else 0.35
    return Evidence(dense_top=rng.gauss(mu, 0.08), text_top=rng.gauss(8 if good else 4, 1.5), support=1.0)


def test_gate_meets_its_false_abstention_target_and_survives_the_manifest(facts_index):
    rng = random.Random(0)
    ans = [_evidence(rng, True) for _ in range(60)]
    un = [_evidence(rng, False) for _ in range(60)]
    gate = fit_gate(ans, un, target=0.1)
    assert "support" not in gate.features  # constant: dropped
    cal = gate.calibration
    assert cal["false_abstention"] <= 0.1 and cal["abstention"] >= 0.8
    assert gate.probability(Evidence(dense_top=0.9, text_top=10)) > gate.probability(Evidence(dense_top=0.2))
    facts_index.set_gate(gate, "scripted")
    again = Index.open(facts_index.url).gate("scripted")
    assert isinstance(again, Gate) and again.threshold == gate.threshold and again.weights == gate.weights
    assert Index.open(facts_index.url).gate("another-model") is None
    gen = ScriptedGenerator(lambda m: "x")
    assert Pipeline(Index.open(facts_index.url), gen).gate.threshold == gate.threshold  # the index's, by name
    with pytest.raises(InputError, match="at least 8"):
        fit_gate(ans[:3], un)


def test_a_nonnegative_gate_never_weighs_evidence_against_answering():
    # 10 + 10 questions: similarity separates them; by chance, BM25 runs the wrong way. An
    # unconstrained fit gives BM25 a negative weight (a better match counting against answering).
    rng = random.Random(3)
    ans = [
        Evidence(dense_top=rng.gauss(0.7, 0.1), text_per_word=rng.gauss(5, 1), agreement=rng.random())
        for _ in range(10)
    ]
    un = [
        Evidence(dense_top=rng.gauss(0.4, 0.1), text_per_word=rng.gauss(7, 1), agreement=rng.random())
        for _ in range(10)
    ]
    free = dict(zip(*(lambda g: (g.features, g.weights))(fit_gate(ans, un))))
    assert free["text_per_word"] < 0  # the default, free fit follows the sample
    gate = fit_gate(ans, un, nonnegative=True)
    w = dict(zip(gate.features, gate.weights))
    assert all(v >= 0 for v in gate.weights) and w["dense_top"] > 0 and w["text_per_word"] == 0
    # more of any evidence never lowers the confidence
    e = Evidence(dense_top=0.5, text_per_word=6, agreement=0.5)
    assert gate.probability(Evidence(dense_top=0.5, text_per_word=9, agreement=0.5)) >= gate.probability(e)
    assert gate.probability(Evidence(dense_top=0.8, text_per_word=6, agreement=0.5)) > gate.probability(e)


def test_the_gate_reads_bm25_per_question_word_not_raw():
    """A raw BM25 score grows with the question's length: a gate calibrated on short synthetic
    questions read long real ones as answerable (PubMedQA, 59% abstention). The gate reads the score
    per content word of the question; the raw one never moves it."""
    rng = random.Random(6)
    ans = [Evidence(dense_top=rng.gauss(0.6, 0.1), text_top=40.0, text_per_word=rng.gauss(3, 0.5)) for _ in range(20)]
    un = [Evidence(dense_top=rng.gauss(0.4, 0.1), text_top=0.0, text_per_word=rng.gauss(1, 0.5)) for _ in range(20)]
    gate = fit_gate(ans, un)
    assert "text_top" not in gate.features and "text_top" not in EVIDENCE_FEATURES and "text_per_word" in gate.features
    e = Evidence(dense_top=0.5, text_top=4, text_per_word=2.0)
    assert gate.probability(replace(e, text_top=40)) == gate.probability(e)
    assert gate.probability(replace(e, text_per_word=3.0)) > gate.probability(e)


def test_explain_only_blames_evidence_below_its_calibration_mean():
    # On this sample BM25 happens to be higher on the unanswerable questions: an unconstrained fit
    # then blames a high BM25 score ("weakest evidence: best BM25 score per question word 2.0").
    rng = random.Random(4)
    names = ("dense_top", "text_per_word", "agreement", "context_top", "support", "logprob", "margin")
    labels = dict(zip(names, ["best similarity", "best BM25 score per question word", "retriever agreement",
                              "best sentence relevance", "answer support", "answer log-prob per token",
                              "lead over the next span"]))  # fmt: skip
    ans = [Evidence(**{f: rng.gauss(0.3 if i == 1 else 1.0, 1) for i, f in enumerate(names)}) for _ in range(30)]
    un = [Evidence(**{f: rng.gauss(1.0 if i == 1 else 0.3, 1) for i, f in enumerate(names)}) for _ in range(30)]
    gate = fit_gate(ans, un)
    for _ in range(200):
        ev = Evidence(**{f: rng.gauss(0.6, 1.5) for f in names})
        why = gate.explain(ev, gate.probability(ev))
        for f, m, s in zip(gate.features, gate.mean, gate.scale):
            if (getattr(ev, f) - m) / s >= 0:
                assert labels[f] not in why, (f, why)


def test_gate_fitted_on_right_answers_keeps_the_threshold_on_all_answerable_ones():
    rng = random.Random(5)
    right = [Evidence(dense_top=rng.gauss(0.75, 0.05), logprob=rng.gauss(-1, 0.3)) for _ in range(30)]
    wrong = [Evidence(dense_top=rng.gauss(0.45, 0.05), logprob=rng.gauss(-3, 0.3)) for _ in range(10)]
    un = [Evidence(dense_top=rng.gauss(0.4, 0.05), logprob=rng.gauss(-3, 0.3)) for _ in range(40)]
    gate = fit_gate(right + wrong, un, 0.1, correct=[True] * 30 + [False] * 10)
    assert gate.calibration["fitted_on"] == 30 and gate.calibration["answerable"] == 40
    assert gate.calibration["false_abstention"] <= 0.1  # counted over every answerable question
    # with too few right answers to fit on, all answerable questions are used
    assert fit_gate(right + wrong, un, correct=[False] * 33 + [True] * 7).calibration["fitted_on"] == 40
    with pytest.raises(InputError, match="labels"):
        fit_gate(right, un, correct=[True])


def test_a_gate_recorded_by_an_older_version_still_loads_and_decides():
    old = {  # as `ragtune tune` wrote it before the weights were constrained (negative weights included)
        "features": ["dense_top", "text_top", "agreement", "context_top", "logprob", "margin"],
        "mean": [0.5, 9.0, 0.4, 0.8, -1.5, 2.0],
        "scale": [0.1, 3.0, 0.2, 0.2, 0.8, 1.5],
        "weights": [1.2, -0.3, 0.4, 0.9, 1.1, -0.2],
        "bias": 0.1,
        "threshold": 0.35,
        "target_false_abstention": 0.1,
        "calibration": {"answerable": 24, "unanswerable": 22, "false_abstention": 0.08, "abstention": 0.7},
    }
    gate = Gate.from_dict(old)
    strong = Evidence(dense_top=0.8, text_top=12, agreement=0.8, context_top=1.0, logprob=-0.5, margin=3)
    weak = Evidence(dense_top=0.3, text_top=4, agreement=0.1, context_top=0.5, logprob=-3, margin=0.2)
    assert gate.probability(strong) > gate.threshold > gate.probability(weak)
    assert "best similarity" in gate.explain(weak, gate.probability(weak))


def test_pipeline_gate_abstains_with_a_reason_and_exclusion_hides_the_document(facts_index):
    rng = random.Random(1)
    gate = fit_gate([_evidence(rng, True) for _ in range(40)], [_evidence(rng, False) for _ in range(40)])
    gen = ScriptedGenerator(lambda m: "Mara Voss [1]")
    pipe = Pipeline(facts_index, gen, RagConfig(k=3), gate=gate)
    strict = Gate(gate.features, gate.mean, gate.scale, gate.weights, gate.bias, 1.01)  # refuses everything
    refused = Pipeline(facts_index, gen, RagConfig(k=3), gate=strict).answer("Who built the Alder bridge?")
    assert refused.abstained and refused.citations == [] and "confidence" in refused.abstain_reason
    assert refused.evidence is not None and refused.raw == "Mara Voss [1]"
    ev = refused.evidence  # BM25 per content word of "Who built the Alder bridge?" (built, alder, bridge)
    assert ev.text_top > 0 and ev.text_per_word == pytest.approx(ev.text_top / 3)
    kept = pipe.answer_batch(["Who built the Alder bridge?"], exclude_docs=[{"alder"}])[0]
    assert all(h.chunk.doc_id != "alder" for h in kept.hits) and kept.hits


class SpanScorer(ScriptedGenerator):
    """A scripted model that can score continuations: it likes those containing `word`."""

    def __init__(self, word):
        super().__init__(lambda m: "unused")
        self.word = word
        self.scored: list[list[str]] = []

    def score(self, prompt, continuations):
        self.scored.append(list(continuations))
        return [(-1.0 if self.word in c else -9.0) - 0.01 * len(c) for c in continuations]


def test_extract_mode_answers_with_a_cited_span_of_the_sources(facts_index):
    gen = SpanScorer("Ada Renn")
    ans = Pipeline(facts_index, gen, RagConfig(k=3), gate=False).answer("Who designed the Kelvor bridge?")
    assert ans.text == "Ada Renn" and not ans.abstained
    assert ans.citations and ans.citations[0].doc_id == "kelvor" and "Ada Renn" in ans.citations[0].snippet
    assert ans.evidence.logprob < 0 and ans.evidence.margin > 0
    assert all(any(s in src.text for src in ans.sources) for s in gen.scored[0])
    assert len({src.text for src in ans.sources for s in gen.scored[0] if s in src.text}) == 1  # one sentence read
    # a generator with an adapter keeps writing its answers (auto), unless extraction is asked for
    gen.adapter = "runs/raft"
    assert not Pipeline(facts_index, gen, RagConfig(k=3), gate=False).extracts
    assert Pipeline(facts_index, gen, RagConfig(k=3, answer_mode="extract"), gate=False).extracts
    with pytest.raises(ConfigError, match="cannot score"):
        Pipeline(facts_index, ScriptedGenerator(lambda m: "x"), RagConfig(answer_mode="extract"))


def test_answer_spans_offer_yes_and_no_for_a_polar_question():
    from ragtune.context import Source

    src = [Source(1, "a#0", "a", "A", "Aspirin lowered the risk of stroke in 1998 trials.", 1.0)]
    spans = [(c.text, c.source) for c in answer_spans("Does aspirin lower the risk of stroke?", src)]
    assert spans[:2] == [("yes", 1), ("no", 1)] and ("1998", 1) in spans
    assert "yes" not in [c.text for c in answer_spans("When were the trials?", src)]


@pytest.mark.parametrize(
    "raw,shaped",
    [
        ("The answer is: Paris.", "Paris"),
        ("Answer: 1066 [1]", "1066 [1]"),
        ("According to the sources [2], the Normans [2].", "the Normans [2]"),
        (
            "Paris is the capital of France and lies on the Seine [1].",
            "Paris is the capital of France and lies on the Seine [1].",
        ),  # noqa: E501
    ],
)
def test_shape_answer_strips_filler_and_keeps_markers(raw, shaped):
    assert shape_answer(raw) == shaped


class WordReranker:
    name = "word"

    def __init__(self, word):
        self.word = word
        self.calls = []

    def score(self, query, texts):
        self.calls.append(len(texts))
        return [1.0 if self.word in t else 0.0 for t in texts]


def test_reranker_reorders_the_fused_candidates_and_keeps_k(facts_index):
    from ragtune.errors import ModelNotFoundError
    from ragtune.registry import make_reranker
    from ragtune.retrieval import Retriever

    plain = facts_index.search("Who built the Alder bridge?", k=3)
    assert plain[0].chunk.doc_id == "alder"
    rr = WordReranker("Ada Renn")
    cfg = RagConfig(reranker="word", rerank_depth=12)
    hits = Retriever(facts_index.store, facts_index.embedder, cfg, reranker=rr).search("Who built the Alder bridge?", 3)
    assert len(hits) == 3 and hits[0].chunk.doc_id == "kelvor" and [h.rank for h in hits] == [1, 2, 3]
    assert rr.calls == [12]  # it read rerank_depth candidates, not k
    with pytest.raises(ModelNotFoundError, match="CrossEncoder folder"):
        make_reranker("/no/such/reranker")


def test_question_side_evidence_counts_the_question_words_and_names_the_sources_hold(facts_index):
    from ragtune.rag import question_names

    assert question_names("Who built the Alder bridge in 1871 for Mara Voss?") == {"alder", "1871", "mara", "voss"}
    assert question_names("What colour is the lighthouse?") == set()
    gen = SpanScorer("Mara Voss")
    pipe = Pipeline(facts_index, gen, RagConfig(k=3), gate=False)
    held = pipe.answer("Who built the Alder bridge in 1871?").evidence
    assert held.names_cover == 1.0 and held.question_cover == 1.0  # alder, bridge, 1871, built: all there
    kept_out = pipe.answer_batch(["Who built the Alder bridge in 1871?"], exclude_docs=[{"alder"}])[0].evidence
    assert kept_out.names_cover == 0.0 and kept_out.question_cover < 1.0  # "bridge" is still in Kelvor's
    no_names = pipe.answer("What colour is the lighthouse?").evidence
    assert no_names.names_cover == 1.0  # nothing to look for: no evidence against answering


def test_calibrate_by_exclusion_with_known_answers(facts_index):
    from ragtune.gate import calibration_answers, fit_answers

    questions = [q for q, _, _ in QUESTIONS]
    answered, refused = calibration_answers(
        facts_index,
        SpanScorer("zzz"),
        questions,
        answerable_doc_ids=[d for _, _, d in QUESTIONS],
        config=RagConfig(k=3),
    )
    assert all(h.chunk.doc_id != d for a, (_, _, d) in zip(refused, QUESTIONS) for h in a.hits)
    gate = fit_answers(answered, refused, answers=[(a,) for _, a, _ in QUESTIONS])
    assert len(gate.weights) == len(gate.features) and gate.calibration["answerable"] == len(answered)
    with pytest.raises(InputError, match="answers"):
        fit_answers(answered, refused, answers=[("x",)])


def test_a_gate_records_the_dtype_it_read_and_warns_once_when_it_runs_in_another(facts_index, caplog):
    from ragtune import rag
    from ragtune.gate import calibrate, check_dtype

    questions = [q for q, _, _ in QUESTIONS]
    calibrated_with = SpanScorer("zzz")
    calibrated_with.precision = "bfloat16"
    gate = calibrate(facts_index, calibrated_with, questions, answerable_doc_ids=[d for _, _, d in QUESTIONS],
                     config=RagConfig(k=3))  # fmt: skip
    assert gate.calibration["dtype"] == "bfloat16"
    assert Gate.from_dict(gate.to_dict()).calibration["dtype"] == "bfloat16"  # recorded in the index
    assert check_dtype(gate, calibrated_with) is None
    assert check_dtype(gate, ScriptedGenerator(lambda m: "x")) is None  # no dtype to compare (a remote model)
    other = SpanScorer("zzz")
    other.precision = "float32"
    rag._WARNED.clear()
    with caplog.at_level("WARNING", logger="ragtune"):
        Pipeline(facts_index, other, RagConfig(k=3), gate=gate)
        Pipeline(facts_index, other, RagConfig(k=3), gate=gate)
    said = [r.getMessage() for r in caplog.records if "calibrated with" in r.getMessage()]
    assert len(said) == 1 and "in bfloat16, and it now runs in float32" in said[0]


def test_a_gate_is_never_calibrated_on_the_questions_its_generator_was_fine_tuned_on(facts_index):
    from ragtune.finetune.data import question_key
    from ragtune.tuning import tune

    examples = [QAExample(str(i), q, (a,), (d,)) for i, (q, a, d) in enumerate(QUESTIONS)]
    before = Index.open(facts_index.url).rag_config()
    every = {question_key(e.question) for e in examples}
    with pytest.raises(InputError, match="fine-tuning data"):
        tune(facts_index, examples, SpanScorer("zzz"), trained_on=every)
    assert Index.open(facts_index.url).rag_config() == before  # refused before anything was recorded
    trained = {question_key(e.question.upper() + " ") for e in examples[:2]}  # the key is normalised
    report = tune(facts_index, examples, SpanScorer("zzz"), trained_on=trained, apply=False)
    assert report.gate["calibration"]["answerable"] == len(examples) - 2
    assert any(f"2 of the {len(examples)} questions left out" in line for line in report.lines())
    untouched = tune(facts_index, examples, SpanScorer("zzz"), apply=False)
    assert untouched.gate["calibration"]["answerable"] == len(examples) and not untouched.gate_note
