"""Micro-batching: concurrent requests answered by one batched forward pass.

Requests wait in a list on the event loop; one drain task hands everything that is waiting
to a single compute thread, which answers each group of requests with the same options in
one :meth:`~mirec.recommender.Recommender.recommend` call for all their histories (or users).
While the thread computes, new requests pile up and make the next batch, so a lone request
is answered at once (no timer) and a busy server batches by itself. PyTorch releases the
GIL inside its kernels, so the compute thread runs beside the event loop's HTTP work.
The batched lists are the one-by-one lists (``Recommender.recommend`` ranks each history
of a batch on its own), so batching never changes an answer.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from mirec.recommender import Recommendations, Recommender

T = TypeVar("T")

MAX_BATCH = 128
"""Requests in one pass at most: a bound on one pass's latency and memory (on amazon-beauty,
12,101 items, the cost per request is flat from 16 to 128 histories a pass and rises at
256, whose scores no longer fit in the cache)."""


class MicroBatcher:
    """Runs every model call of a server on one compute thread, batching recommendations."""

    def __init__(
        self, recommender: Recommender, max_batch: int = MAX_BATCH, index: str | None = None
    ) -> None:
        """``index``: the kind of the folder's item index that lists come from (``mirec
        index``), None for the exact path."""
        self.recommender = recommender
        self.max_batch = max_batch
        self.index = index
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mirec-compute")
        self._waiting: list[tuple[Hashable, Any, asyncio.Future]] = []
        self._drain: asyncio.Task | None = None
        self.passes = 0
        """Batched passes so far; ``batched / passes`` is the mean batch size."""
        self.batched = 0
        """Requests answered by those passes."""

    async def recommend(
        self,
        history: Sequence[int | str],
        n: int,
        exclude_history: bool,
        diversity_lambda: float | None,
        quota_alpha: float | None = None,
    ) -> Recommendations:
        """``Recommender.recommend(history, ...)``, batched with concurrent requests."""
        options = ("history", n, exclude_history, diversity_lambda, quota_alpha)
        return await self._submit(options, history)

    async def recommend_user(
        self,
        user: int | str,
        n: int,
        exclude_history: bool,
        diversity_lambda: float | None,
        quota_alpha: float | None = None,
    ) -> Recommendations:
        """``Recommender.recommend(user=user, ...)``, batched with concurrent requests."""
        options = ("user", n, exclude_history, diversity_lambda, quota_alpha)
        return await self._submit(options, user)

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` on the compute thread, unbatched (every model call goes
        through that one thread, so requests never compete for the cores in PyTorch)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def close(self) -> None:
        """Finish the pass in progress and stop the compute thread."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def _submit(self, options: Hashable, query: Any) -> Recommendations:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting.append((options, query, future))
        if self._drain is None:
            self._drain = loop.create_task(self._drain_waiting())
        return await future

    async def _drain_waiting(self) -> None:
        loop = asyncio.get_running_loop()
        batch: list[tuple[Hashable, Any, asyncio.Future]] = []
        try:
            while self._waiting:
                batch = self._waiting[: self.max_batch]
                del self._waiting[: self.max_batch]
                self.passes += 1
                self.batched += len(batch)
                queries = [(options, query) for options, query, _ in batch]
                results = await loop.run_in_executor(self._executor, self._answer, queries)
                for (_, _, future), result in zip(batch, results, strict=True):
                    if future.done():  # the client went away
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
                batch = []
        finally:
            self._drain = None
            # only when the drain itself was cancelled (the server stops): nobody is left
            # waiting forever
            for _, _, future in [*batch, *self._waiting]:
                future.cancel()
            self._waiting.clear()

    def _answer(self, queries: list[tuple[Hashable, Any]]) -> list[Any]:
        """On the compute thread: a list or an exception for each query, one pass per group
        of queries with the same options."""
        groups: dict[Hashable, list[int]] = defaultdict(list)
        for i, (options, _) in enumerate(queries):
            groups[options].append(i)
        results: list[Any] = [None] * len(queries)
        for options, members in groups.items():
            asked = [queries[i][1] for i in members]
            try:
                answers: list[Any] = self._pass(options, asked)
            except Exception:
                # one bad query (an unknown user) fails its whole group: answer each query
                # alone, so that only the bad one gets the error
                answers = [self._alone(options, query) for query in asked]
            for i, answer in zip(members, answers, strict=True):
                results[i] = answer
        return results

    def _alone(self, options: Hashable, query: Any) -> Any:
        try:
            return self._pass(options, [query])[0]
        except Exception as err:
            return err

    def _pass(self, options: Hashable, queries: list[Any]) -> list[Recommendations]:
        kind, n, exclude_history, diversity_lambda, quota_alpha = options  # type: ignore[misc]
        # the kind names recommend's argument, history or user; a list of histories (each a
        # list) or of user ids is always several, so the answer is one list per query
        return self.recommender.recommend(  # type: ignore[return-value]
            n=n,
            exclude_history=exclude_history,
            diversity_lambda=diversity_lambda,
            quota_alpha=quota_alpha,
            index=self.index,
            **{kind: queries},
        )
