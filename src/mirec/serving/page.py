"""The web page of ``mirec serve``: a user's interests, explained in the browser.

At ``/`` a person picks a user of the training log (or builds a history from item ids and
title searches) and sees the history grouped by interest, each interest named by its
categories and with its own recommendations, the user's overall recommendations, and a 2-D
map of the interests and items. The explanation is :meth:`Recommender.explain` (the one of
``mirec inspect``); this module only searches the catalogue and turns reports into JSON.

The page is three static files (``static/``: HTML, one script, one style sheet) served by
the app itself, with no build step and nothing fetched from elsewhere. The script builds
every element with ``textContent``: ids and titles come from user data and are never
parsed as HTML.

Routes: ``GET /`` (the page), ``GET /static/{page.js,page.css}``, ``GET /api/users?q=``
and ``GET /api/items?q=`` (suggestions), ``GET /api/explain?user=ID`` or
``?items=a,b,c``, and ``POST /api/explain`` with ``{"user": ...}`` or ``{"items": [...]}``.
Bad input is a 422 with ``{"detail": message}``.
"""

from __future__ import annotations

import html
from pathlib import Path
from string import Template
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from mirec.errors import MirecError
from mirec.evaluation.inspection import UserReport, interest_map
from mirec.recommender import Recommender

STATIC = Path(__file__).with_name("static")
ASSETS = {"page.js": "text/javascript", "page.css": "text/css"}
"""The files under ``/static/``: a fixed list, so no request names a path of its own."""
MAX_TOP = 50
"""The most recommendations per list that the page asks for."""
MAX_SUGGESTIONS = 100

Limit = Annotated[int, Query(ge=1, le=MAX_SUGGESTIONS, description="How many suggestions.")]
Top = Annotated[int, Query(ge=1, le=MAX_TOP, description="Recommendations per list.")]


class ExplainRequest(BaseModel):
    """``POST /api/explain``: a user of the training log, or a history of raw item ids."""

    model_config = ConfigDict(extra="forbid")
    user: StrictInt | StrictStr | None = None
    items: list[StrictInt | StrictStr] | None = None
    top: int = Field(10, ge=1, le=MAX_TOP)


def page_router(recommender: Recommender) -> APIRouter:
    """The page and its JSON API for ``recommender``; include it in the app of ``mirec
    serve`` (``app.include_router(page_router(recommender))``)."""
    router = APIRouter()
    users, items = UserSearch(recommender), ItemSearch(recommender)
    index = _render_index(recommender)

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(index)

    @router.get("/static/{name}", include_in_schema=False)
    def asset(name: str) -> FileResponse:
        if name not in ASSETS:
            raise HTTPException(404, f"no such file: {name!r}")
        return FileResponse(STATIC / name, media_type=ASSETS[name])

    @router.get("/api/users")
    def search_users(q: str = "", limit: Limit = 20) -> list[dict[str, Any]]:
        """Users of the training log whose id contains ``q``, the closest matches first."""
        return users.search(q, limit)

    @router.get("/api/items")
    def search_items(q: str = "", limit: Limit = 20) -> list[dict[str, Any]]:
        """Items whose id is ``q`` or whose title contains it, most popular first."""
        return items.search(q, limit)

    @router.get("/api/explain")
    def explain(user: str | None = None, items: str | None = None, top: Top = 10) -> dict:
        """A user's (``user``) or a history's (``items``: raw ids, oldest first, a,b,c)
        interests, recommendations and 2-D map."""
        history = None if items is None else [i.strip() for i in items.split(",") if i.strip()]
        return _explained(recommender, user, history, top)

    @router.post("/api/explain")
    def explain_posted(request: ExplainRequest) -> dict:
        """:func:`explain` with a JSON body, for histories too long for a URL."""
        return _explained(recommender, request.user, request.items, request.top)

    return router


def _explained(
    recommender: Recommender, user: int | str | None, history: list | None, top: int
) -> dict[str, Any]:
    """The report as JSON, with the map's coordinates; a user's mistake is a 422."""
    try:
        report = recommender.explain(user=user, history=history, top=top)
    except MirecError as err:
        raise HTTPException(422, str(err)) from err
    return {**report.to_json(), "map": _map_json(report)}


def _map_json(report: UserReport) -> dict[str, list]:
    coordinates = interest_map(report)
    return {
        "history": coordinates.history.round(5).tolist(),
        "interests": coordinates.interests.round(5).tolist(),
        "recommendations": coordinates.recommendations.round(5).tolist(),
        "assignment": report.assignment.tolist(),
    }


def _render_index(recommender: Recommender) -> str:
    """``index.html`` with the model's name and size filled in (escaped)."""
    info = recommender.info
    fields = {
        "model": info.name,
        "dataset": info.dataset,
        "n_items": f"{info.n_items:,}",
        "n_users": f"{len(info.user_ids):,}",
        "k": str(info.num_interests),
        "maxlen": str(info.maxlen),
    }
    page = Template((STATIC / "index.html").read_text(encoding="utf-8"))
    return page.substitute({key: html.escape(value) for key, value in fields.items()})


def _ranked(keys: np.ndarray, query: str, priority: np.ndarray, limit: int) -> np.ndarray:
    """Rows of ``keys`` (lower-case strings) that contain ``query``: those that start with
    it first, then those with a word that starts with it, then the rest; within each, the
    highest ``priority`` first, then by key."""
    at = np.char.find(keys, query)
    hits = np.flatnonzero(at >= 0)
    word = np.char.find(keys[hits], " " + query) >= 0
    tier = np.where(at[hits] == 0, 0, np.where(word, 1, 2))
    order = np.lexsort((keys[hits], -priority[hits], tier))  # the last key sorts first
    return hits[order[:limit]]


class UserSearch:
    """Suggestions for the user box: ids that contain the typed text, shortest first (so
    "4" lists user 4, then 40 to 49, then 400 and on)."""

    def __init__(self, recommender: Recommender) -> None:
        self._recommender = recommender
        self._ids = recommender.info.user_ids
        self._keys = np.char.lower(np.asarray([str(u) for u in self._ids], dtype=str))
        self._shortest = -np.char.str_len(self._keys)

    def search(self, query: str, limit: int) -> list[dict[str, Any]]:
        rows = _ranked(self._keys, query.strip().lower(), self._shortest, limit)
        return [self._row(self._ids[row]) for row in rows]

    def _row(self, user: int | str) -> dict[str, Any]:
        return {"id": user, "history": len(self._recommender.history_of(user))}


class ItemSearch:
    """Suggestions for the history box: the item whose id is the typed text, then items
    whose title contains it (whose id does, where the dataset has no titles), most
    popular first; an empty box lists the most popular items."""

    def __init__(self, recommender: Recommender) -> None:
        info = recommender.info
        self._ids = info.item_ids
        titles = info.item_titles
        self._titles = None if titles is None else [title or "" for title in titles]
        self._categories = info.item_categories
        self._id_keys = np.char.lower(np.asarray([str(i) for i in self._ids], dtype=str))
        self._keys = (
            self._id_keys
            if self._titles is None
            else np.char.lower(np.asarray(self._titles, dtype=str))
        )
        self._counts = info.item_counts

    def search(self, query: str, limit: int) -> list[dict[str, Any]]:
        query = query.strip().lower()
        exact = np.flatnonzero(self._id_keys == query) if query else np.empty(0, dtype=np.int64)
        found = _ranked(self._keys, query, self._counts, limit + len(exact))
        rows = [*exact, *(row for row in found if row not in exact)][:limit]
        return [self._row(row) for row in rows]

    def _row(self, row: int) -> dict[str, Any]:
        item = self._ids[row]
        return {
            "id": item,
            "title": "" if self._titles is None else self._titles[row],
            "categories": [] if self._categories is None else self._categories[row],
        }
