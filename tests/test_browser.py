"""The web UI in a real browser: Debian's chromium, headless, driven by playwright.

Screenshots go to $HEXZ_SCREENSHOT_DIR (default test-artifacts/screenshots) for people to look at.
Skipped where chromium or playwright is not installed; `.ci/run` installs both.
"""

import os
import shutil
import threading
from pathlib import Path

import pytest
from flask import Flask, Response, jsonify
from werkzeug.serving import make_server

from pyhexz.infra.httpauth import refuse_unauthorized
from pyhexz.train.evaluation import EvalConfig, evaluate
from pyhexz.web.ui import RepoOpponents, init_ui

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
SHOTS = Path(os.environ.get("HEXZ_SCREENSHOT_DIR", "test-artifacts/screenshots"))


# Long values, as a real run can have them: the page must wrap or ellipsize them, not widen.
LONG = "x" * 180
STATUS = {
    "model": f"browser-{LONG}", "checkpoint": 2, "ready": False,
    "failure": f"trainer stopped: StorageError: cannot write gs://bucket/{LONG}/meta.json",
    "examples": {"received": 123_456_789_012, "pending": 1024, "minibatch": 4096,
                 "per_second": 123.4},
    "games": {"received": 98_765_432, "per_second": 0.25},
    "training": {"in_progress": True, "runs": 12, "failures": 1, "last": {}},
    "workers": {"active": 3, "window_seconds": 300.0},
    "wal": {"id": "f" * 96, "first": 0, "end": 123_456_789_012},
    "redis": {"checkpoint": 2, "channel": f"hexz:checkpoints:{LONG}"},
    "uptime_seconds": 3725.0,
}
TOKEN = "browser-token"


def _serve(app: Flask):
    """(url, server): the app on a real HTTP server in a thread."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}/ui", server


@pytest.fixture(scope="module")
def repo(trained_repo_factory):
    repo = trained_repo_factory("browser")
    for n in (0, 1, 2):  # matches for the Elo chart
        evaluate(repo, n, EvalConfig(openings=1, runs=4, rollout_runs=8))
    return repo


@pytest.fixture(scope="module")
def base_url(repo):
    app = Flask(__name__)
    init_ui(app, repo=repo, status=lambda: STATUS, opponents=RepoOpponents(repo, seconds=0.05))
    url, server = _serve(app)
    yield url
    server.shutdown()


@pytest.fixture(scope="module")
def token_url(repo):
    """The same UI behind the servers' bearer-token check."""
    app = Flask(__name__)
    def error(status: int, message: str) -> Response:
        resp = jsonify(error=message)
        resp.status_code = status
        return resp

    app.before_request(lambda: refuse_unauthorized(TOKEN, error))
    init_ui(app, repo=repo, status=lambda: STATUS)
    url, server = _serve(app)
    yield url
    server.shutdown()


@pytest.fixture(scope="module")
def page():
    sync_api = pytest.importorskip("playwright.sync_api")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        # A phone-sized window: the pages must work there.
        pg = browser.new_page(viewport={"width": 420, "height": 900})
        errors: list = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.errors = errors
        yield pg
        browser.close()


def _summary(page) -> dict[str, str]:
    """The Training page's cards: label -> shown value."""
    page.wait_for_selector("#summary .card")
    return dict(zip(page.locator("#summary .card .k").all_inner_texts(),
                    page.locator("#summary .card .v").all_inner_texts(), strict=True))


def test_training_page_shows_the_summary_first_and_counters_folded(page, base_url):
    page.goto(f"{base_url}/training")
    page.wait_for_selector("#loss svg polyline.series", timeout=15_000)
    cards = _summary(page)
    assert cards["Latest checkpoint"] == "2"
    assert cards["Examples per second"] == "123 examples/s"
    assert cards["Games per second"] == "0.25 games/s"
    assert cards["Connected workers"] == "3"
    assert cards["Strength vs the rollout baseline"].endswith("% score")
    assert "Policy loss" in cards and "Age of the latest checkpoint" in cards
    assert page.inner_text("#state") == "failing"
    assert "StorageError" in page.inner_text("#failures")
    # The raw counters are there, labelled, but folded away.
    assert not page.locator("#more").evaluate("d => d.open")
    assert not page.is_visible("#details")
    page.click("#more summary")
    assert "Write-ahead log end offset" in page.inner_text("#details")
    assert page.locator("#throughput svg").count() == 1
    page.screenshot(path=str(SHOTS / "training.png"), full_page=True)
    assert page.errors == []


@pytest.mark.parametrize("width", [400, 1280, 1920])
def test_training_page_never_scrolls_sideways(page, base_url, width):
    """Long values (model name, failure, ids) wrap or are ellipsized: the page is never wider
    than the window, with the counters folded or open."""
    page.set_viewport_size({"width": width, "height": 900})
    try:
        page.goto(f"{base_url}/training")
        page.wait_for_selector("#loss svg polyline.series", timeout=15_000)
        _summary(page)
        too_wide = "document.scrollingElement.scrollWidth > window.innerWidth"
        assert not page.evaluate(too_wide), page.evaluate(
            "[document.scrollingElement.scrollWidth, window.innerWidth]")
        page.click("#more summary")
        page.wait_for_selector("#details dd", state="visible")
        assert not page.evaluate(too_wide), page.evaluate(
            "[document.scrollingElement.scrollWidth, window.innerWidth]")
        page.screenshot(path=str(SHOTS / f"training-{width}.png"), full_page=True)
    finally:
        page.set_viewport_size({"width": 420, "height": 900})
    assert page.errors == []


def test_the_token_is_asked_once_in_the_page(page, token_url):
    """Behind a token, the page asks for it in a form of its own (never window.prompt), once
    for all its requests; a refused token is said and asked again; the tab keeps it."""
    dialogs: list = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{token_url}/training")
    page.wait_for_selector("#token-form")
    page.fill("#token-form input", "wrong")
    page.click("#token-form button")
    page.wait_for_selector("#token-form .err:has-text('refused')")
    assert page.locator("#token-form").count() == 1
    page.fill("#token-form input", TOKEN)
    page.click("#token-form button")
    assert _summary(page)["Latest checkpoint"] == "2"
    assert page.locator("#token-form").count() == 0
    assert page.evaluate("sessionStorage.getItem('pyhexzToken')") == TOKEN
    page.goto(f"{token_url}/checkpoints")   # another page of the tab: not asked again
    page.wait_for_selector("#rows tr")
    assert page.locator("#token-form").count() == 0
    assert dialogs == [] and page.errors == []


def test_checkpoints_and_games_pages_render(page, base_url):
    page.goto(f"{base_url}/checkpoints")
    page.wait_for_selector("#rows tr")
    # "attached", not "visible": a flat Elo curve is a polyline without height, which
    # playwright counts as invisible, and equal Elo steps are a legitimate result.
    elo = page.wait_for_selector("#elo svg polyline.series", state="attached")
    assert len(elo.get_attribute("points").split()) == 3
    assert page.locator("#rows tr").count() == 3
    page.screenshot(path=str(SHOTS / "checkpoints.png"), full_page=True)
    page.goto(f"{base_url}/games")
    page.wait_for_selector("#board svg polygon")
    page.click("#next")
    page.click("#next")
    assert page.inner_text("#info").startswith("ply 3 of")
    page.screenshot(path=str(SHOTS / "games.png"), full_page=True)
    assert page.errors == []


def test_play_a_whole_game_by_clicking(page, base_url):
    page.goto(f"{base_url}/play")
    page.wait_for_selector("#opponent option", state="attached")
    page.select_option("#opponent", "rollout")
    page.click("#new")
    clicks = 0
    while "game over" not in page.inner_text("#caption"):
        page.wait_for_function(
            "!document.getElementById('caption').textContent.includes('thinking')")
        cells = page.locator("#board g.cell-legal")
        if "game over" in page.inner_text("#caption"):
            break
        cells.first.wait_for(timeout=10_000)
        cells.first.click()
        clicks += 1
        if clicks == 3:
            page.screenshot(path=str(SHOTS / "play-start.png"), full_page=True)
        assert clicks < 120, "the game does not end"
    assert page.inner_text("#err") == ""
    assert clicks >= 5
    page.screenshot(path=str(SHOTS / "play-end.png"), full_page=True)
    assert page.errors == []
