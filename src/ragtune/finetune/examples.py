"""Turn prepared examples into token ids and loss masks for each training mode."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from ..prompts import ABSTAIN, closed_book_messages, rag_messages, reader_messages
from ..synth.qg import qg_messages
from .config import FinetuneConfig
from .data import Example

IGNORE = -100  # label id the loss skips


@dataclass(frozen=True)
class Tokenized:
    input_ids: list[int]
    labels: list[int]  # IGNORE on every position that is not trained on

    def __len__(self) -> int:
        return len(self.input_ids)


def encode_chat(tok, messages: list[dict], target: str, max_len: int) -> Tokenized:
    """Prompt in the model's chat template, then the target and end-of-turn; loss on the target only.
    An over-long prompt loses tokens from its start, never the question's end or the target."""
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    t_ids = tok(target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    t_ids = t_ids[: max_len // 2]
    p_ids = p_ids[-(max_len - len(t_ids)) :]
    return Tokenized(p_ids + t_ids, [IGNORE] * len(p_ids) + t_ids)


def encode_text(tok, text: str, max_len: int) -> list[Tokenized]:
    """Continued pre-training: every token is a target; long texts become several windows."""
    ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return [
        Tokenized(ids[i : i + max_len], ids[i : i + max_len])
        for i in range(0, len(ids), max_len)
        if len(ids[i : i + max_len]) > 1
    ]


def raft_prompt(ex: Example, index, cfg: FinetuneConfig, rng: random.Random) -> tuple[list[dict], str]:
    """RAFT (Zhang et al. 2024): the gold chunk among retrieved distractors, or (with
    probability raft_p_no_gold) distractors only; the target cites the gold source."""
    from ..context import select_context

    hits = index.search(ex.question, k=cfg.raft_k + 3, mode="hybrid")
    gold_doc = ex.doc_id or _doc_for_context(ex, index)
    gold = [h for h in hits if h.chunk.doc_id == gold_doc]
    if not gold and gold_doc:
        gold = _gold_hits(index, gold_doc, ex)
    distractors = [h for h in hits if h.chunk.doc_id != gold_doc]
    with_gold = bool(gold) and rng.random() >= cfg.raft_p_no_gold
    chosen = (gold[:1] + distractors[: cfg.raft_k - 1]) if with_gold else distractors[: cfg.raft_k]
    rng.shuffle(chosen)
    chosen = [type(h)(h.chunk, h.score, i + 1, h.via) for i, h in enumerate(chosen)]
    rag = index.rag_config()
    sources = select_context(ex.question, chosen, index.embedder, rag.context_tokens, rag.dedupe_threshold)
    cited = [s.number for s in sources if s.doc_id == gold_doc]
    if cited:
        target = f"{ex.answer} [{cited[0]}]"
    else:
        target = ABSTAIN if cfg.raft_no_gold_target == "abstain" else ex.answer
    return rag_messages(ex.question, sources), target


def answer_sentence(context: str, answer: str) -> str:
    """The sentence of `context` that holds `answer` (the first; case-insensitive), else the text
    around the answer, else the start of the context: what the span reader reads at answer time."""
    from ..chunking import split_sentences

    low = answer.lower().strip()
    for sentence in split_sentences(context):
        if low and low in sentence.lower():
            return sentence
    at = context.lower().find(low) if low else -1
    if at >= 0:
        return context[max(0, at - 200) : at + len(answer) + 200]
    return context[:400]


def reader_example(ex: Example, index=None) -> tuple[list[dict], str]:
    """The span reader's prompt (the answer's sentence and the question) and the answer as its reply:
    fine-tuning for extracted answers (`answer_mode` extract) teaches exactly what the reader is asked,
    the likelihood of the right span of the sentence it reads. An example without its passage finds
    it in its document of `index`."""
    context = ex.context or ex.text
    if not context and index is not None and ex.doc_id:
        hits = _gold_hits(index, ex.doc_id, ex)
        context = hits[0].chunk.text if hits else ""
    if not context:
        from ..errors import InputError

        raise InputError(
            f"reader example {ex.id!r} ({ex.source or 'no source'}) has no passage (context) to read"
            + ("" if index is not None else "; give --index to find it in its document (doc_id)")
        )
    return reader_messages(answer_sentence(context, ex.answer), ex.question), ex.answer


def _doc_for_context(ex: Example, index) -> str:
    if not ex.context:
        return ""
    hits = index.search(ex.context[:1000], k=1, mode="bm25")
    return hits[0].chunk.doc_id if hits else ""


def _gold_hits(index, doc_id: str, ex: Example):
    hits = index.search(ex.question + " " + ex.answer, k=3, mode="bm25", filters={"doc_id": doc_id})
    return hits[:1]


class LazyRaft(Sequence):
    """RAFT examples built on first use: retrieval and sentence selection per example are the
    slow part, and a run with --max-steps may touch only a few of them. Each example has its
    own seeded random stream, so the result does not depend on the order of use."""

    def __init__(self, examples: Sequence[Example], tok, cfg: FinetuneConfig, index, seed: int):
        self.examples, self.tok, self.cfg, self.index, self.seed = list(examples), tok, cfg, index, seed
        self._done: dict[int, Tokenized] = {}

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i not in self._done:
            ex = self.examples[i]
            messages, target = raft_prompt(ex, self.index, self.cfg, random.Random(f"{self.seed}:{ex.id}"))
            self._done[i] = encode_chat(self.tok, messages, target, self.cfg.max_seq_len)
        return self._done[i]


def encode_examples(
    examples: Sequence[Example], tok, cfg: FinetuneConfig, index=None, seed: int = 0
) -> Sequence[Tokenized]:
    """Token ids and targets; RAFT examples (built lazily) retrieve their sources from `index`."""
    if cfg.mode == "raft":
        if index is None:
            from ..errors import ConfigError

            raise ConfigError("mode='raft' needs an index (--index DIR) to retrieve distractors from")
        return LazyRaft(examples, tok, cfg, index, seed)
    out: list[Tokenized] = []
    for ex in examples:
        if cfg.mode == "corpus":
            text = ex.text or (f"{ex.context}\n\nQ: {ex.question}\nA: {ex.answer}" if ex.question else "")
            out.extend(encode_text(tok, text, cfg.max_seq_len))
        elif cfg.mode == "reader":
            out.append(encode_chat(tok, *reader_example(ex, index), cfg.max_seq_len))
        elif cfg.mode == "qg":  # passage + answer -> the question
            out.append(encode_chat(tok, qg_messages(ex.context, ex.answer), ex.question, cfg.max_seq_len))
        else:
            out.append(encode_chat(tok, closed_book_messages(ex.question), ex.answer, cfg.max_seq_len))
    return out
