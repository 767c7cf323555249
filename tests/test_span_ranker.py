"""The extract reader's span ranker: features, the fit, and the bundled weights."""

import random
from dataclasses import replace

import numpy as np
import pytest

from ragtune.span_ranker import FEATURES, SpanItem, _proximity, fit_ranker, load_ranker, span_features

SENTENCE = "In Beijing Kenya won five gold medals, and at the later games in London it won only four."
QUESTION = "How many gold medals did Kenya win in Beijing?"


def items(logprobs, texts=("five", "four"), kind="number", sentence=SENTENCE, rank=0):
    return [SpanItem(t, kind, sentence, 0.6, rank, lp, 1) for t, lp in zip(texts, logprobs)]


def test_proximity_counts_words_to_the_nearest_question_word_outside_the_span():
    words = "a b gold five c d e f g four".split()
    assert _proximity(words, ["five"], {"gold"})[0] == 1
    assert _proximity(words, ["four"], {"gold"})[0] == 7
    assert _proximity(words, ["gold"], {"gold"}) == (len(words), 0.0, 0.0)  # only itself: far from all
    assert _proximity(words, ["zzz"], {"gold"}) == (len(words), 0.0, 0.0)  # not in its sentence
    d, near3, near8 = _proximity(words, ["five"], {"gold", "f", "q"})
    assert (d, near3, near8) == (1, pytest.approx(1 / 3), pytest.approx(2 / 3))


def test_features_of_each_candidate():
    x = span_features(QUESTION, items([-3.0, -1.0]))
    assert x.shape == (2, len(FEATURES))
    col = dict(zip(FEATURES, x.T))
    assert list(col["logprob_gap"]) == [-2.0, 0.0] and list(col["logprob_best"]) == [0.0, 1.0]
    assert col["log_distance"][0] < col["log_distance"][1]  # "five gold" sits by the question's "gold"
    assert list(col["kind_asked"]) == [1.0, 1.0] and list(col["kind_number"]) == [1.0, 1.0]
    assert span_features(QUESTION, []).shape == (0, len(FEATURES))


def test_the_fit_learns_what_picks_the_right_span():
    """Synthetic questions whose right span is the one beside the question's words while the
    model's likelihood is noise: the fitted ranker must find it on new questions, the likelihood
    alone only by chance."""
    rng = random.Random(0)
    filler = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda".split()

    def case():
        words = filler[:]
        rng.shuffle(words)
        spans = ["Xan", "Yon"]
        words[1:1] = [spans[1]] if rng.random() < 0.5 else []
        words[7:7] = ["marker", spans[0]]  # the question's word just before the right span
        if spans[1] not in words:
            words.append(spans[1])
        sentence = " ".join(words)
        cands = [SpanItem(s, "entity", sentence, 0.5, 0, rng.gauss(-5, 1), 2) for s in spans]
        order = rng.sample(range(2), 2)
        return "Which marker?", [cands[i] for i in order], np.array([1.0 if i == 0 else 0.0 for i in order])

    train = [case() for _ in range(200)]
    ranker = fit_ranker([(span_features(q, c), f1) for q, c, f1 in train])
    test = [case() for _ in range(100)]
    picked = [f1[int(np.argmax(ranker.scores(q, c)))] for q, c, f1 in test]
    likeliest = [f1[int(np.argmax([it.logprob for it in c]))] for q, c, f1 in test]
    assert np.mean(picked) > 0.95 and np.mean(likeliest) < 0.7
    with pytest.raises(ValueError, match="nothing to fit"):
        fit_ranker([(span_features(q, c), f1 * 0.1) for q, c, f1 in train])


def test_the_bundled_ranker_reads_the_span_beside_the_question_words(tmp_path):
    ranker = load_ranker()
    assert ranker.features == FEATURES and "SQuAD" in ranker.fitted_on["data"]
    assert ranker.fitted_on["cv_f1_ranker_one_sentence"] > ranker.fitted_on["cv_f1_likelihood_alone_one_sentence"]
    # equally likely to the model: "five" (five gold) wins; far less likely (e^-23): the model's choice stands
    assert np.argmax(ranker.scores(QUESTION, items([-2.0, -2.0]))) == 0
    assert np.argmax(ranker.scores(QUESTION, items([-25.0, -2.0]))) == 1
    # the more relevant sentence wins between equal spans
    two = items([-2.0], ["five"], rank=0) + items([-2.0], ["four"], sentence="They won four.", rank=1)
    two[1] = SpanItem("four", "number", "They won four gold medals.", 0.2, 1, -2.0, 1)
    assert np.argmax(ranker.scores(QUESTION, two)) == 0
    # a saved ranker for features this ragtune does not compute is refused, not misread
    bad = tmp_path / "r.json"
    ranker.__class__(("logprob", "logprob_squared"), (0.0, 0.0), (1.0, 1.0), (1.0, 1.0), {}).save(bad)
    with pytest.raises(ValueError, match="does not compute: \\['logprob_squared'\\]"):
        load_ranker(str(bad))
    # one for a subset of them (fitted before the PMI features, say) reads just those
    old = tmp_path / "old.json"
    ranker.__class__(("logprob_best", "sentence_rank"), (0.0, 0.0), (1.0, 1.0), (0.0, -1.0), {}).save(old)
    older = load_ranker(str(old))
    assert not older.reads_null and ranker.reads_null
    assert list(older.scores(QUESTION, two)) == [0.0, -1.0]


class PrefersFour:
    """A scorer that finds "four" a little likelier than any other span (as the 135M reader did)."""

    def __init__(self):
        from ragtune.testing import ScriptedGenerator

        self._gen = ScriptedGenerator(lambda m: "unused")

    def __getattr__(self, name):
        return getattr(self._gen, name)

    def score_batch(self, prompts, continuations):
        return [[-2.0 if c == "four" else -2.5 for c in cs] for cs in continuations]

    def score(self, prompt, continuations):
        return self.score_batch([prompt], [continuations])[0]


def test_pipeline_answers_with_the_ranked_span_and_can_fall_back_to_the_likelihood(tmp_path):
    from ragtune import Index, Pipeline, RagConfig
    from ragtune.documents import Document
    from ragtune.errors import ConfigError

    index = Index.create(tmp_path / "ix", embedder="hashing")
    index.ingest([Document("kenya", SENTENCE, "Kenya")], sync=True)
    answer = lambda ranker: Pipeline(  # noqa: E731
        index, PrefersFour(), RagConfig(embedder="hashing", answer_mode="extract", span_ranker=ranker), gate=False
    ).answer(QUESTION)
    ranked, likeliest = answer("bundled"), answer("likelihood")
    assert ranked.text.startswith("five") and likeliest.text.startswith("four")
    assert ranked.citations and ranked.citations[0].doc_id == "kenya"
    with pytest.raises(ConfigError, match="span_ranker"):
        RagConfig(span_ranker="best")


class PrefersYes(PrefersFour):
    def score_batch(self, prompts, continuations):
        return [[-2.0 if c == "yes" else -2.5 for c in cs] for cs in continuations]


def test_a_yes_no_question_keeps_the_model_s_choice(tmp_path):
    """The ranker never saw a yes/no question (SQuAD has none): "yes" sits in no sentence, so its
    proximity features would bury it under any span beside the question's words."""
    from ragtune import Index, Pipeline, RagConfig
    from ragtune.documents import Document
    from ragtune.span_ranker import SpanItem

    index = Index.create(tmp_path / "ix", embedder="hashing")
    index.ingest([Document("kenya", SENTENCE, "Kenya")], sync=True)
    question = "Did Kenya win five gold medals in Beijing?"
    pipe = Pipeline(index, PrefersYes(), RagConfig(embedder="hashing", answer_mode="extract"), gate=False)
    assert pipe.answer(question).text.startswith("yes")
    # what the ranker alone would do with these spans
    spans = [SpanItem("yes", "yes/no", SENTENCE, 0.6, 0, -2.0, 1)]
    spans.append(SpanItem("five", "number", SENTENCE, 0.6, 0, -2.5, 1))
    assert np.argmax(load_ranker().scores(question, spans)) == 1


class NullScorer(PrefersFour):
    """Every span equally likely with the question; under `NULL_QUESTION`, as `null` says."""

    def __init__(self, null):
        super().__init__()
        self.null, self.null_prompts = null, 0

    def score_batch(self, prompts, continuations):
        from ragtune.span_ranker import NULL_QUESTION

        out = []
        for p, cs in zip(prompts, continuations):
            is_null = NULL_QUESTION in p[-1]["content"]
            self.null_prompts += is_null
            out.append([self.null.get(c, -6.0) if is_null else -2.0 for c in cs])
        return out


def test_the_span_the_question_makes_likely_wins_over_one_likely_anyway(tmp_path):
    """Two spans equally likely as the reply and equally placed: the one the model would give to a
    content-free question too (its surface form, not the question, makes it likely) loses."""
    from ragtune import Index, Pipeline, RagConfig
    from ragtune.documents import Document
    from ragtune.rag import read_spans

    sentence = "Xandor Pell won the prize with Yorrin Vale."  # each equally near the question's words
    question = "Who won the prize?"
    index = Index.create(tmp_path / "ix", embedder="hashing")
    index.ingest([Document("prize", sentence, "Prize")], sync=True)
    config = RagConfig(embedder="hashing", answer_mode="extract")
    for likely_anyway, expected in (("Xandor Pell", "Yorrin Vale"), ("Yorrin Vale", "Xandor Pell")):
        scorer = NullScorer({likely_anyway: -1.0})
        pipe = Pipeline(index, scorer, config, gate=False)
        assert pipe.answer(question).text.startswith(expected)
        assert scorer.null_prompts == 1  # the null prompt is read once per read sentence
        sources = pipe._select([question], pipe._retrieve([question], [None])[0])[0]
        read = read_spans(scorer, pipe._retriever.embedder, [question], [sources], config)[0]
        null = {it.text: it.null_logprob for it in read.items}
        assert null[likely_anyway] == -1.0 and all(v == -6.0 for k, v in null.items() if k != likely_anyway)
    # the model's likelihood alone needs no null prompt; nor does a yes/no question (its likelihood decides)
    scorer = NullScorer({})
    Pipeline(index, scorer, replace(config, span_ranker="likelihood"), gate=False).answer(question)
    Pipeline(index, scorer, config, gate=False).answer("Did Xandor Pell win the prize?")
    assert scorer.null_prompts == 0
