"""The one-command demo on the bundled SQuAD subset: ingest, prepare, fine-tune `ft` and
`rag+ft`, compare base / rag / ft / rag+ft, write the report. Every phase is timed."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from .config import ChunkConfig
from .documents import load_squad


def demo_data_path() -> Path:
    return Path(str(resources.files("ragtune") / "data" / "squad_demo.json"))


HELD_OUT_ARTICLE = "Jacksonville, Florida"  # kept out of the index: its questions are unanswerable


@dataclass(frozen=True)
class DemoPlan:
    questions: int  # held-out answerable questions
    unanswerable: int
    edits: int  # facts edited for the freshness test
    qa_steps: int  # batches of 8 short examples
    reader_steps: int  # rag+ft: batches of 8 short examples (the answer's sentence + question -> span)
    gate_questions: int  # training questions each gate is calibrated on (each asked twice)


# Sized for a 2-core CPU (measured, quiet: ~3.4 s per qa step, ~10 s per reader step with its
# evaluation, ~0.4 s per answer): default 6.5 minutes from a clean clone. ft gets 30 steps: with 60 (10.3 min) it
# scored F1 2.1, as the base model does; closed-book facts are not learnt in minutes either way.
PLANS = {"default": DemoPlan(40, 12, 8, 30, 20, 32), "quick": DemoPlan(12, 6, 4, 16, 8, 16)}


def run_demo(out: Path, quick: bool = False, console=None) -> int:
    from .config import DEFAULT_GENERATOR
    from .evaluation.compare import ExperimentConfig, run_experiment, write_results
    from .evaluation.evaluate import calibrate_gate, tune_phase
    from .evaluation.report import summary_table, write_report
    from .evaluation.strategies import Strategy
    from .finetune.config import FinetuneConfig
    from .finetune.data import PrepareConfig, prepare
    from .finetune.train import train
    from .index import Index
    from .registry import make_generator

    say = console.print if console is not None else print
    plan = PLANS["quick" if quick else "default"]
    out.mkdir(parents=True, exist_ok=True)
    phases: dict[str, float] = {}
    t_all = time.perf_counter()

    def phase(name: str, t0: float) -> None:
        phases[name] = time.perf_counter() - t0
        say(f"  [dim]{name}: {phases[name]:.0f}s[/dim]")

    docs, examples = load_squad(demo_data_path())
    indexed = [d for d in docs if d.title != HELD_OUT_ARTICLE]
    held_ids = {d.id for d in docs if d.title == HELD_OUT_ARTICLE}
    say(
        f"[bold]ragtune demo[/bold] ({'quick' if quick else 'default'}): {len(docs)} SQuAD paragraphs from 6 articles"
        f" (CC BY-SA 4.0); "
        f"'{HELD_OUT_ARTICLE}' is kept out of the index so its questions are unanswerable"
    )

    t0 = time.perf_counter()
    say("1/5 ingest")
    index = Index.create(out / "index", chunking=ChunkConfig())
    rep = index.ingest(indexed, sync=True)
    say(f"  {rep.counts()}, {rep.chunks_written} chunks embedded")
    phase("ingest", t0)

    t0 = time.perf_counter()
    say("2/5 prepare: clean and split the questions of the indexed articles")
    answerable = [e for e in examples if e.doc_ids[0] not in held_ids]
    qa_path = out / "questions.jsonl"
    qa_path.write_text(
        "\n".join(
            json.dumps(
                {
                    "id": e.id,
                    "question": e.question,
                    "answers": list(e.answers),
                    "doc_id": e.doc_ids[0],
                    "context": e.context,
                }
            )
            for e in answerable
        )
    )
    una_path = out / "unanswerable.jsonl"
    una_path.write_text(
        "\n".join(
            json.dumps({"id": e.id, "question": e.question, "answers": list(e.answers), "doc_id": e.doc_ids[0]})
            for e in examples
            if e.doc_ids[0] in held_ids
        )
    )
    report = prepare([qa_path], out / "data", PrepareConfig(ratios=(0.8, 0.1, 0.1), seed=0))
    say(f"  {report.read} read, {report.kept} kept; splits {report.splits} (report: {out / 'data' / 'report.md'})")
    phase("prepare", t0)

    t0 = time.perf_counter()
    say("   tune retrieval on the training questions, calibrate the answerability gate on the validation ones")
    base = make_generator(DEFAULT_GENERATOR)
    tuned = tune_phase(index, out / "data", base, plan.gate_questions, lambda m: say(f"  {m}"))
    phase("tune", t0)
    loaded = {"base": base, "rag": base}  # models already in memory; the comparison reuses them

    base_ft = FinetuneConfig(
        method="lora",
        lora_r=16,
        lora_alpha=32,
        lr=3e-4,
        batch_size=8,
        eval_every=20,  # and at the last step: the reader is evaluated once, ft twice
        patience=3,
        generate_max=0,
        warmup_steps=4,
        eval_batches=6,
    )  # the comparison does the real test; keep the losses cheap
    runs = {}
    for step_no, (name, mode, steps) in enumerate(
        (("ft", "qa", plan.qa_steps), ("rag+ft", "reader", plan.reader_steps)), start=3
    ):
        t0 = time.perf_counter()
        say(f"{step_no}/5 fine-tune '{name}': LoRA, mode {mode}, {steps} steps")
        folder = out / f"ft-{mode}"
        res = train(
            replace(base_ft, mode=mode, max_steps=steps),
            out / "data",
            folder,
            progress=_progress(say, steps),
        )
        say(f"  best validation loss {res.best_val_loss:.3f} at step {res.best_step}; {res.tokens_per_s:.0f} tokens/s")
        runs[name] = folder
        phase(f"fine-tune {name} ({mode})", t0)
        if name == "rag+ft":
            t0 = time.perf_counter()
            loaded["rag+ft"] = make_generator(DEFAULT_GENERATOR, adapter=str(folder))
            # on the questions rag's gate read: validation ones, which the adapter never trained on
            asked = tuned["gate_examples"][: plan.gate_questions]
            tuned["gates"]["rag+ft"] = calibrate_gate(index, loaded["rag+ft"], asked, lambda m: say(f"  {m}"),
                                                      split=tuned["gate_split"])  # fmt: skip
            phases["tune"] += time.perf_counter() - t0

    t0 = time.perf_counter()
    say("5/5 compare base, rag, ft, rag+ft on the same held-out questions")
    cfg = ExperimentConfig(
        index=str(out / "index"),
        questions=str(out / "data" / "test.jsonl"),
        unanswerable=str(una_path),
        documents=str(demo_data_path()),
        max_questions=plan.questions,
        max_unanswerable=plan.unanswerable,
        fresh_edits=plan.edits,
        strategies=(
            Strategy("base", False),
            Strategy("rag", True),
            Strategy("ft", False, str(runs["ft"])),
            Strategy("rag+ft", True, str(runs["rag+ft"])),
        ),
    )
    results = run_experiment(cfg, out, progress=lambda m: say(f"  {m}"), phases=phases, generators=loaded)
    results.tuning["retrieval"] = tuned["retrieval"]
    phase("compare", t0)
    results.phases = dict(phases, total=time.perf_counter() - t_all)
    write_results(results, out)  # again, now with the total time
    path = write_report(results, out)
    say("\n" + summary_table(results))
    say(
        f"\nreport: {path}\nresults: {out / 'results.json'}, {out / 'records.csv'}"
        f"; total {results.phases['total'] / 60:.1f} min"
    )
    return 0


def _progress(say, total):
    last = {"t": 0.0}

    def cb(step, _total, loss, tps):
        if time.perf_counter() - last["t"] > 15 or step == total:
            last["t"] = time.perf_counter()
            say(f"  step {step}/{total}  loss {loss:.3f}  {tps:.0f} tokens/s")

    return cb
