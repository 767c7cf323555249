import json

import pytest

from ragtune.errors import DocumentError, RagtuneError
from ragtune.finetune.data import PrepareConfig, add_training_only, prepare, read_split


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) if isinstance(r, dict) else r for r in rows) + "\n", encoding="utf-8")
    return path


def base_rows(n=40):
    return [
        {"id": f"q{i}", "question": f"What is the colour number {i} of item {i * 7}?", "answer": f"colour {i}"}
        for i in range(n)
    ]


LONG_Q = (
    "According to the printed catalogue of the natural history museum in the old city of Lima, "
    "which colour was used for the labels of the beetle collection donated in 1999 by the society?"
)


def steps(report):
    return {s.name.split(" (")[0]: s for s in report.steps}


def test_each_cleaning_step_catches_its_case(tmp_path):
    rows = base_rows()
    rows += [
        {
            "id": "ws",
            "question": "  What\u00a0is   the\u200b capital  of Peru? ",
            "answer": " Lima ",
        },  # normalised, kept
        {"id": "empty", "question": "What is nothing?", "answer": ""},
        {"id": "noq", "question": "", "answer": "something"},
        {"id": "dup", "question": "What is the colour number 3 of item 21?", "answer": "colour 3"},
        {"id": "c1", "question": "Who wrote Hamlet?", "answer": "Shakespeare"},
        {"id": "c2", "question": "Who wrote Hamlet?", "answer": "Shakespeare"},
        {"id": "c3", "question": "who wrote hamlet", "answer": "Marlowe"},
        {"id": "lq", "question": LONG_Q, "answer": "blue"},
        {"id": "near", "question": LONG_Q + " today", "answer": "blue"},
        {"id": "long", "question": "Why? " + "very " * 400, "answer": "because"},
        {"id": "inst", "instruction": "Translate to French", "input": "cat", "output": "chat"},
    ]
    p = write_jsonl(tmp_path / "qa.jsonl", rows)
    report = prepare([p], tmp_path / "out", PrepareConfig(max_tokens=200))
    s = steps(report)
    assert s["empty or missing fields"].removed == 2
    assert s["exact duplicates"].removed == 2  # dup and c2
    assert s["conflicting labels"].removed == 1  # majority keeps Shakespeare, drops Marlowe
    assert "Marlowe" in s["conflicting labels"].examples[0]
    assert s["near-duplicates"].removed == 1
    assert s["length outliers"].removed == 1
    kept = [e for split in ("train", "validation", "test") for e in read_split(tmp_path / "out" / f"{split}.jsonl")]
    by_id = {e.id: e for e in kept}
    assert by_id["ws"].question == "What is the capital of Peru?" and by_id["ws"].answer == "Lima"
    assert by_id["c1"].answer == "Shakespeare" and "c3" not in by_id
    assert by_id["inst"].question == "Translate to French\n\ncat" and by_id["inst"].answer == "chat"
    assert report.kept == len(kept) == 40 + 4
    md = (tmp_path / "out" / "report.md").read_text()
    assert "conflicting labels" in md and "Marlowe" in md
    assert json.loads((tmp_path / "out" / "report.json").read_text())["kept"] == report.kept


def test_conflict_policy_drop(tmp_path):
    rows = base_rows(10) + [
        {"question": "Who?", "answer": "A"},
        {"question": "Who?", "answer": "B"},
        {"question": "Who?", "answer": "A"},
    ]
    report = prepare([write_jsonl(tmp_path / "qa.jsonl", rows)], tmp_path / "o", PrepareConfig(conflict_policy="drop"))
    assert steps(report)["conflicting labels"].removed == 3  # all three go, whatever the votes


def test_one_fact_asked_two_ways_stays_in_one_split(tmp_path):
    rows = [
        {"id": f"a{i}", "question": f"Which river flows past town {i}?", "answer": f"Rivername{i}", "doc_id": f"d{i}"}
        for i in range(30)
    ]
    rows += [
        {"id": f"b{i}", "question": f"Name the water body beside settlement {i}.", "answer": f"riverName{i}",
         "doc_id": f"d{i}"}
        for i in range(30)
    ]  # fmt: skip
    rows.append({"id": "c0", "question": "What is near place zero?", "answer": "Rivername0", "doc_id": "elsewhere"})
    p = write_jsonl(tmp_path / "qa.jsonl", rows)
    prepare([p], tmp_path / "out", PrepareConfig(ratios=(0.5, 0.1, 0.4), seed=1))
    where = {e.id: s for s in ("train", "validation", "test") for e in read_split(tmp_path / "out" / f"{s}.jsonl")}
    assert all(where[f"a{i}"] == where[f"b{i}"] for i in range(30))  # same document, same answer: one group
    assert {"train", "test"} <= set(where.values())


def test_split_is_deterministic_and_near_twins_stay_together(tmp_path):
    rows = base_rows(60)
    # Ten near-identical pairs (different answers, so they survive cleaning as separate examples).
    rows += [
        {"id": f"t{i}", "question": f"What is the colour number {i} of item {i * 7}? please", "answer": f"hue {i}"}
        for i in range(10)
    ]
    p = write_jsonl(tmp_path / "qa.jsonl", rows)
    cfg = PrepareConfig(near_dup_threshold=0.95, seed=3)
    prepare([p], tmp_path / "a", cfg)
    prepare([p], tmp_path / "b", cfg)
    where = {}
    for split in ("train", "validation", "test"):
        a = (tmp_path / "a" / f"{split}.jsonl").read_text()
        assert a == (tmp_path / "b" / f"{split}.jsonl").read_text()
        for e in read_split(tmp_path / "a" / f"{split}.jsonl"):
            where[e.id] = split
    assert len(where) == 70
    for i in range(10):
        assert where[f"q{i}"] == where[f"t{i}"]
    assert {"train", "validation", "test"} == set(where.values())
    other = PrepareConfig(near_dup_threshold=0.95, seed=4)
    prepare([p], tmp_path / "c", other)
    assert (tmp_path / "c" / "test.jsonl").read_text() != (tmp_path / "a" / "test.jsonl").read_text()


def test_malformed_input_names_file_and_line_or_is_skipped(tmp_path):
    p = write_jsonl(
        tmp_path / "qa.jsonl", [json.dumps(r) for r in base_rows(10)] + ["{broken", json.dumps({"question": "q only"})]
    )
    with pytest.raises(DocumentError, match=r"qa.jsonl:11"):
        prepare([p], tmp_path / "o")
    report = prepare([p], tmp_path / "o", PrepareConfig(skip_bad=True))
    bad = steps(report)["malformed input"]
    assert bad.removed == 2 and "qa.jsonl:12" in bad.examples[1]


def test_nothing_left_is_an_error(tmp_path):
    p = write_jsonl(tmp_path / "qa.jsonl", [{"question": "a", "answer": ""}, {"question": "", "answer": "b"}])
    with pytest.raises(RagtuneError, match="no examples left"):
        prepare([p], tmp_path / "o")


def test_documents_folder_becomes_corpus_examples(tmp_path, corpus_dir):
    report = prepare([corpus_dir], tmp_path / "o", PrepareConfig(ratios=(1.0, 0.0, 0.0)))
    train = read_split(tmp_path / "o" / "train.jsonl")
    assert report.kept == 3 and all(e.kind == "text" and e.text for e in train)


def test_training_only_examples_join_train_but_never_as_a_twin_of_a_held_out_one(tmp_path):
    things = "bridge abbey tower harbour mill chapel market school castle library theatre station museum prison".split()
    qa = [{"id": f"q{i}", "question": f"Who built the {t} of the town?", "answer": f"Builder {t}", "doc_id": f"d{i}"}
          for i, t in enumerate(things)]  # fmt: skip
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa))
    out = tmp_path / "data"
    prepare([tmp_path / "qa.jsonl"], out, PrepareConfig(ratios=(0.5, 0.25, 0.25), seed=0))
    before = {s: (out / f"{s}.jsonl").read_text() for s in ("train", "validation", "test")}
    test, val = read_split(out / "test.jsonl"), read_split(out / "validation.jsonl")
    extra = [
        # the same fact asked another way, the same question, and a validation question's fact: left out
        {"id": "x1", "question": "Which builder made it?", "answer": test[0].answer, "doc_id": test[0].doc_id},
        {"id": "x2", "question": test[1].question, "answer": "someone else", "doc_id": "d99"},
        {"id": "x3", "question": "What colour is the old gate?", "answer": "red", "doc_id": "d98"},
        {"id": "x4", "question": "And who made this one?", "answer": val[0].answer, "doc_id": val[0].doc_id},
        {"id": "x5", "question": "How many arches has the weir?", "answer": "seven", "doc_id": "d97"},
    ]
    (tmp_path / "extra.jsonl").write_text("".join(json.dumps(r) + "\n" for r in extra))
    assert add_training_only(out, [tmp_path / "extra.jsonl"]) == 2
    train = read_split(out / "train.jsonl")
    assert [e.id for e in train][-2:] == ["x3", "x5"] and len(train) == len(before["train"].splitlines()) + 2
    assert all((out / f"{s}.jsonl").read_text() == before[s] for s in ("validation", "test"))


def test_untested_examples_and_their_twins_never_reach_the_test_split(tmp_path):
    """evaluate's reader's-own questions (TEST_WITHOUT_READERS_OWN): trained on or validated on, never tested on; the
    test still gets its share of all examples from the others, and without `untested` the split is unchanged."""
    rows = [{"id": f"q{i}", "question": f"Which river flows past town {i}?", "answer": f"River{i}", "doc_id": f"d{i}"}
            for i in range(60)]  # fmt: skip
    rows.append({"id": "twin", "question": "Name the water by the fifth town.", "answer": "River5", "doc_id": "d5"})
    p = write_jsonl(tmp_path / "qa.jsonl", rows)
    cfg = PrepareConfig(ratios=(0.5, 0.2, 0.3), seed=2)
    prepare([p], tmp_path / "plain", cfg)
    plain = {s: read_split(tmp_path / "plain" / f"{s}.jsonl") for s in ("train", "validation", "test")}
    untested = {f"q{i}" for i in range(0, 60, 2)}  # every other one, q5's twin's partner not among them
    untested.add("twin")
    report = prepare([p], tmp_path / "held", cfg, untested=untested)
    held = {s: read_split(tmp_path / "held" / f"{s}.jsonl") for s in ("train", "validation", "test")}
    test_ids = {e.id for e in held["test"]}
    assert not test_ids & untested and "q5" not in test_ids  # q5 is a twin of an untested one
    assert abs(len(held["test"]) - 0.3 * 61) <= 1 and report.splits["test"] == len(held["test"])
    assert untested & {e.id for e in held["validation"]}  # validation still draws on them
    assert sum(map(len, held.values())) == 61
    # the test of the plain split holds untested ones: the option changed it
    assert {e.id for e in plain["test"]} & untested
    again = prepare([p], tmp_path / "plain2", cfg, untested=())
    assert again.splits == {k: len(v) for k, v in plain.items()}
    assert (tmp_path / "plain2" / "test.jsonl").read_text() == (tmp_path / "plain" / "test.jsonl").read_text()
