import json

import pytest

from ragtune.cli import EXIT_SKIPPED, main
from ragtune.index import Index

from .tiny_models import build_tiny_llama


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_ingest_search_info_and_exit_codes(tmp_path, corpus_dir, capsys):
    index = str(tmp_path / "ix")
    code, out, _ = run(capsys, "ingest", str(corpus_dir), "--index", index, "--embedder", "hashing", "--json")
    assert code == 0 and json.loads(out)["counts"]["added"] == 3
    (corpus_dir / "junk.txt").write_bytes(b"\x00\x01\x02" * 50)
    code, out, _ = run(capsys, "ingest", str(corpus_dir), "--index", index)
    assert code == EXIT_SKIPPED and "1 skipped" in out and "junk.txt" in out and "binary" in out
    code, out, _ = run(capsys, "search", "Eiffel Tower", "--index", index, "--k", "1", "--mode", "bm25", "--json")
    hits = json.loads(out)
    assert code == 0 and [h["chunk"]["doc_id"] for h in hits] == ["corpus/paris.txt"]
    code, out, _ = run(capsys, "index-info", "--index", index)
    assert code == 0 and "documents: 3" in out


def test_errors_are_one_line_and_change_nothing(tmp_path, corpus_dir, capsys):
    index = tmp_path / "ix"
    run(capsys, "ingest", str(corpus_dir), "--index", str(index), "--embedder", "hashing")
    version = Index.open(index).info().version
    code, _, err = run(capsys, "search", "x", "--index", str(tmp_path / "missing"))
    assert code == 1 and err.count("\n") == 1 and "no ragtune index" in err
    code, _, err = run(capsys, "search", "   ", "--index", str(index))
    assert code == 1 and "empty" in err
    code, _, err = run(capsys, "search", "x", "--index", str(index), "--k", "0")
    assert code == 1 and "--k 0" in err
    (corpus_dir / "empty.txt").write_text("")
    code, _, err = run(capsys, "ingest", str(corpus_dir), "--index", str(index), "--strict")
    assert code == 1 and "empty.txt" in err
    with pytest.raises(SystemExit):
        main(["search", "x", "--index", str(index), "--mode", "fuzzy"])
    assert Index.open(index).info().version == version


def test_ask_with_a_local_generator_folder(tmp_path, corpus_dir, capsys):
    model = build_tiny_llama(tmp_path / "tiny")
    index = str(tmp_path / "ix")
    run(capsys, "ingest", str(corpus_dir), "--index", index, "--embedder", "hashing")
    code, out, _ = run(
        capsys, "ask", "What is the capital of France?", "--index", index, "--generator", str(model), "--json"
    )
    ans = json.loads(out)
    assert code == 0
    assert ans["question"] == "What is the capital of France?"
    retrieved = {h["chunk"]["id"] for h in ans["hits"]}
    assert ans["hits"] and all(c["chunk_id"] in retrieved for c in ans["citations"])
    assert ans["timings"]["generate_s"] > 0


def test_prepare_finetune_ask_with_adapter_and_export(tmp_path, corpus_dir, capsys):
    model = build_tiny_llama(tmp_path / "tiny")
    rows = [{"question": f"w{i} the capital of w{i % 5}", "answer": f"paris w{i % 3}"} for i in range(24)]
    (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    code, out, _ = run(capsys, "prepare", str(tmp_path / "qa.jsonl"), "--out", str(tmp_path / "prep"), "--json")
    assert code == 0 and json.loads(out)["kept"] == 24
    code, out, _ = run(
        capsys,
        "finetune",
        "--data",
        str(tmp_path / "prep"),
        "--out",
        str(tmp_path / "ft"),
        "--model",
        str(model),
        "--mode",
        "qa",
        "--method",
        "lora",
        "--max-steps",
        "2",
        "--batch-size",
        "4",
        "--lora-r",
        "2",
        "--generate-max",
        "2",
        "--json",
    )
    res = json.loads(out)
    assert code == 0 and res["steps"] == 2 and res["trainable_params"] < res["total_params"]
    assert (tmp_path / "ft" / "adapter" / "adapter_config.json").exists()
    index = str(tmp_path / "ix")
    run(capsys, "ingest", str(corpus_dir), "--index", index, "--embedder", "hashing")
    code, out, _ = run(
        capsys,
        "ask",
        "the capital of france",
        "--index",
        index,
        "--adapter",
        str(tmp_path / "ft" / "adapter"),
        "--json",
    )
    assert code == 0 and json.loads(out)["hits"]
    code, out, _ = run(
        capsys,
        "ask",
        "the capital of france",
        "--no-retrieval",
        "--adapter",
        str(tmp_path / "ft" / "adapter"),
        "--json",
    )
    assert code == 0 and json.loads(out)["hits"] == []
    code, out, _ = run(capsys, "export", "--adapter", str(tmp_path / "ft"), "--out", str(tmp_path / "merged"))
    assert code == 0 and (tmp_path / "merged" / "model.safetensors").exists()
    code, _, err = run(
        capsys,
        "finetune",
        "--data",
        str(tmp_path / "prep"),
        "--out",
        str(tmp_path / "ft2"),
        "--model",
        str(model),
        "--lr",
        "-1",
    )
    assert code == 1 and "lr=-1.0" in err


def test_sweep_picks_lowest_validation_loss(tmp_path, capsys):
    model = build_tiny_llama(tmp_path / "tiny")
    rows = [{"question": f"w{i} the capital of w{i % 5}", "answer": f"paris w{i % 3}"} for i in range(24)]
    (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    run(capsys, "prepare", str(tmp_path / "qa.jsonl"), "--out", str(tmp_path / "prep"))
    code, out, _ = run(
        capsys,
        "finetune",
        "--data",
        str(tmp_path / "prep"),
        "--out",
        str(tmp_path / "sw"),
        "--model",
        str(model),
        "--max-steps",
        "2",
        "--batch-size",
        "4",
        "--generate-max",
        "1",
        "--sweep",
        "lr=1e-5,5e-2",
        "lora_r=2",
        "--json",
    )
    runs = json.loads(out)
    assert code == 0 and [r["lr"] for r in runs] == [1e-5, 5e-2]
    summary = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    best = min(runs, key=lambda r: r["best_val_loss"])
    assert summary["best"] == best["run"] and "← best" in (tmp_path / "sw" / "sweep.md").read_text()
