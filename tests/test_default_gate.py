"""ragtune's default answerability gate: used until an index has its own, only with the bundled
generator and embedder it was fitted for, and saying so when it abstains."""

import pytest

from ragtune.config import DEFAULT_EMBEDDER, DEFAULT_GENERATOR
from ragtune.gate import Gate, default_gate
from ragtune.rag import EVIDENCE_FEATURES, Evidence, index_gate


def test_the_bundled_default_gate_reads_and_says_what_it_is():
    gate = default_gate(DEFAULT_GENERATOR, DEFAULT_EMBEDDER)
    assert isinstance(gate, Gate) and gate.is_default
    assert set(gate.features) <= set(EVIDENCE_FEATURES) and len(gate.features) >= 5
    assert 0.0 < gate.threshold < 1.0
    cal = gate.calibration
    assert cal["answerable"] >= 100 and cal["unanswerable"] >= 100 and "SQuAD" in cal["fitted_on"]
    # on its own fitting questions it met the target it was fitted to
    assert cal["false_abstention"] <= gate.target_false_abstention + 1e-9 and cal["abstention"] >= 0.5


@pytest.mark.parametrize(
    "generator, embedder, applies",
    [
        (DEFAULT_GENERATOR, DEFAULT_EMBEDDER, True),
        (f"{DEFAULT_GENERATOR}@llama", DEFAULT_EMBEDDER, True),  # the fast backends score alike
        (f"{DEFAULT_GENERATOR}+my-run", DEFAULT_EMBEDDER, False),  # a fine-tuned adapter reads otherwise
        (DEFAULT_GENERATOR, "hashing-64", False),  # other similarities
        ("/models/other", DEFAULT_EMBEDDER, False),
    ],
)
def test_the_default_gate_applies_only_to_what_it_was_fitted_for(generator, embedder, applies):
    assert (default_gate(generator, embedder) is not None) is applies


class _Manifest:
    embedder = DEFAULT_EMBEDDER


class _Index:
    manifest = _Manifest()

    def __init__(self, own=None):
        self.own = own

    def gate(self, generator):
        return self.own


def test_an_index_s_own_gate_comes_before_the_default():
    own = Gate(("support",), (0.5,), (0.1,), (1.0,), 0.0, 0.4)
    assert index_gate(_Index(own), DEFAULT_GENERATOR) is own
    assert index_gate(_Index(), DEFAULT_GENERATOR).is_default
    assert index_gate(_Index(), "other-model") is None


def test_an_abstention_by_the_default_gate_says_the_index_is_not_calibrated():
    gate = default_gate(DEFAULT_GENERATOR, DEFAULT_EMBEDDER)
    weak = Evidence(**{f: 0.0 for f in ("dense_top", "text_top", "text_per_word", "agreement", "context_top",
                                        "support", "question_cover", "names_cover")},
                    logprob=-8.0, margin=0.0)  # fmt: skip
    p = gate.probability(weak)
    assert p < gate.threshold
    why = gate.explain(weak, p)
    assert "default gate" in why and "ragtune tune" in why
    calibrated = Gate(gate.features, gate.mean, gate.scale, gate.weights, gate.bias, gate.threshold)
    assert "default gate" not in calibrated.explain(weak, p)


@pytest.mark.e2e
def test_an_untuned_index_abstains_on_what_its_documents_do_not_say(tmp_path):
    """A new user's first questions (ingest, then ask; no `tune`): an off-topic question used to get a
    confident, cited wrong answer ("Tamsin" for the boiling point of mercury)."""
    from ragtune import Index, Pipeline, make_generator
    from ragtune.demo import demo_data_path
    from ragtune.documents import Document, load_squad

    docs, examples = load_squad(demo_data_path())
    docs = [d for d in docs if d.id.startswith("Normans/")][:12]
    tamsin = "The Tamsin lake is 55 metres deep. It was surveyed in 1931 by Mara Lind."
    docs.append(Document("tamsin", tamsin, "Tamsin"))
    index = Index.create(tmp_path / "ix")
    index.ingest(docs)
    pipe = Pipeline(index, make_generator())
    assert pipe.gate is not None and pipe.gate.is_default
    off = pipe.answer_batch(["What is the boiling point of mercury?", "Who won the 1998 FIFA World Cup?"])
    assert all(a.abstained for a in off), [(a.text, a.confidence) for a in off]
    assert all("not calibrated on this index" in a.abstain_reason for a in off)
    on = pipe.answer("How deep is the Tamsin lake?")
    assert not on.abstained and "55" in on.text and on.confidence is not None
