"""`ragtune evaluate` on bad input and small budgets: clear errors before any work, nothing left
behind by a run that cannot start, a plan that says when it cannot fit its budget, skipped files
counted and recorded, outputs checked before long work, and a repeated run that reuses its tuning
and its comparison."""

import json
import math
import re

import pytest

from ragtune.errors import ConfigError, DocumentError, RagtuneError
from ragtune.evaluation import compare as _compare  # noqa: F401  (imported before a test patches its load_paths)
from ragtune.evaluation import evaluate as ev
from ragtune.evaluation.evaluate import EvaluateConfig, make_plan, run_evaluate
from ragtune.paths import check_output
from ragtune.synth.generate import SynthConfig, count_candidates, synthesize, write_questions
from ragtune.testing import ScriptedGenerator, make_chunks

from .test_synth import Scripted, json_prompts, town_folder  # noqa: F401  (json_prompts: autouse fixture)

CFG = EvaluateConfig(budget_min=3, strategies=("base", "rag"), embedder="hashing-64")


def _no_loading(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("documents were loaded before the output folder was checked")

    monkeypatch.setattr("ragtune.documents.load_paths", refuse)


# -- 1. an output that is not a folder: one clear error, before any work ----------------------------


@pytest.mark.parametrize("where", ["file", "under a file"])
def test_out_that_cannot_be_a_folder_is_refused_before_any_work(tmp_path, monkeypatch, where):
    folder = town_folder(tmp_path / "docs")
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    out = afile if where == "file" else afile / "out"
    _no_loading(monkeypatch)
    said = []
    with pytest.raises(ConfigError, match=rf"{re.escape(str(afile))}.*not a folder"):
        run_evaluate([folder], out, CFG, say=said.append)
    assert said == [] and afile.read_text() == "keep me"


# -- 2. a run that cannot start leaves no folder behind --------------------------------------------


def _inputs(tmp_path, kind):
    if kind == "missing":
        return [tmp_path / "no-such-folder"]
    folder = tmp_path / kind
    folder.mkdir()
    if kind == "junk":
        (folder / "a.bin").write_bytes(b"\x00\x01\x02" * 50)
        (folder / "b.txt").write_text("")
        (folder / "c.pdf").write_bytes(b"not a pdf at all")
    return [folder]


@pytest.mark.parametrize("kind", ["missing", "junk", "empty"])
def test_a_run_without_loadable_documents_leaves_no_output_folder(tmp_path, kind):
    out = tmp_path / "new" / "out"
    with pytest.raises(DocumentError, match="no-such-folder" if kind == "missing" else "nothing to evaluate"):
        run_evaluate(_inputs(tmp_path, kind), out, CFG, say=lambda m: None)
    assert not (tmp_path / "new").exists()


def test_bad_questions_file_or_embedder_fail_before_the_output_folder_is_made(tmp_path):
    folder = town_folder(tmp_path / "docs")
    with pytest.raises(RagtuneError):
        run_evaluate([folder], tmp_path / "o1", EvaluateConfig(budget_min=3, questions=str(tmp_path / "none.jsonl")),
                     say=lambda m: None)  # fmt: skip
    with pytest.raises(RagtuneError, match="no-such-embedder"):
        run_evaluate([folder], tmp_path / "o2", EvaluateConfig(budget_min=3, embedder="no-such-embedder"),
                     say=lambda m: None)  # fmt: skip
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_an_ingest_that_fails_in_a_new_output_folder_leaves_nothing(tmp_path, monkeypatch):
    from ragtune.testing import HashingEmbedder

    def broken(self, texts):
        raise RagtuneError("the embedder cannot load")

    monkeypatch.setattr(HashingEmbedder, "embed", broken)
    with pytest.raises(RagtuneError, match="cannot load"):
        run_evaluate([town_folder(tmp_path / "docs")], tmp_path / "new" / "out", CFG, say=lambda m: None)
    assert not (tmp_path / "new").exists()


def test_an_existing_output_folder_is_kept_when_the_run_cannot_start(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("x")
    with pytest.raises(DocumentError):
        run_evaluate(_inputs(tmp_path, "empty"), out, CFG, say=lambda m: None)
    assert (out / "mine.txt").read_text() == "x"


# -- 3. the plan against its budget, and no more questions than the documents hold ------------------

TWO_DOCS = {
    "a": ["The Kelvor bridge was opened in 1932 by Ada Renn. It crosses the river Tam near Portham."],
    "b": ["The abbey of Brey was founded in 1711 by Ola Venn. Its library holds 4,000 books."],
}


def test_a_plan_over_its_budget_says_so_and_what_it_needs(tmp_path):
    cfg = EvaluateConfig(budget_min=3, strategies=("base", "rag"))
    plan = make_plan(2, 2, 2, cfg, 8.59)  # the tester's loaded machine
    assert plan.over_budget and plan.total_min > 3 * 2
    text = plan.describe()
    assert "OVER BUDGET" in text and "exceeds the budget of 3 min" in text
    assert f"--budget-min {math.ceil(plan.total_min)}" in text and f"{plan.test} test questions" in text
    saved = plan.to_dict()
    assert saved["over_budget"] is True and saved["budget_min"] == 3 and saved["total_min"] == round(plan.total_min, 2)
    # plan.json keeps it, and a kept plan reads back with the same verdict
    (tmp_path / "plan.json").write_text(json.dumps({**saved, "key": "k"}))
    kept = ev._load_plan(tmp_path / "plan.json", "k")
    assert kept == plan and kept.over_budget
    fits = make_plan(100, 90, 103, EvaluateConfig(budget_min=30), 0.32)
    assert not fits.over_budget and "OVER BUDGET" not in fits.describe() and fits.budget_warning() == ""
    assert "of a budget of 30" in fits.describe()


def test_the_plan_asks_for_no_more_questions_than_the_documents_hold():
    cfg = EvaluateConfig(budget_min=3, strategies=("base", "rag"))
    chunks = [c for d, texts in TWO_DOCS.items() for c in make_chunks(d, texts)]
    held = count_candidates(chunks)
    assert 4 <= held < 30 and count_candidates(chunks, limit=3) == 3
    uncapped = make_plan(2, 2, 2, cfg, 0.3)
    capped = make_plan(2, 2, 2, cfg, 0.3, candidates=held)
    assert uncapped.synthetic > 2 * held and capped.synthetic == held and capped.candidates == held
    assert capped.test <= held // 2 and capped.minutes["synthesise"] < uncapped.minutes["synthesise"]
    assert capped.minutes["compare"] < uncapped.minutes["compare"]
    many = make_plan(2, 2, 2, cfg, 0.3, candidates=1000)  # enough: nothing changes
    assert (many.synthetic, many.test, many.minutes) == (uncapped.synthetic, uncapped.test, uncapped.minutes)


def test_too_few_answer_candidates_stop_the_run_before_synthesis(tmp_path, monkeypatch):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("It was so. And then it was not so.")
    monkeypatch.setattr(ev, "measure_seconds_per_answer", lambda gen: pytest.fail("measured before the check"))
    m = Scripted()
    gens = {"qg": m.qg, "reader": m.reader, "base": m.reader}
    with pytest.raises(DocumentError, match="answer candidates.*too few"):
        run_evaluate([folder], tmp_path / "out", CFG, say=lambda s: None, generators=gens)
    assert m.asked == []


# -- 4. budgets that are not numbers of minutes ------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), "30", 1e308])
def test_non_finite_or_absurd_budgets_are_config_errors(bad):
    with pytest.raises(ConfigError, match="budget_min="):
        EvaluateConfig(budget_min=bad)


# -- 6. outputs that cannot be written are found before the work --------------------------------------


def test_check_output_names_the_path_and_the_problem(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ConfigError, match=re.escape(f"cannot write {afile}/q.jsonl: {afile} is a file, not a folder")):
        check_output(afile / "q.jsonl")
    with pytest.raises(ConfigError, match="not a folder"):
        check_output(afile / "deeper" / "q.jsonl")
    with pytest.raises(ConfigError, match="it is a folder"):
        check_output(tmp_path)
    with pytest.raises(ConfigError, match=re.escape(f"cannot write into {afile}: it is a file, not a folder")):
        check_output(afile, folder=True)
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    with pytest.raises(ConfigError, match="broken symlink"):
        check_output(tmp_path / "dangling", folder=True)
    assert check_output(tmp_path / "new" / "deeper" / "q.jsonl") == tmp_path / "new" / "deeper" / "q.jsonl"
    assert check_output(tmp_path / "new", folder=True) and not (tmp_path / "new").exists()  # creates nothing


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
                    reason="root may write anywhere")  # fmt: skip
def test_check_output_refuses_a_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(ConfigError, match="no permission"):
            check_output(ro / "sub" / "q.jsonl")
    finally:
        ro.chmod(0o755)


def test_write_questions_under_a_file_raises_the_clear_error(tmp_path):
    m = Scripted()
    qs, report = synthesize(make_chunks("a", TWO_DOCS["a"]), SynthConfig(n=2), qg=m.qg, reader=m.reader)
    assert qs
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="afile is a file, not a folder"):
        write_questions(qs, report, tmp_path / "afile" / "q.jsonl")
    out, _ = write_questions(qs, report, tmp_path / "fine" / "q.jsonl")
    assert len(out.read_text().splitlines()) == len(qs)


# -- 3, 5, 7 end to end: skipped files recorded, the budget warning, a repeated run reuses its work ---


class Counted(ScriptedGenerator):
    def __init__(self, respond, name):
        super().__init__(respond, name=name)
        self.calls = 0

    def generate(self, prompts, max_new_tokens=48):
        self.calls += len(prompts)
        return super().generate(prompts, max_new_tokens)


def test_skipped_files_budget_and_a_repeated_run(tmp_path, monkeypatch):
    folder = town_folder(tmp_path / "docs")
    (folder / "empty.txt").write_text("")
    (folder / "junk.pdf").write_bytes(b"not a pdf at all")
    monkeypatch.setattr(ev, "measure_seconds_per_answer", lambda gen: 8.59)  # a loaded machine: over the budget
    tuned, gated = [], []
    real_tune, real_gate = ev.tune_phase, ev.calibrate_gate
    monkeypatch.setattr(ev, "tune_phase", lambda *a, **k: tuned.append(1) or real_tune(*a, **k))
    monkeypatch.setattr(ev, "calibrate_gate",
                        lambda *a, **k: gated.append(([e.id for e in a[2]], k.get("split"))) or real_gate(*a, **k))
    m = Scripted()

    def rag_answer(messages):
        user = messages[-1]["content"]
        return user.split(">", 1)[1].split(".")[0] + " [1]" if "<source" in user else "Madrid"

    base, rag = Counted(m._answer, "closed"), Counted(rag_answer, "rag-reader")
    gens = {"qg": m.qg, "reader": m.reader, "base": base, "rag": rag}
    out = tmp_path / "out"
    said = []
    res = run_evaluate([folder], out, CFG, say=said.append, generators=gens)

    # 5: the ingest line is a sentence that counts the skipped files; results.json records them
    line = next(s for s in said if s.startswith("ingest:"))
    assert "2 files skipped" in line and "{" not in line and "8 documents loaded" in line, line
    skipped = res.questions["ingest"]["skipped"]
    assert sorted(s["path"].rsplit("/", 1)[-1] for s in skipped) == ["empty.txt", "junk.pdf"]
    assert all(s["reason"] for s in skipped)
    on_disk = json.loads((out / "results.json").read_text())
    assert (
        on_disk["questions"]["ingest"] == res.questions["ingest"] and on_disk["questions"]["ingest"]["documents"] == 8
    )
    assert any("empty.txt" in n and "junk.pdf" in n for n in res.notes)
    assert "junk.pdf" in (out / "report.html").read_text()
    # 3: the plan says it is over the budget, before the work; results keep the figure
    plan_at = next(i for i, s in enumerate(said) if s.startswith("plan:"))
    assert "OVER BUDGET" in said[plan_at] and "exceeds the budget of 3 min" in said[plan_at]
    assert any(s.startswith("warning:") for s in said[plan_at : plan_at + 2])
    assert res.questions["plan"]["over_budget"] and res.questions["plan"]["total_min"] > 3
    assert json.loads((out / "plan.json").read_text())["over_budget"] is True
    assert any("did not fit the time budget" in n for n in res.notes)
    assert tuned == [1] and base.calls and rag.calls
    # rag's gate: on validation questions, as rag+ft's is; this tiny run has too few, and says so
    val = {json.loads(x)["id"] for x in (out / "data" / "validation.jsonl").read_text().splitlines()}
    ((ids, split),) = gated
    assert len(val) < 8 and split == "training" and ids and not set(ids) <= val
    assert any(f"only {len(val)} validation questions" in s for s in said)
    first = (res.aggregates, len(res.records), res.tuning["retrieval"])

    # 7: the same run again reuses the tuning (no retrieval tuning, no gate) and every answer
    said.clear()
    base.calls = rag.calls = 0
    gated_before = len(gated)
    again = run_evaluate([folder], out, CFG, say=said.append, generators=gens)
    assert tuned == [1] and len(gated) == gated_before and base.calls == rag.calls == 0, said
    assert any(s.startswith("tune: reusing") for s in said) and any(s.startswith("compare: reusing") for s in said)
    assert (again.aggregates, len(again.records), again.tuning["retrieval"]) == first
    assert len([n for n in again.notes if "synthetic" in n]) == 1  # the run's notes are not doubled
    assert again.questions["ingest"]["skipped"] == skipped

    # ...but tuning is redone when the index no longer holds what it left there (a `ragtune tune` since),
    # and its settings restored: the same settings, so the answers still stand
    from ragtune.index import Index

    Index.open(out / "index").set_retrieval(k=2, dense_weight=0.9)
    said.clear()
    again = run_evaluate([folder], out, CFG, say=said.append, generators=gens)
    assert tuned == [1, 1] and again.tuning["retrieval"] == first[2]
    assert Index.open(out / "index").rag_config().k == first[2]["chosen"]["k"]
    assert rag.calls == 0 and any(s.startswith("compare: reusing") for s in said)
    # ...and the answers are redone for another generator (tuning, made with the base model, stands)
    gens["rag"] = other = Counted(rag_answer, "another-reader")
    said.clear()
    run_evaluate([folder], out, CFG, say=said.append, generators=gens)
    assert tuned == [1, 1] and other.calls > 0 and not any(s.startswith("compare: reusing") for s in said)


def test_the_rag_ft_gate_is_reused_only_with_the_same_adapter(tmp_path, monkeypatch):
    from ragtune.finetune import train as train_mod
    from ragtune.finetune.run import MANIFEST

    weights = {"v": "1"}

    def fake_train(cfg, data, folder, index=None, progress=None):
        from dataclasses import asdict

        folder.mkdir(parents=True, exist_ok=True)
        (folder / MANIFEST).write_text(json.dumps({"config": json.loads(json.dumps(asdict(cfg)))}))
        (folder / "results.json").write_text("{}")
        (folder / "adapter").mkdir(exist_ok=True)
        (folder / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "x"}))
        (folder / "adapter" / "adapter_model.safetensors").write_text(weights["v"])
        return type("R", (), {"best_val_loss": 1.0, "best_step": cfg.max_steps})()

    monkeypatch.setattr(train_mod, "train", fake_train)
    gated, asked = [], []
    monkeypatch.setattr(ev, "calibrate_gate", lambda index, gen, ex, say, split="training": gated.append(gen.name)
                        or asked.append(([e.id for e in ex], split)) or {})  # fmt: skip
    folder = town_folder(tmp_path / "docs")
    m = Scripted()
    gens = {"qg": m.qg, "reader": m.reader, "base": Counted(m._answer, "closed"),
            "rag+ft": Counted(m._answer, "tuned-reader")}  # fmt: skip
    cfg = EvaluateConfig(budget_min=3, strategies=("base", "rag+ft"), embedder="hashing-64")
    run_evaluate([folder], tmp_path / "out", cfg, say=lambda s: None, generators=gens)
    assert gated == ["tuned-reader"]
    # ...on validation questions, which its adapter never trained on (on training ones it is overconfident)
    ids = {s: {json.loads(x)["id"] for x in (tmp_path / "out" / "data" / f"{s}.jsonl").read_text().splitlines()}
           for s in ("train", "validation")}  # fmt: skip
    (first, split), = asked
    assert len(first) >= 8 and set(first) <= ids["validation"] and not set(first) & ids["train"]
    assert split == "validation"  # the report says so (below)
    from types import SimpleNamespace

    from ragtune.evaluation.report import tuning_section

    gate = {"calibration": {"answerable": 8, "unanswerable": 8, "split": split}, "threshold": 0.5,
            "features": ["logprob"], "target_false_abstention": 0.1}  # fmt: skip
    assert "validation questions, which its adapter never trained on" in tuning_section(
        SimpleNamespace(tuning={"gates": {"rag+ft": gate}}))
    assert "(training questions asked" in tuning_section(SimpleNamespace(tuning={"gates": {"rag": {
        **gate, "calibration": {"answerable": 8, "unanswerable": 8}}}}))  # fmt: skip
    said = []
    run_evaluate([folder], tmp_path / "out", cfg, say=said.append, generators=gens)
    assert gated == ["tuned-reader"] and any("reusing the calibration" in s for s in said)
    assert gens["rag+ft"].calls and any(s.startswith("compare: reusing") for s in said)
    # other weights under the same configuration (a rerun that trained differently): calibrated again
    weights["v"] = "2"
    (tmp_path / "out" / "ft-reader" / "adapter" / "adapter_model.safetensors").write_text("2")
    said.clear()
    run_evaluate([folder], tmp_path / "out", cfg, say=said.append, generators=gens)
    assert gated == ["tuned-reader", "tuned-reader"] and not any(s.startswith("compare: reusing") for s in said)
