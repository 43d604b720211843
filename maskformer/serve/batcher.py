"""Dynamic batching: requests that arrive within a few milliseconds of each other share one predictor call,
on one worker thread that owns the model."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from ..model.config import InferenceConfig
from ..predict.inputs import LoadedImage
from ..predict.results import Result

# (images, task, thresholds) -> one result per image, in order.
PredictFn = Callable[[Sequence[LoadedImage], str, InferenceConfig], list[Result]]


class QueueFull(Exception):
    """The batcher holds ``max_queue`` waiting requests already."""


@dataclass(eq=False)
class Job:
    image: LoadedImage
    task: str
    inference: InferenceConfig
    future: Future = field(default_factory=Future)


class Batcher:
    """Runs ``predict`` on a worker thread over batches of up to ``max_batch`` queued jobs.

    A batch is formed from the first waiting job plus whatever arrives within ``max_wait_s`` (or is already
    waiting), and split into groups of one task and one set of thresholds. At most ``max_queue`` jobs wait;
    :meth:`submit` raises :class:`QueueFull` beyond that. A job whose future was cancelled while it waited
    (its request timed out) is skipped. :meth:`stop` lets the jobs already queued finish first.
    """

    def __init__(self, predict: PredictFn, max_batch: int = 8, max_wait_s: float = 0.005, max_queue: int = 64):
        if max_batch < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError(f"need max_batch >= 1, max_queue >= 1, max_wait_s >= 0; got {max_batch}, "
                             f"{max_queue}, {max_wait_s}")  # fmt: skip
        self.predict = predict
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._running = 0
        self._batches = 0
        self._thread = threading.Thread(target=self._work, name="maskformer-batcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish the queued jobs, then end the worker thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join()

    def submit(self, image: LoadedImage, task: str, inference: InferenceConfig) -> Future:
        """Queue one image; the future gets its result (or the predictor's exception)."""
        job = Job(image, task, inference)
        with self._cond:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"{len(self._queue)} requests are waiting already (--max-queue {self.max_queue})")
            self._queue.append(job)
            self._cond.notify_all()
        return job.future

    def stats(self) -> dict[str, int]:
        """Jobs waiting, jobs being predicted, batches run so far."""
        with self._cond:
            return {"queued": len(self._queue), "running": self._running, "batches": self._batches}

    def _take(self) -> list[Job] | None:
        """The next batch, or None once stopping with nothing left."""
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            batch = [self._queue.popleft()]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch:
                if self._queue:
                    batch.append(self._queue.popleft())
                    continue
                left = deadline - time.monotonic()
                if left <= 0 or self._stopping:
                    break
                self._cond.wait(left)
            self._running = len(batch)
            return batch

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            live = [job for job in batch if job.future.set_running_or_notify_cancel()]
            while live:
                first, group, rest = live[0], [], []
                for job in live:
                    same = job.task == first.task and job.inference == first.inference
                    (group if same else rest).append(job)
                live = rest
                try:
                    results = self.predict([j.image for j in group], first.task, first.inference)
                except Exception as err:  # handed to the requests; the worker keeps serving
                    for job in group:
                        job.future.set_exception(err)
                    continue
                for job, result in zip(group, results):
                    job.future.set_result(result)
            with self._cond:
                self._running = 0
                self._batches += 1
