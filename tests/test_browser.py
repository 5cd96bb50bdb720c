"""The web UI in a real browser: Debian's chromium, headless, driven by playwright.

Screenshots go to $HEXZ_SCREENSHOT_DIR (default test-artifacts/screenshots) for people to look at.
Skipped where chromium or playwright is not installed; `.ci/run` installs both.
"""

import os
import shutil
import threading
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.serving import make_server

from pyhexz.train.evaluation import EvalConfig, evaluate
from pyhexz.web.ui import RepoOpponents, init_ui

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
SHOTS = Path(os.environ.get("HEXZ_SCREENSHOT_DIR", "test-artifacts/screenshots"))


@pytest.fixture(scope="module")
def base_url(trained_repo_factory):
    repo = trained_repo_factory("browser")
    for n in (0, 1, 2):  # matches for the Elo chart
        evaluate(repo, n, EvalConfig(openings=1, runs=4, rollout_runs=8))
    app = Flask(__name__)
    init_ui(app, repo=repo, status=lambda: {
        "model": "browser", "checkpoint": repo.latest(), "examples_per_s": 123.4},
        opponents=RepoOpponents(repo, seconds=0.05))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_port}/ui"
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


def test_training_page_shows_live_state_and_charts(page, base_url):
    page.goto(f"{base_url}/training")
    page.wait_for_selector("#loss svg polyline.series", timeout=15_000)
    page.wait_for_selector("#cards .card")
    assert "examples per s" in page.inner_text("#cards")
    assert page.locator("#throughput svg").count() == 1
    page.screenshot(path=str(SHOTS / "training.png"), full_page=True)
    assert page.errors == []


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
