"""The web page of `mirec serve`, in a real headless Chromium against a real server on
loopback: pick a user through the search box, open users and histories from the address,
see interests named by ml-100k genres with real movie titles and a map with points; bad
input is a message on the page and a 4xx JSON answer, never markup or a 500."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from mirec import MirecError, Recommender
from mirec.evaluation.inspection import inspect_folder, interest_map

CHROMIUM = Path("/usr/bin/chromium")
# headless, and none of Chromium's own connections: the CI machine's network refuses them
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def server(ml100k_server: str) -> str:
    """The page of the ml-100k run, served by a real `mirec serve` (tests/conftest.py)."""
    return ml100k_server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: the page is tested in Debian's Chromium; install it with "
            "`apt-get install chromium` (.ci/run does)"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh tab; a script error on the page fails the test."""
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    context.close()
    assert not errors, f"script errors on the page: {errors}"


@pytest.fixture(scope="module")
def ml100k_titles(shared_data: Path) -> set[str]:
    """Every movie title of ml-100k's u.item."""
    lines = (shared_data / "ml-100k" / "u.item").read_text(encoding="latin-1").splitlines()
    return {line.split("|")[1] for line in lines if line}


@pytest.fixture(scope="module")
def ml100k_genres(shared_data: Path) -> set[str]:
    lines = (shared_data / "ml-100k" / "u.genre").read_text(encoding="latin-1").splitlines()
    return {line.split("|")[0] for line in lines if line}


def shows_interests(page: Page, titles: set[str], genres: set[str]) -> int:
    """Checks a drawn report (interest cards named by genres, real titles, a map with a
    point per history item and a star per interest, colours matching); its interests."""
    cards = page.locator("article.interest")
    expect(cards.first).to_be_visible()
    n = cards.count()
    for card in cards.all():
        name = card.locator(".interest-name").inner_text()
        if name == "no categories":  # an interest that no history item routes to
            expect(card).to_contain_text("No history item routes here.")
            continue
        named = re.findall(r"\s*([^,]+) (\d+)%", name)  # "Drama 52%, Comedy 29%, ..."
        assert named and all(genre in genres for genre, _ in named), name
        # its alignment, a share of its 10 recommendations: "... · 70% aligned"
        kicker = card.locator(".kicker").inner_text()
        assert re.search(r" · (100|[1-9]?0)% aligned$", kicker), kicker
    recommended = page.locator(".recommendations .item-title").all_inner_texts()
    overall = page.locator("#overall .item-title").all_inner_texts()
    assert len(overall) == 10 and len(recommended) >= 10
    assert set(recommended) | set(overall) <= titles, set(recommended) | set(overall) - titles
    history_rows = page.locator("article.interest .items:not(.recommendations) .item").count()
    assert page.locator("#map .map-history").count() == history_rows > 0
    assert page.locator("#map .map-interest").count() == n
    assert page.locator("#map .map-recommendation").count() == 10
    for circle in page.locator("#map .map-history").all():
        x, y = float(circle.get_attribute("cx")), float(circle.get_attribute("cy"))
        assert 0 <= x <= 560 and 0 <= y <= 400
    # a card's colour is its interest's colour on the map
    for card in cards.all():
        index = card.get_attribute("data-interest")
        star = page.locator(f"#map .map-interest[data-interest='{index}']")
        card_colour = card.locator(".star").evaluate("node => getComputedStyle(node).color")
        star_colour = star.evaluate("node => getComputedStyle(node).fill")
        assert card_colour == star_colour
    return n


def test_pick_a_user_from_the_search_box(server, page, ml100k_titles, ml100k_genres):
    page.goto(f"{server}/")
    expect(page.locator("#report")).to_be_hidden()
    page.locator("#user-search").press_sequentially("42")
    page.locator("#user-suggestions .option-main").get_by_text("user 42", exact=True).click()
    expect(page.locator("#report-title")).to_have_text("User 42")
    assert page.url.endswith("/?user=42")
    assert shows_interests(page, ml100k_titles, ml100k_genres) >= 1
    # the page's history is the user's stored history, read as the model reads it
    assert "50 history items" in page.locator("#report-summary").inner_text()


def test_users_and_histories_open_from_the_address(server, page, ml100k_titles, ml100k_genres):
    page.goto(f"{server}/?user=1")
    expect(page.locator("#report-title")).to_have_text("User 1")
    shows_interests(page, ml100k_titles, ml100k_genres)

    page.goto(f"{server}/?items=50,172,181")
    expect(page.locator("#report-title")).to_have_text("A history of items")
    shows_interests(page, ml100k_titles, ml100k_genres)
    chips = ["Star Wars (1977)", "Empire Strikes Back, The (1980)", "Return of the Jedi (1983)"]
    expect(page.locator("#history-chips .chip span")).to_have_text(chips)
    history = page.locator("article.interest .items:not(.recommendations) .item-title")
    assert sorted(history.all_inner_texts()) == sorted(chips)


def test_build_a_history_from_titles_and_ids(server, page, ml100k_titles, ml100k_genres):
    page.goto(f"{server}/")
    page.locator("#item-search").press_sequentially("star wars")
    page.locator("#item-suggestions .option-main").get_by_text("Star Wars (1977)").click()
    page.locator("#item-search").fill("172, 181")
    page.locator("#item-search").press("Enter")
    expect(page.locator("#history-chips .chip")).to_have_count(3)
    page.locator("#explain-items").click()
    expect(page.locator("#report-title")).to_have_text("A history of items")
    shows_interests(page, ml100k_titles, ml100k_genres)
    assert page.url.endswith("/?items=50%2C172%2C181")


def test_unknown_users_and_odd_ids_are_messages_not_markup(server, page):
    page.goto(f"{server}/?user=99999")
    expect(page.locator("#message")).to_contain_text("user '99999' is not in ml-100k")
    expect(page.locator("#report")).to_be_hidden()

    # ids are user data: shown as text, never run as markup
    odd = "<img src=x onerror=window.injected=1>"
    page.goto(f"{server}/?items={quote(odd + ',abc')}")
    expect(page.locator("#message")).to_contain_text("has no item of the catalogue")
    expect(page.locator("#message")).to_contain_text(odd)
    expect(page.locator("#history-chips .chip span").first).to_have_text(f"item {odd}")
    assert page.locator("img").count() == 0
    assert page.evaluate("window.injected") is None

    # a known item among unknown ones: explained, the rest named in a warning
    page.goto(f"{server}/?items={quote('50,<b>x</b>')}")
    expect(page.locator("#report-title")).to_have_text("A history of items")
    expect(page.locator("#message")).to_have_text("Not in the catalogue, left out: <b>x</b>")
    assert page.locator("#message b").count() == 0

    # Enter in the user box opens the id as typed
    page.goto(f"{server}/")
    page.locator("#user-search").fill("nobody")
    page.locator("#user-search").press("Enter")
    expect(page.locator("#message")).to_contain_text("user 'nobody' is not in ml-100k")


def test_the_api_answers_bad_input_with_a_4xx_message(server):
    def detail(response: httpx.Response) -> str:
        assert 400 <= response.status_code < 500, (response.status_code, response.text)
        return str(response.json()["detail"])

    get = lambda path: httpx.get(f"{server}{path}", timeout=10)  # noqa: E731
    assert "not in ml-100k" in detail(get("/api/explain?user=99999"))
    assert "either a user or a history" in detail(get("/api/explain"))
    assert "either a user or a history" in detail(get("/api/explain?user=1&items=50"))
    assert "history is empty" in detail(get("/api/explain?items=,,"))
    assert "no item of the catalogue" in detail(get(f"/api/explain?items={quote('%00,../x')}"))
    assert "top" in detail(get("/api/explain?user=1&top=0"))
    assert "limit" in detail(get("/api/users?q=1&limit=100000"))
    assert get("/static/..%2Fpage.py").status_code == 404
    post = lambda body: httpx.post(f"{server}/api/explain", json=body, timeout=10)  # noqa: E731
    assert "items" in detail(post({"items": [50, True]}))
    assert "items" in detail(post({"items": "50,172"}))
    assert "extra" in detail(post({"user": 1, "userid": 1})).lower()

    report = post({"items": [50, "172", "nope"], "top": 5}).json()
    assert report["history"] == ["50", "172"] and report["unknown_items"] == ["nope"]
    assert len(report["recommendations"]) == 5
    points = report["map"]
    assert len(points["history"]) == len(points["assignment"]) == 2
    assert len(points["interests"]) == len(report["interests"])
    assert len(points["recommendations"]) == 5

    users = get("/api/users?q=4&limit=5").json()
    assert [u["id"] for u in users] == [4, 40, 41, 42, 43] and all(u["history"] >= 5 for u in users)
    items = get(f"/api/items?q={quote('star wars')}&limit=5").json()
    star_wars = ["Action", "Adventure", "Romance", "Sci-Fi", "War"]
    assert items[0] == {"id": 50, "title": "Star Wars (1977)", "categories": star_wars}
    assert get("/api/items?q=181&limit=1").json()[0]["title"] == "Return of the Jedi (1983)"


def test_explain_is_the_report_of_inspect(ml100k_run):
    rec = Recommender.load(ml100k_run)
    report = rec.explain(user=1, top=5)
    assert report.to_json() == inspect_folder(ml100k_run, user="1", top=5).to_json()
    # each overall recommendation names the interest that scores it highest, as recommend
    history = [50, 172, 181, 1, 2]
    explained = rec.explain(history=history, top=10)
    listed = rec.recommend(history, n=10, exclude_history=True)
    assert [(r.item, r.interest) for r in explained.recommendations] == [
        (str(r.item), r.interest) for r in listed
    ]
    assert rec.explain(history=[*history, "nope"]).unknown_items == ["nope"]
    with pytest.raises(MirecError, match="has no item of the catalogue"):
        rec.explain(history=["nope"])
    with pytest.raises(MirecError, match="either a user or a history"):
        rec.explain()
    with pytest.raises(MirecError, match="top must be an integer"):
        rec.explain(user=1, top=0)
    # the map: one point per history item, interest and recommendation
    coordinates = interest_map(explained)
    assert coordinates.history.shape == (5, 2) and coordinates.recommendations.shape == (10, 2)
    assert coordinates.interests.shape == (len(explained.interests), 2)
    assert np.isfinite(coordinates.history).all()
