"""The web page in headless Chromium (Debian's `chromium`, driven by Playwright; no browser is downloaded):
upload a real phone photo, see the matched artwork rendered with its outline; browse and open similar ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .conftest import SMVS, needs_shared
from .serverkit import LiveServer, copy_bundle

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = [needs_shared,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian package `chromium` is not installed"
                                 " (apt-get install -y chromium; .ci/run installs it)")]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def live(smvs_bundle, tmp_path_factory):
    with LiveServer(copy_bundle(smvs_bundle, tmp_path_factory.mktemp("browser"))) as server:
        yield server


@pytest.fixture(scope="module")
def page(live):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
        pg = context.new_page()
        pg.set_default_timeout(60_000)
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.goto(live.url + "/")
        pg.errors = errors
        yield pg
        browser.close()


def test_upload_a_phone_photo_and_see_the_match(page):
    assert page.locator("#photo").get_attribute("capture") == "environment"
    page.set_input_files("#photo", str(SMVS / "query" / "001.jpg"))
    card = page.locator('#matches .match[data-object-id="smvs-001"]')
    card.wait_for()
    assert "Painting 001" in card.inner_text()
    reference = card.locator("img.reference")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=reference.element_handle())
    assert page.locator("#photo-canvas").get_attribute("data-outlines") == "1"
    assert page.locator("#result").get_attribute("data-status") == "match"
    assert "random-init" in page.locator("#model-banner").inner_text()
    assert not page.errors


def test_browse_and_open_similar(page):
    page.locator("#grid .tile").first.wait_for()
    page.locator("#grid .tile").first.click()
    page.locator("#similar .tile").first.wait_for()
    assert "VLAD" in page.locator("#similar-method").inner_text()
    assert page.locator("#similar .tile").count() >= 3
    assert not page.errors
