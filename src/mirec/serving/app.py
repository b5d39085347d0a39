"""The HTTP API of ``mirec serve``: a model folder answering "what next?" (FastAPI).

``create_app(recommender)`` builds the app; more routers are added to it with
``app.include_router``. Every list comes from :class:`~mirec.recommender.Recommender`, so
an HTTP answer is the Python answer: concurrent ``/recommend`` and user requests are
micro-batched into one forward pass (:mod:`mirec.serving.batching`), which does not change
any list.

Bad requests are answered, never crash the server and never give a 500: a body that is not
JSON, a field of the wrong type, ``n`` outside 1..1000 (or the catalogue), a history longer
than :data:`MAX_HISTORY`, a body over :data:`MAX_BODY_BYTES` (by its Content-Length or as it
streams in) and anything :class:`~mirec.errors.MirecError` refuses (an id holding a control
character or a lone surrogate, a setting the served model does not have) get a 4xx whose
JSON body is ``{"detail": "one line"}``; an unknown user or item is a 404. Anything else
that goes wrong is logged with its traceback and answered 503 with one line, never a 500
with a traceback for a body.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr
from pydantic_core import to_json
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mirec.core.config import MAX_DIVERSITY_LAMBDA, MAX_QUOTA_ALPHA
from mirec.errors import MirecError, UnknownIdError

# the model's record, renamed: ModelInfo here is the schema of the /model answer (OpenAPI)
from mirec.recommender import ModelInfo as ModelDescription
from mirec.recommender import Recommendations, Recommender
from mirec.serving.batching import MicroBatcher
from mirec.serving.page import page_router
from mirec.version import __version__

MAX_N = 1000
"""The longest list one request may ask for."""
MAX_HISTORY = 10_000
"""The longest history one request may send (the model reads only its last ``maxlen``)."""
MAX_BODY_BYTES = 1 << 20
"""Request bodies over 1 MiB are refused (413) before they are parsed."""

log = logging.getLogger("mirec.serve")

ItemId = StrictInt | StrictStr
"""A raw item id as JSON sends it: a number or a string (``"50"`` finds item 50 of an
integer catalogue); a float, bool, null, list or object is refused."""
DiversityLambda = Annotated[StrictFloat, Field(ge=0, le=MAX_DIVERSITY_LAMBDA, allow_inf_nan=False)]
QuotaAlpha = Annotated[StrictFloat, Field(ge=0, le=MAX_QUOTA_ALPHA, allow_inf_nan=False)]


class RecommendRequest(BaseModel):
    """A history to recommend for."""

    model_config = ConfigDict(extra="forbid")

    history: list[ItemId] = Field(
        max_length=MAX_HISTORY,
        description="Raw item ids, oldest first; ids the catalogue does not know are "
        "dropped and listed in unknown_items.",
        examples=[[50, 172, 181, 1, 121]],
    )
    n: StrictInt = Field(50, ge=1, le=MAX_N, description="How many items.")
    exclude_history: StrictBool = Field(False, description="Leave out the history's items.")
    diversity_lambda: DiversityLambda | None = Field(
        None,
        description="ComiRec's diversity-controllable list (needs item categories); "
        "null: the model's own setting.",
    )
    quota_alpha: QuotaAlpha | None = Field(
        None,
        description="The quota merge: each interest's share of the list by its share of the "
        "history, sharpened by alpha (0: equal shares); null: the model's own setting. Not "
        "with diversity_lambda.",
    )


class RecommendedItem(BaseModel):
    item: int | str = Field(description="The raw item id, in the catalogue's type.")
    score: float = Field(description="The model's score (cold start: training count).")
    interest: int | None = Field(
        description="Which of the user's interests found the item (null: popularity "
        "fallback for a history with no known item, or a similar-items list)."
    )
    title: str | None = Field(description="The item's title, where the dataset has one.")
    categories: list[str] | None = Field(
        description="The item's categories, where the dataset has them."
    )


class RecommendResponse(BaseModel):
    items: list[RecommendedItem]
    unknown_items: list[int | str] = Field(
        description="The history's ids that the catalogue does not know (left out)."
    )
    model: str


class SimilarResponse(BaseModel):
    items: list[RecommendedItem]
    model: str


class ModelInfo(BaseModel):
    model: str
    dataset: str
    num_interests: int = Field(description="K, the interests per user.")
    n_items: int
    n_users: int
    maxlen: int = Field(description="How many of a history's most recent items are read.")
    has_titles: bool
    has_categories: bool
    test_metrics: dict[str, Any] | None = Field(
        description="The run's test metrics (metrics.json), when the folder has them."
    )
    index: str | None = Field(
        description="The item index lists come from (mirec index), null for the exact path."
    )
    mirec_version: str


class Health(BaseModel):
    status: str
    model: str
    batched_passes: int = Field(description="Micro-batched forward passes so far.")
    batched_requests: int = Field(description="Requests answered by those passes.")


class Problem(BaseModel):
    detail: str = Field(description="What was wrong with the request, in one line.")


PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "description": text}
    for code, text in (
        (404, "Unknown user or item"),
        (413, "Body over 1 MiB"),
        (422, "Invalid request"),
        (503, "The server failed to answer (logged)"),
    )
}


def create_app(
    recommender: Recommender,
    index: str | None = None,
    degraded: Callable[[], str | None] | None = None,
) -> FastAPI:
    """The HTTP API and web page over ``recommender`` (a retrieval model); lists come from
    the folder's ``index`` (a kind of ``mirec index``) or, with None, the exact path.
    ``degraded`` says, when it returns a line, why ``/health`` answers 503 (a service whose
    supervisor could not restart a worker)."""
    batcher = MicroBatcher(recommender, index=index)
    info = recommender.info
    catalogue = _Catalogue(info)
    model_info = _model_info(info, index)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        batcher.close()

    app = FastAPI(
        title="mirec",
        summary=f"{info.name} on {info.dataset}: multi-interest recommendations",
        version=__version__,
        lifespan=lifespan,
        responses=PROBLEMS,
    )
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(CatchAll)  # added last: the outermost, around BodyLimit too
    app.state.recommender = recommender
    app.state.batcher = batcher
    _handle_errors(app)

    def merge(
        diversity_lambda: float | None, quota_alpha: float | None
    ) -> tuple[float | None, float | None]:
        """The merge a request asks for: the model's own settings when it asks for neither;
        one asked leaves the model's other out, as ``Recommender.recommend`` does (the two
        cannot combine, and both asked are refused there)."""
        if diversity_lambda is None and quota_alpha is None:
            return info.config.diversity_lambda, info.config.quota_alpha
        return diversity_lambda, quota_alpha

    @app.post("/recommend", response_model=RecommendResponse, dependencies=DECLARED_QUERY_ONLY)
    async def recommend(body: RecommendRequest) -> Response:
        """The top-n items after a history of raw item ids (oldest first)."""
        recs = await batcher.recommend(
            body.history,
            body.n,
            body.exclude_history,
            *merge(body.diversity_lambda, body.quota_alpha),
        )
        return catalogue.response(recs)

    @app.get(
        "/users/{user}/recommendations",
        response_model=RecommendResponse,
        dependencies=DECLARED_QUERY_ONLY,
    )
    async def user_recommendations(
        user: Annotated[str, Path(description="A raw user id of the training log.")],
        n: Annotated[int, Query(ge=1, le=MAX_N)] = 50,
        exclude_history: bool = False,
        diversity_lambda: Annotated[
            float | None, Query(ge=0, le=MAX_DIVERSITY_LAMBDA, allow_inf_nan=False)
        ] = None,
        quota_alpha: Annotated[
            float | None, Query(ge=0, le=MAX_QUOTA_ALPHA, allow_inf_nan=False)
        ] = None,
    ) -> Response:
        """The top-n items for a user of the training log, from their stored history."""
        recs = await batcher.recommend_user(
            user, n, exclude_history, *merge(diversity_lambda, quota_alpha)
        )
        return catalogue.response(recs)

    @app.get(
        "/items/{item}/similar", response_model=SimilarResponse, dependencies=DECLARED_QUERY_ONLY
    )
    async def similar_items(
        item: Annotated[str, Path(description="A raw item id of the catalogue.")],
        n: Annotated[int, Query(ge=1, le=MAX_N)] = 10,
    ) -> Response:
        """The n items closest to ``item`` by cosine of the item embeddings."""
        recs = await batcher.call(recommender.similar_items, item, n)
        return catalogue.response(recs, unknown=False)

    @app.get("/model", response_model=ModelInfo, dependencies=DECLARED_QUERY_ONLY)
    async def model() -> dict[str, Any]:
        """What is served: the model, its data and its test metrics."""
        return model_info

    @app.api_route(  # HEAD too: load balancers and uptime probes ask without a body
        "/health",
        methods=["GET", "HEAD"],
        dependencies=DECLARED_QUERY_ONLY,
        response_model=Health,
        responses={503: {"model": Problem, "description": "A worker could not be restarted"}},
    )
    async def health() -> Any:
        """Liveness, and how much micro-batching happened; 503 when the service is degraded
        (a worker stopped and could not be restarted: see the log)."""
        problem = None if degraded is None else degraded()
        if problem is not None:
            return _problem(503, problem)
        return {
            "status": "ok",
            "model": info.name,
            "batched_passes": batcher.passes,
            "batched_requests": batcher.batched,
        }

    app.include_router(page_router(recommender))
    return app


class CatchAll:
    """Anything that slips past the handlers (a bug, not the client's doing) is logged with
    its traceback and answered 503 with one line. Starlette's own answer is a 500 whose body
    is "Internal Server Error", and it re-raises the error to uvicorn, which then drops the
    connection, so a keep-alive client's next request failed too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as err:
            request = f"{scope.get('method', '?')} {scope.get('path', '?')}"
            log.error("%s failed: %r", request, err, exc_info=err)
            if started:  # half an answer is out: only closing the connection is left
                raise
            detail = f"the server failed to answer ({type(err).__name__}); it is logged"
            await _problem(503, detail)(scope, receive, send)


class BodyLimit:
    """Refuses a request body over ``limit`` bytes with a 413: by its Content-Length before
    anything is read, and as it streams in, for a chunked client or one whose
    Content-Length lies."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.message = f"request body over {limit} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length", "0")
        if not length.isdigit() or int(length) > self.limit:
            await _problem(413, self.message)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise HTTPException(413, self.message)  # answered by FastAPI as JSON
            return message

        await self.app(scope, counted, send)


class _Catalogue:
    """Lists as JSON answers, with the title and categories of each item.

    The answers are written by pydantic-core's serializer straight from plain dicts: the
    response models above document them (OpenAPI) and the tests check the answers against
    them, but validating our own output on every request would cost more than the JSON."""

    def __init__(self, info: ModelDescription) -> None:
        ids = info.item_ids
        titles = info.item_titles or [None] * len(ids)
        categories = info.item_categories or [None] * len(ids)
        self._about = {
            item: {"title": title, "categories": cats}
            for item, title, cats in zip(ids, titles, categories, strict=True)
        }
        self._model = info.name

    def response(self, recs: Recommendations, unknown: bool = True) -> Response:
        about = self._about
        answer: dict[str, Any] = {
            "items": [
                {"item": r.item, "score": r.score, "interest": r.interest, **about[r.item]}
                for r in recs
            ]
        }
        if unknown:
            answer["unknown_items"] = recs.unknown_items
        answer["model"] = self._model
        return Response(to_json(answer), media_type="application/json")


def _model_info(info: ModelDescription, index: str | None) -> dict[str, Any]:
    return {
        "model": info.name,
        "dataset": info.dataset,
        "num_interests": info.num_interests,
        "n_items": info.n_items,
        "n_users": info.n_users,
        "maxlen": info.maxlen,
        "has_titles": info.item_titles is not None,
        "has_categories": info.item_categories is not None,
        "test_metrics": None if info.metrics is None else info.metrics.test,
        "index": index,
        "mirec_version": __version__,
    }


def _declared_query_only(request: Request) -> None:
    """Refuse (422) a query parameter the endpoint does not take, or one given twice: a
    misspelt ``diversity_lamda=0.5`` or a second ``n=`` would otherwise be dropped without a
    word and the client would take the default's list for the one it asked for."""
    taken = {param.alias for param in request.scope["route"].dependant.query_params}
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        problem = None
        if name not in taken:
            problem = "not a parameter of this endpoint" + (
                f" (it takes {', '.join(sorted(taken))})" if taken else " (it takes none)"
            )
        elif name in seen:
            problem = "given more than once"
        if problem is not None:
            raise RequestValidationError(
                [{"loc": ("query", name), "msg": problem, "type": "extra_forbidden"}]
            )
        seen.add(name)


DECLARED_QUERY_ONLY = [Depends(_declared_query_only)]


def _handle_errors(app: FastAPI) -> None:
    """Every refusal is ``{"detail": "one line"}``: validation errors are summed up in one
    line (without echoing the input, which may be 10,000 ids long)."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        return _problem(422, "; ".join(_describe(e) for e in err.errors()[:5]))

    @app.exception_handler(UnknownIdError)
    async def unknown(request: Request, err: UnknownIdError) -> JSONResponse:
        return _problem(404, str(err))

    @app.exception_handler(MirecError)
    async def refused(request: Request, err: MirecError) -> JSONResponse:
        return _problem(422, str(err))


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()))
    message = error.get("msg", "invalid")
    if error.get("type") == "json_invalid":
        message = f"not valid JSON ({error.get('ctx', {}).get('error', 'decode error')})"
    return f"{where}: {message}" if where else message


def _problem(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": " ".join(detail.splitlines())}, status_code=status)
