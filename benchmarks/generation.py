"""Generation backends on the same RAG prompts: decode tokens/s, time to first token (TTFT), and the
share of greedy answers identical to transformers fp32, with ratios against transformers fp32, and each
backend's answer F1 against the demo's gold answers with the paired bootstrap interval of its difference
from transformers' F1 (the issue's "F1 within the bootstrap interval").

Every installed backend runs on the same ~400-token prompts (a demo question, its paragraph and a
second paragraph, in ragtune's RAG prompt), greedy, `--new-tokens` new tokens, after two untimed
warm-up prompts per backend (the first one's TTFT is printed as "cold TTFT"); the backends take
turns prompt by prompt, so background load on the machine falls on all of them alike. Conversions
go to a fresh temporary cache and are timed (the GGUF -> safetensors base folder is the one shared
source, from the user's cache). `--adapter` merges a PEFT adapter into the base first, in every
backend (the bundled question-generation LoRA is src/ragtune/data/qg-adapter).

    flock /tmp/ragtune-bench.lock .venv/bin/python benchmarks/generation.py [--prompts 40] [--new-tokens 32]
        [--backends transformers,ct2,ct2-int8,ort-fp32,ort-fp32-spec,ort-int8,ort-int4,llama-f32,llama-f16,llama-gguf]
        [--adapter DIR] [--no-batch]

Then every backend answers all the prompts in one `generate()` call, as compare / evaluate / batched
serving do (transformers in batches of 8, llama.cpp decoding 8 prompts together, the others one by
one): answers/s and the ratio to transformers' batches, the product's default path.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "ragtune" / "data" / "squad_demo.json"
BASE = "smollm2-135m-instruct"
WARMUP = 2  # prompts each backend answers before the timed ones
NOT_RUN = {  # candidates that cannot run from this venv, with why (docs/generation-backends.md)
    "openvino": "optimum-intel (the exporter) pins transformers 5.5 and pulls a CUDA torch build",
}


def rag_prompts(tok, n: int, target: int = 400, golds: list | None = None):
    """`n` RAG prompts of about `target` tokens: question, its paragraph, and the next document's
    paragraph cut to fit (each question's gold answers appended to `golds`)."""
    golds = [] if golds is None else golds
    from ragtune.context import Source
    from ragtune.documents import load_squad
    from ragtune.prompts import rag_messages

    docs, questions = load_squad(DEMO)
    position = {d.id: i for i, d in enumerate(docs)}
    prompts = []
    for q in questions[:n]:
        golds.append(q.answers)
        other = docs[(position[q.doc_ids[0]] + 3) % len(docs)]
        words = other.text.split()

        def messages(k: int, q=q, other=other, words=words):
            return rag_messages(
                q.question,
                [
                    Source(1, "a", q.doc_ids[0], q.title, q.context, 1.0),
                    Source(2, "b", other.id, other.title, " ".join(words[:k]), 0.5),
                ],
            )

        lo, hi = 0, len(words)  # the most words of the second paragraph that keep the prompt <= target
        while lo < hi:
            mid = (lo + hi + 1) // 2
            size = len(
                tok.apply_chat_template(messages(mid), tokenize=True, add_generation_prompt=True, return_dict=False)
            )
            lo, hi = (mid, hi) if size <= target else (lo, mid - 1)
        prompts.append(messages(lo))
    return prompts


# -- runners: each loads (converting if need be) and yields a prompt's new token ids as decoded ---


class Transformers:
    def __init__(self, base: str, adapter: str | None):
        from ragtune.generators import TransformersGenerator

        self.gen = TransformersGenerator(base, adapter=adapter, dtype="float32")  # the named baseline
        self.gen.model  # noqa: B018 (load now, not inside the first timing)

    def tokens(self, messages, max_new: int) -> Iterator[int]:
        import threading

        import torch
        from transformers.generation.streamers import BaseStreamer

        model, tok, out = self.gen.model, self.gen.tokenizer, []
        ready = threading.Semaphore(0)

        class Collect(BaseStreamer):
            first = True

            def put(self, value):
                if self.first:  # the prompt
                    self.first = False
                    return
                out.extend(int(t) for t in value.reshape(-1))
                ready.release()

            def end(self):
                out.append(None)
                ready.release()

        ids = tok([self.gen.render(messages)], return_tensors="pt", add_special_tokens=False)["input_ids"]

        def work():
            with torch.inference_mode():
                model.generate(
                    ids,
                    max_new_tokens=max_new,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                    eos_token_id=tok.eos_token_id,
                    streamer=Collect(),
                )

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        i = 0
        while True:
            ready.acquire()
            while i < len(out):
                if out[i] is None or out[i] == tok.eos_token_id:
                    thread.join()
                    return
                yield out[i]
                i += 1


class CT2:
    def __init__(self, base: str, adapter: str | None, quantisation: str = "float32"):
        from ragtune.fast_generators import CT2Generator

        self.gen = CT2Generator(base, adapter=adapter, quantisation=quantisation)
        self.gen.generator  # noqa: B018

    def tokens(self, messages, max_new: int) -> Iterator[int]:
        return self.gen.token_ids(messages, max_new)


class Fast:
    """One of ragtune's fast generators (token by token), loaded before it is timed."""

    def __init__(self, gen):
        self.gen = gen
        gen.model  # noqa: B018

    def tokens(self, messages, max_new: int) -> Iterator[int]:
        return self.gen.token_ids(messages, max_new)


def ort_genai(base: str, adapter: str | None, precision: str, **options) -> Fast:
    from ragtune.fast_generators import OrtGenaiGenerator

    return Fast(OrtGenaiGenerator(base, adapter=adapter, precision=precision, **options))


def llama_cpp(base: str, adapter: str | None, precision: str, **options) -> Fast:
    from ragtune.llama_generator import LlamaCppGenerator

    # llama.cpp writes its GGUF from the registry model's own GGUF (BASE), not the de-quantised folder
    return Fast(LlamaCppGenerator(BASE, adapter=adapter, precision=precision, **options))


BACKENDS = {
    "transformers": ("transformers", lambda b, a: Transformers(b, a)),
    "ct2": ("ctranslate2", lambda b, a: CT2(b, a)),
    "ct2-int8": ("ctranslate2", lambda b, a: CT2(b, a, "int8")),
    "ort-fp32": ("onnxruntime_genai", lambda b, a: ort_genai(b, a, "fp32", draft_tokens=0)),
    # prompt-lookup speculative decoding (exact under greedy): k drafts after a matched 3..2-gram
    "ort-fp32-spec": ("onnxruntime_genai", lambda b, a: ort_genai(b, a, "fp32", draft_tokens=3, min_ngram=2)),
    "ort-fp32-spec-k4n1": ("onnxruntime_genai", lambda b, a: ort_genai(b, a, "fp32", draft_tokens=4, min_ngram=1)),
    # ... and the cache of the prompt's start (system message, template) kept from the last prompt
    "ort-fp32-spec-reuse": (
        "onnxruntime_genai",
        lambda b, a: ort_genai(b, a, "fp32", draft_tokens=3, min_ngram=2, reuse_prefix=True),
    ),
    "ort-int8": ("onnxruntime_genai", lambda b, a: ort_genai(b, a, "int8", draft_tokens=0)),
    "ort-int4": ("onnxruntime_genai", lambda b, a: ort_genai(b, a, "int4", draft_tokens=0)),
    # llama.cpp reads GGUF: the bundled Q4_1 file is its source (written as f32 / f16, or run as is)
    "llama-f32": ("llama_cpp", lambda b, a: llama_cpp(b, a, "f32")),
    "llama-f32-spec": ("llama_cpp", lambda b, a: llama_cpp(b, a, "f32", draft_tokens=3)),
    "llama-f16": ("llama_cpp", lambda b, a: llama_cpp(b, a, "f16")),
    "llama-q8": ("llama_cpp", lambda b, a: llama_cpp(b, a, "q8_0")),
    "llama-gguf": ("llama_cpp", lambda b, a: llama_cpp(b, a, "gguf")),
}


def timed(runner, messages, max_new: int) -> tuple[list[int], float, float | None, float]:
    """(token ids, TTFT s, decode tokens/s after the first token or None if only one, total s: from the
    call to the generator's end, prompt and end-of-turn step included)."""
    t0 = time.perf_counter()
    stamps, ids = [], []
    for token in runner.tokens(messages, max_new):
        stamps.append(time.perf_counter() - t0)
        ids.append(token)
    total = time.perf_counter() - t0
    if not stamps:
        return ids, total, None, total
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 and stamps[-1] > stamps[0] else None
    return ids, stamps[0], rate, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=40)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--adapter", default=None, help="a PEFT adapter / run folder, merged into the base everywhere")
    ap.add_argument("--no-batch", action="store_true", help="skip generate() on all prompts at once")
    args = ap.parse_args()

    from ragtune.models import resolve_generator

    base = str(resolve_generator(BASE))  # the shared source folder, in the user's cache
    wanted = [b.strip() for b in args.backends.split(",") if b.strip()]
    if "transformers" not in wanted:
        wanted.insert(0, "transformers")
    for name, why in NOT_RUN.items():
        print(f"{name:14s} not run: {why}")
    runners, convert_s = {}, {}
    with tempfile.TemporaryDirectory(prefix="ragtune-genbench-") as tmp:
        os.environ["RAGTUNE_CACHE"] = tmp  # every conversion from scratch, timed
        for name in wanted:
            package, make = BACKENDS[name]
            if importlib.util.find_spec(package) is None:
                print(f"{name:14s} not installed ({package})")
                continue
            t0 = time.perf_counter()
            runners[name] = make(base, args.adapter)
            convert_s[name] = time.perf_counter() - t0
            print(f"{name:14s} converted + loaded in {convert_s[name]:.1f}s", flush=True)
        tok = runners["transformers"].gen.tokenizer
        golds: list = []
        prompts = rag_prompts(tok, args.prompts + WARMUP, golds=golds)
        warmup, prompts, golds = prompts[:WARMUP], prompts[WARMUP:], golds[WARMUP:]
        cold = {}
        for name, runner in runners.items():  # first calls are slower (allocators, kernel choice): not timed
            cold[name] = timed(runner, warmup[0], args.new_tokens)[1]
            for messages in warmup[1:]:
                timed(runner, messages, args.new_tokens)
            if hasattr(runner.gen, "drafts"):  # count drafts over the timed prompts only
                runner.gen.drafts = type(runner.gen.drafts)()
        sizes = [
            len(tok.apply_chat_template(p, tokenize=True, add_generation_prompt=True, return_dict=False))
            for p in prompts
        ]
        print(
            f"{len(prompts)} prompts, median {statistics.median(sizes):.0f} tokens; {args.new_tokens} new, greedy"
            + (f"; adapter {args.adapter}" if args.adapter else ""),
            flush=True,
        )
        stats = {n: {"ttft": [], "rate": [], "text": [], "e2e": [], "tokens": 0, "seconds": 0.0} for n in runners}
        for i, messages in enumerate(prompts):
            for name, runner in runners.items():
                ids, ttft, rate, total = timed(runner, messages, args.new_tokens)
                stats[name]["ttft"].append(ttft)
                if rate is not None:
                    stats[name]["rate"].append(rate)
                stats[name]["e2e"].append(len(ids) / total)
                stats[name]["tokens"] += len(ids)
                stats[name]["seconds"] += total
                stats[name]["text"].append(tok.decode(ids, skip_special_tokens=True).strip())
            if (i + 1) % 10 == 0:
                print(f"  {i + 1}/{len(prompts)} prompts", flush=True)
        # as compare / evaluate / batched serving call a generator: all the prompts in one generate()
        # (transformers in batches of 8; llama.cpp 8 prompts decoded together; the others one by one)
        batched = {}
        if not args.no_batch:
            for name, runner in runners.items():
                t0 = time.perf_counter()
                texts = runner.gen.generate(prompts, args.new_tokens)
                batched[name] = (len(prompts) / (time.perf_counter() - t0), texts)

    # decode tok/s: median over prompts of (tokens - 1) / (last token - first token), the figure the 4x
    # target is read on; e2e tok/s: median of new tokens / whole call (prompt read + decode + end step),
    # and "all": total new tokens / total time over all prompts.
    ref = stats["transformers"]
    ref_rate, ref_ttft = statistics.median(ref["rate"]), statistics.median(ref["ttft"])
    ref_e2e, ref_all = statistics.median(ref["e2e"]), ref["tokens"] / ref["seconds"]
    print(
        f"\n{'backend':18s} {'convert s':>9s} {'decode tok/s':>12s} {'x tf':>6s} {'TTFT ms':>8s} {'x tf':>6s} "
        f"{'cold TTFT':>9s} {'e2e tok/s':>9s} {'x tf':>6s} {'all tok/s':>9s} {'x tf':>6s} {'same answer':>11s} "
        f"{'F1':>5s} {'F1 - tf [95% CI]':>22s} drafts kept"
    )
    from ragtune.evaluation.metrics import f1_score
    from ragtune.evaluation.stats import paired_bootstrap

    f1 = {n: [100 * f1_score(text, g) for text, g in zip(s["text"], golds)] for n, s in stats.items()}
    for name, s in stats.items():
        rate, ttft, e2e = statistics.median(s["rate"]), statistics.median(s["ttft"]), statistics.median(s["e2e"])
        every = s["tokens"] / s["seconds"]
        same = sum(a == b for a, b in zip(s["text"], ref["text"])) / len(prompts)
        gen = runners[name].gen
        drafts = getattr(gen, "drafts", None)
        kept = f"{drafts.accepted}/{drafts.proposed} in {drafts.passes} passes" if drafts and drafts.passes else "-"
        test = paired_bootstrap(f1[name], f1["transformers"], (name, "transformers"), "f1")
        interval = f"{test.diff:+5.1f} [{test.low:+5.1f}, {test.high:+5.1f}]"
        print(
            f"{name:18s} {convert_s[name]:9.1f} {rate:12.1f} {rate / ref_rate:6.2f} {ttft * 1000:8.0f} "
            f"{ref_ttft / ttft:6.2f} {cold[name] * 1000:9.0f} {e2e:9.1f} {e2e / ref_e2e:6.2f} {every:9.1f} "
            f"{every / ref_all:6.2f} {same:11.0%} {statistics.mean(f1[name]):5.1f} {interval:>22s} {kept}"
        )
    if batched:
        ref_rate, ref_texts = batched["transformers"]
        print(f"\n{'backend':18s} {'answers/s, all prompts in one generate()':>40s} {'x tf':>6s} {'same answer':>11s}")
        for name, (rate, texts) in batched.items():
            same = sum(a == b for a, b in zip(texts, ref_texts)) / len(texts)
            print(f"{name:18s} {rate:40.2f} {rate / ref_rate:6.2f} {same:11.0%}")
    for name, s in stats.items():
        diff = next((i for i, (a, b) in enumerate(zip(s["text"], ref["text"])) if a != b), None)
        if diff is not None:
            print(f"first difference, {name}: {s['text'][diff]!r} vs transformers {ref['text'][diff]!r}")


if __name__ == "__main__":
    main()
