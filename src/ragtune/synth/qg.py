"""Question generation (QG): the prompt, the passage it reads, the bundled adapter, and the
training examples built from SQuAD.

The bundled generator is taught QG with a small LoRA adapter (`data/qg-adapter/`, trained by
`scripts/train_qg_adapter.py`). It reads the answer's sentence and its neighbours — tens of
tokens, not a whole paragraph — which is what makes training fit in well under an hour on a CPU.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from ..chunking import split_sentences
from ..errors import ModelNotFoundError
from ..prompts import READER_SYSTEM, reader_messages  # noqa: F401  (the span reader's prompt)

QG_SYSTEM = (
    "Write one question about the passage whose answer is exactly the given answer. "
    "Do not put the answer in the question."
)

# Never in the adapter's training data: the demo's articles, and the articles quality is measured on.
DEMO_ARTICLES = ("Normans", "Sky_(United_Kingdom)", "Amazon_rainforest", "Packet_switching", "Black_Death",
                 "Jacksonville,_Florida")  # fmt: skip
# Six of the larger dev articles (215-291 questions each), on different subjects.
EVAL_ARTICLES = ("Rhine", "Warsaw", "Oxygen", "Kenya", "Steam_engine", "Immune_system")
HELD_OUT_ARTICLES = DEMO_ARTICLES + EVAL_ARTICLES


def qg_messages(passage: str, answer: str) -> list[dict]:
    """Chat messages asking for a question about `passage` whose answer is `answer`."""
    return [
        {"role": "system", "content": QG_SYSTEM},
        {"role": "user", "content": f"Passage: {passage}\nAnswer: {answer}"},
    ]


def qg_passage(sentences: list[str], i: int, window: int = 1) -> str:
    """Sentence `i` with `window` neighbours on each side."""
    return " ".join(sentences[max(0, i - window) : i + window + 1])


def bundled_adapter() -> Path:
    """The question-generation LoRA adapter that ships with ragtune."""
    path = Path(str(resources.files("ragtune") / "data" / "qg-adapter"))
    if not (path / "adapter_config.json").is_file():
        raise ModelNotFoundError(
            f"the bundled question-generation adapter is missing from {path}; reinstall ragtune, "
            "rebuild it with scripts/train_qg_adapter.py, or pass --generator NAME to prompt another model"
        )
    return path


def qg_examples_from_squad(path: str | Path, exclude: tuple[str, ...] = HELD_OUT_ARTICLES, window: int = 1,
                           max_passage_words: int = 70) -> list[dict]:  # fmt: skip
    """QG training records (QA JSONL fields: id, question, answer, context, doc_id) from a SQuAD
    v1.1 file: passage = the sentence holding the first gold answer ± `window` sentences. Articles
    in `exclude` are left out; so are questions that contain their answer and over-long passages."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    skip = {t.replace(" ", "_") for t in exclude}
    out = []
    for article in data["data"]:
        if article["title"].replace(" ", "_") in skip:
            continue
        for p_i, para in enumerate(article["paragraphs"]):
            sentences = split_sentences(para["context"])
            for qa in para["qas"]:
                if not qa.get("answers"):
                    continue
                answer = qa["answers"][0]["text"].strip()
                i = next((k for k, s in enumerate(sentences) if answer in s), None)
                question = " ".join(qa["question"].split())
                if i is None or not answer or answer.lower() in question.lower():
                    continue
                passage = qg_passage(sentences, i, window)
                if len(passage.split()) > max_passage_words:
                    passage = sentences[i]
                    if len(passage.split()) > max_passage_words:
                        continue
                out.append({"id": qa["id"], "question": question, "answer": answer, "context": passage,
                            "doc_id": f"{article['title']}/{p_i}"})  # fmt: skip
    return out
