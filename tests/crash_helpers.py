"""Entry points the crash tests run in a subprocess (and then kill): `python -m tests.crash_helpers VERB ARGS`.

Every verb prints progress lines (flushed) that the tests wait for before they kill.

  compare CONFIG.json OUT SLEEP          run_experiment with scripted generators that sleep SLEEP s per answer
  train CONFIG.json DATA OUT [--step-sleep S]  finetune.train with a FinetuneConfig (S s of pause after each step)
  ingest INDEX DOCS SLEEP                Index.create(hashing embedder).ingest(DOCS), SLEEP s per embed call
  serve INDEX PORT GEN_SLEEP EMBED_SLEEP create_app + uvicorn on 127.0.0.1:PORT (as `ragtune serve` runs it)
  evaluate DOCS OUT SLEEP                run_evaluate (base, rag) with scripted models; SLEEP s per compare answer
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

from ragtune.config import ChunkConfig
from ragtune.prompts import ABSTAIN
from ragtune.testing import HashingEmbedder, ScriptedGenerator

CHUNKING = ChunkConfig(chunk_tokens=40, overlap_tokens=8)


def say(*parts) -> None:
    print(*parts, flush=True)


def town_answer(messages) -> str:
    """Right when the sources hold the fact: the capital of Land<i>, or the year Town<i> was founded."""
    user = messages[-1]["content"]
    question = user.rsplit("Question:", 1)[-1]
    m = re.search(r"capital of (Land\d+)", question)
    if m:
        found = re.search(rf"(Town\d+) is the capital of {m.group(1)}\b", user.rsplit("Question:", 1)[0])
        return f"{found.group(1)} [1]" if found else ABSTAIN
    m = re.search(r"When was (Town\d+) founded", question)
    if m:
        found = re.search(rf"{m.group(1)} was founded in (\d+)", user.rsplit("Question:", 1)[0])
        return f"{found.group(1)} [1]" if found else ABSTAIN
    return ABSTAIN


class SlowScripted(ScriptedGenerator):
    """A scripted generator that takes `sleep` seconds per answer (and says when it starts one)."""

    def __init__(self, respond, name: str, sleep: float = 0.0):
        super().__init__(respond, name=name)
        self.sleep = sleep

    def generate(self, prompts, max_new_tokens: int = 48):
        say(f"generating {len(prompts)}")
        time.sleep(self.sleep * len(prompts))
        return super().generate(prompts, max_new_tokens)


def compare_generators(sleep: float = 0.0) -> dict:
    return {
        "base": SlowScripted(lambda m: "Madrid", "closed-scripted", sleep),
        "rag": SlowScripted(town_answer, "town-scripted", sleep),
    }


def experiment(config: dict):
    from ragtune.evaluation.compare import ExperimentConfig
    from ragtune.evaluation.strategies import Strategy

    return ExperimentConfig(**{**config, "strategies": tuple(Strategy(**s) for s in config["strategies"])})


class SynthModels:
    """Scripted question writer and reader for `evaluate`'s synthesis: QG asks a fresh question per
    answer; the reader answers a question with the answer it was written for."""

    def __init__(self):
        self.answer_of: dict[str, str] = {}
        self.qg = ScriptedGenerator(self._question, name="scripted-qg")
        self.reader = ScriptedGenerator(self._answer, name="scripted-reader")

    def _question(self, messages):
        item = json.loads(messages[-1]["content"])
        q = f"Which item does note {len(self.answer_of) + 1} describe?"
        self.answer_of.setdefault(q, item["answer"])
        return q

    def _answer(self, messages):
        q = messages[-1]["content"].rsplit("Question:", 1)[1].strip()
        return f"{self.answer_of[q]} [1]" if q in self.answer_of else ABSTAIN


def json_qg_prompts() -> None:
    """QG prompts as JSON (passage, answer), so the scripted writer can read them."""
    from ragtune.synth import generate as gen_mod

    gen_mod.qg_messages = lambda passage, answer: [
        {"role": "user", "content": json.dumps({"passage": passage, "answer": answer})}
    ]


def first_source_sentence(messages) -> str:
    user = messages[-1]["content"]
    return user.split(">", 1)[1].split(".")[0] + " [1]" if "<source" in user else "Madrid"


def evaluate_generators(sleep: float = 0.0) -> dict:
    m = SynthModels()
    return {
        "qg": m.qg,
        "reader": m.reader,
        "base": SlowScripted(lambda msgs: "Madrid", "closed-scripted", sleep),
        "rag": SlowScripted(first_source_sentence, "source-scripted", sleep),
    }


def slow_embedder(sleep: float, dim: int = 64) -> HashingEmbedder:
    emb = HashingEmbedder(dim)
    real = emb.embed

    def embed(texts):
        say(f"embedding {len(texts)}")
        time.sleep(sleep)
        return real(texts)

    emb.embed = embed
    return emb


class SaysShutdown:
    """ASGI wrapper that prints "shutdown" when the server sends the lifespan shutdown event, which
    uvicorn does only after a graceful drain (not when forced to quit)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)

        async def receive_and_say():
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                say("shutdown")
            return message

        return await self.app(scope, receive_and_say, send)


def main(argv: list[str]) -> int:
    verb, args = argv[0], argv[1:]
    if verb == "compare":
        from ragtune.evaluation.compare import run_experiment

        config, out, sleep = json.loads(Path(args[0]).read_text()), args[1], float(args[2])
        run_experiment(experiment(config), out, progress=say, generators=compare_generators(sleep))
        say("done")
    elif verb == "train":
        import torch

        from ragtune.finetune.config import FinetuneConfig

        torch.set_num_threads(1)  # as the test process: the same arithmetic, and no fight over 2 cores
        from ragtune.finetune.train import train

        cfg = FinetuneConfig(**json.loads(Path(args[0]).read_text()))
        pause = float(args[4]) if args[3:4] == ["--step-sleep"] else 0.0

        def progress(step, total, loss, tps):
            say(f"step {step}/{total}")
            time.sleep(pause)  # a slower step, so that a kill can land anywhere in the run

        res = train(cfg, args[1], args[2], progress=progress)
        say("result " + json.dumps({"best_val_loss": res.best_val_loss, "resumed_from_step": res.resumed_from_step,
                                    "steps": res.steps}))  # fmt: skip
    elif verb == "evaluate":
        from ragtune.evaluation.evaluate import EvaluateConfig, run_evaluate

        json_qg_prompts()
        cfg = EvaluateConfig(budget_min=3, strategies=("base", "rag"), embedder="hashing-64")
        run_evaluate([args[0]], args[1], cfg, say=say, generators=evaluate_generators(float(args[2])))
        say("done")
    elif verb == "ingest":
        from ragtune.index import Index

        index = Index.create(args[0], embedder=slow_embedder(float(args[2])), chunking=CHUNKING)
        rep = index.ingest([args[1]], progress=lambda phase, done, total: say(f"{phase} {done}/{total}"))
        say(f"done {rep.counts()}")
    elif verb == "serve":
        import uvicorn

        from ragtune.server.app import ServeConfig, create_app

        index, port, gen_sleep, embed_sleep = args[0], int(args[1]), float(args[2]), float(args[3])
        if embed_sleep:  # the index's embedder (hashing-64, made by the registry) slowed down for uploads
            real = HashingEmbedder.embed

            def embed(self, texts):
                say(f"embedding {len(texts)}")
                time.sleep(embed_sleep)
                return real(self, texts)

            HashingEmbedder.embed = embed
        gen = SlowScripted(town_answer, "town-scripted", gen_sleep)
        app = create_app(ServeConfig(index=index), generators={"rag": gen, "base": gen})
        say("serving")
        # As `ragtune serve` runs it (cli.cmd_serve). On SIGTERM uvicorn stops accepting, lets the
        # requests in flight finish, runs the lifespan shutdown, then re-raises SIGTERM (exit -15).
        uvicorn.run(SaysShutdown(app), host="127.0.0.1", port=port, log_level="warning")
        say("stopped")
    else:
        raise SystemExit(f"unknown verb {verb!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
