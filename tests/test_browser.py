"""The web page in a real browser: Debian's chromium, headless, driven by Playwright.

Skips only where chromium is absent and this is not CI (CI=true makes a missing browser a failure;
.ci/run installs it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from .serving import Server, http, train_tiny

CHROMIUM = Path(os.environ.get("TEXTCNN_CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SENTENCE = "How many kings ruled the old city of Paris ?"


def _need(what: str, why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is needed in CI ({why}); .ci/run installs it")
    pytest.skip(f"{what} is not installed ({why})")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        _need("chromium", f"{CHROMIUM} is missing: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("playwright", "pip install -e '.[dev]'")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    train_tiny(epochs=10, window_sizes=(2, 3, 4)).save(tmp / "model")
    with Server(tmp / "model", log=tmp / "server.log") as srv:
        yield srv


def test_page_shows_bars_highlights_and_walkthrough(browser, server, tmp_path):
    page = browser.new_page(viewport={"width": 1200, "height": 1100})
    page.goto(server.url + "/", timeout=30_000)
    page.wait_for_selector("body[data-state=idle]", timeout=30_000)
    page.locator("#text").press_sequentially(SENTENCE, delay=5)
    page.click("#go")
    page.wait_for_selector("body[data-state=ready]", timeout=30_000)
    page.wait_for_function("document.querySelector('#highlighted').textContent === document.querySelector('#text').value")

    status, body = http("POST", server.url + "/v1/explain", {"texts": [SENTENCE]})
    assert status == 200
    exp = body["explanations"][0]
    _check_bars(page, exp)
    predicted = exp["prediction"]["label"]
    _check_highlights(page, exp, predicted)
    _check_walk(page, exp)
    page.screenshot(path=str(tmp_path / "textcnn-page.png"), full_page=True)
    assert (tmp_path / "textcnn-page.png").stat().st_size > 10_000

    other = next(c["label"] for c in exp["classes"] if c["label"] != predicted)
    page.click(f".bar[data-label='{other}']")
    assert page.text_content("#chosen-class") == other
    _check_highlights(page, exp, other)
    page.close()


def _check_bars(page, exp) -> None:
    bars = page.locator(".bar")
    assert bars.count() == len(exp["classes"])
    shown = {bars.nth(i).get_attribute("data-label"): float(bars.nth(i).get_attribute("data-probability"))
             for i in range(bars.count())}
    assert shown == pytest.approx({c["label"]: c["probability"] for c in exp["classes"]}, abs=1e-5)
    assert bars.first.get_attribute("data-label") == exp["prediction"]["label"]  # most probable first
    width = page.eval_on_selector(".bar .bar-fill", "e => e.getBoundingClientRect().width")
    track = page.eval_on_selector(".bar .bar-track", "e => e.getBoundingClientRect().width")
    assert width == pytest.approx(track * exp["prediction"]["probability"], abs=2)


def _check_highlights(page, exp, label) -> None:
    cls = next(c for c in exp["classes"] if c["label"] == label)
    tokens = page.locator("#highlighted .tok")
    assert tokens.count() == len(exp["tokens"])
    for i, tok in enumerate(exp["tokens"]):
        assert tokens.nth(i).text_content() == exp["text"][tok["start"]:tok["end"]]
        assert float(tokens.nth(i).get_attribute("data-score")) == pytest.approx(cls["token_scores"][i], abs=1e-5)
    strongest = max(range(len(exp["tokens"])), key=lambda i: abs(cls["token_scores"][i]))
    colour = tokens.nth(strongest).evaluate("e => getComputedStyle(e).backgroundColor")
    assert colour.startswith("rgb(") and colour not in ("rgba(0, 0, 0, 0)", "rgb(255, 255, 255)")
    assert page.text_content("#highlighted") == exp["text"]
    top = cls["ngrams"][0]
    assert page.locator("#ngrams .ngram").first.text_content().startswith(top["text"])
    channel = cls.get("channel_ngrams")  # the n-gram channel's n-grams, in their own table
    assert page.locator("#channel-ngrams").is_visible() == bool(channel)
    if channel and channel[0]["contribution"] > 0:
        assert page.locator("#channel-ngrams .ngram").first.text_content().startswith(channel[0]["text"])
        assert "n-gram channel" in page.text_content("#logit-sum")


def _check_walk(page, exp) -> None:
    walk = exp["walk"]
    rows = page.locator("#walk tbody tr")
    assert rows.count() == 4 + 2 * len(walk["branches"]) + 2
    text = page.text_content("#walk")
    assert " \u00d7 ".join(map(str, walk["embedding_shape"])) in text
    assert " \u00d7 ".join(map(str, walk["concat_shape"])) in text
    for branch in walk["branches"]:
        assert f"{branch['best_value']:.3f}" in text
        assert branch["best_ngram"]["text"] in text
