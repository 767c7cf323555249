"""The chat page in a real browser: Playwright driving Debian's Chromium, headless."""

import os
import shutil
from pathlib import Path

import pytest

from .test_server import KEY, index, live  # noqa: F401  (fixtures)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"


def test_chat_page_streams_an_answer_and_opens_a_citation(live):  # noqa: F811
    if not Path(CHROMIUM).exists():
        if os.environ.get("RAGTUNE_SKIP_BROWSER") == "1":
            pytest.skip("RAGTUNE_SKIP_BROWSER=1 and no chromium")
        pytest.fail("Debian's chromium is not installed (make test installs it; set RAGTUNE_SKIP_BROWSER=1 to skip)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page()
        page.goto(live + "/")
        page.fill("#key", KEY)
        page.dispatch_event("#key", "change")
        page.wait_for_selector("#strategy option:nth-child(2)", state="attached")  # CSP forbids string eval
        page.fill("#question", "When was the Eiffel Tower built?")
        page.click("button[type=submit]")
        page.wait_for_selector(".bot[data-done='1'] .cite", timeout=20_000)
        answer = page.inner_text(".bot .answer")
        assert answer.startswith("Paris")
        page.click(".bot .cite")
        page.wait_for_selector("#source", state="visible")
        assert "corpus/paris.txt" in page.inner_text("#source-id")
        assert "Paris" in page.inner_text("#source-text")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "chat-page.png"), full_page=True)
        browser.close()
