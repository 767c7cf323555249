"""Batched answering: questions that arrive together are answered by one `answer_batch` call.

A request puts its question in a queue and waits for its answer. One worker thread per model
takes the oldest waiting question and every other one with the same pipeline settings (strategy,
k, mode, answer length), up to `max_batch`, and answers them in one call. When the model is idle
the worker first waits `window_s` for company (counted from when the model became free, or from
the first question's arrival if later); when it is busy, whatever arrived meanwhile forms the next
batch (continuous batching at the granularity of whole answers). Callers answered by the last batch
usually ask again as soon as their answers reach them, which takes a moment for a large batch
(16 answers took ~30 ms to go out and come back on a 2-core CPU): so while fewer questions wait than
the last batch held, the worker waits for them up to `return_share` of that batch's time, and
starts as soon as they are back. Without this, one caller that came back early was answered alone
while the other fifteen waited for it (batches of 15 and 1, measured). Each question
keeps its own filters, so callers with different document access share a batch safely: retrieval
runs per question inside the store, and the model reads each question's sources in its own row.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

# answer(pipeline, questions, filters per question) -> one result per question
AnswerBatch = Callable[[object, Sequence[str], Sequence[dict | None]], list]


@dataclass
class _Job:
    key: Hashable
    pipe: object
    question: str
    filters: dict | None
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    arrived: float = field(default_factory=time.monotonic)


class Batcher:
    """Gathers concurrent questions for one model into batches (see the module's docstring).

    `max_batch=1` answers one question per call, in arrival order, as an unbatched server would."""

    def __init__(self, answer: AnswerBatch, window_s: float = 0.005, max_batch: int = 16, return_share: float = 0.05):
        self.answer = answer
        self.window_s = window_s
        self.max_batch = max_batch
        self.return_share = return_share
        self.batches = 0  # batches run so far, and the questions in them (for /metrics and tests)
        self.answered = 0
        self._idle_since = 0.0  # when the last batch's answers were handed back
        self._last_size = 0  # the questions in it, and how long it took
        self._last_s = 0.0
        self._queue: list[_Job] = []
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None

    async def submit(self, key: Hashable, pipe, question: str, filters: dict | None):
        """The answer to `question`, from a batch of questions with the same `key`. Cancelling the
        wait (a time-out) withdraws the question if its batch has not started yet."""
        loop = asyncio.get_running_loop()
        job = _Job(key, pipe, question, filters, loop.create_future(), loop)
        with self._cond:
            self._queue.append(job)
            if self._worker is None:  # the worker exits when the queue runs dry; start another
                self._worker = threading.Thread(target=self._work, name="ragtune-batcher", daemon=True)
                self._worker.start()
            self._cond.notify()
        return await job.future

    def _next_batch(self) -> list[_Job]:
        """Wait for the next batch (under the lock); [] when the queue is empty and the worker ends."""
        while True:
            self._queue = [j for j in self._queue if not j.future.done()]  # timed out: withdrawn
            if not self._queue:
                self._worker = None
                return []
            first = self._queue[0]
            same = [j for j in self._queue if j.key == first.key][: self.max_batch]
            now = time.monotonic()
            wait = max(first.arrived, self._idle_since) + self.window_s - now
            if 1 < self._last_size <= self.max_batch and len(same) < self._last_size:
                # the last batch's callers are on their way back: wait for them, a little
                wait = max(wait, self._idle_since + self.return_share * self._last_s - now)
            elif self._last_size > 1 and len(same) >= self._last_size:
                wait = 0.0  # as many as last time: go
            if len(same) >= self.max_batch or wait <= 0:
                taken = {id(j) for j in same}
                self._queue = [j for j in self._queue if id(j) not in taken]
                return same
            self._cond.wait(wait)

    def _work(self) -> None:
        while True:
            with self._cond:
                batch = self._next_batch()
            if not batch:
                return
            self.batches += 1
            self.answered += len(batch)
            t0 = time.monotonic()
            results = self._run(batch)
            for job, (value, error) in zip(batch, results):
                try:
                    job.loop.call_soon_threadsafe(_settle, job.future, value, error)
                except RuntimeError:  # its event loop has closed: nobody waits for this answer
                    pass
            with self._cond:
                self._idle_since = time.monotonic()
                self._last_size, self._last_s = len(batch), self._idle_since - t0

    def _run(self, batch: list[_Job]) -> list[tuple[object, BaseException | None]]:
        """(answer, None) or (None, error) per job. When the batch fails, each question is retried
        alone, so one bad question fails only its own request."""
        try:
            answers = self.answer(batch[0].pipe, [j.question for j in batch], [j.filters for j in batch])
            return [(a, None) for a in answers]
        except Exception as exc:
            if len(batch) == 1:
                return [(None, exc)]
        out: list[tuple[object, BaseException | None]] = []
        for job in batch:
            try:
                out.append((self.answer(job.pipe, [job.question], [job.filters])[0], None))
            except Exception as exc:
                out.append((None, exc))
        return out


def _settle(future: asyncio.Future, value, error: BaseException | None) -> None:
    if future.done():  # the request timed out meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
