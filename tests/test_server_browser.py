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
def browser():
    """One Chromium for the module (Playwright's sync API runs one instance per thread); a context per page."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield chromium
        chromium.close()


def _open(browser, url: str, **context):
    pg = browser.new_context(**context).new_page()
    pg.set_default_timeout(60_000)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(url + "/")
    pg.errors = errors
    return pg


@pytest.fixture(scope="module")
def page(live, browser):
    pg = _open(browser, live.url, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    yield pg
    pg.context.close()


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


# -- segments: glow, similar details, the matched segment -----------------------------------------------------------
@pytest.fixture(scope="module")
def segment_page(segment_bundle, tmp_path_factory, browser):
    """A curator's desktop browser (a real mouse: hover) on a bundle built with segments."""
    with LiveServer(copy_bundle(segment_bundle, tmp_path_factory.mktemp("browser-segments"))) as server:
        pg = _open(browser, server.url, viewport={"width": 1200, "height": 900})
        yield pg
        pg.context.close()


GLOWS = """g => { const p = getComputedStyle(g.querySelector('polygon'));
                   return p.filter.includes('drop-shadow') && p.stroke === 'rgb(255, 214, 10)'; }"""


def _glows(locator) -> bool:
    """The segment's polygons are drawn lit (yellow stroke, drop-shadow glow) once the CSS transition has run."""
    locator.page.wait_for_function(GLOWS, arg=locator.element_handle(), timeout=5_000)
    return True


def _hover_a_segment(page) -> str:
    """Move the mouse over the artwork's segments (smallest, drawn on top, first) until one is under it; its id."""
    segments = page.locator("#detail-body g.segment")
    for i in reversed(range(segments.count())):
        box = segments.nth(i).bounding_box()
        if not box or box["width"] < 2 or box["height"] < 2:
            continue
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        hovered = page.evaluate("() => document.querySelector('#detail-body g.segment:hover')?.dataset.segmentId")
        if hovered:
            return hovered
    raise AssertionError("no segment of the artwork could be hovered")


def test_segment_glow_and_similar_details(segment_page):
    page = segment_page
    page.locator('#grid .tile[data-object-id="smvs-009"]').click()
    page.locator("#detail-body svg.segments g.segment").first.wait_for()
    count = int(page.locator("#detail-body").get_attribute("data-segments"))
    assert count == page.locator("#detail-body g.segment").count() > 0
    assert "Tap a glowing region" in page.locator("#segment-hint").inner_text()
    # At rest the segments are faint outlines; the one under the mouse glows.
    assert not any(page.locator("#detail-body g.segment").nth(i).evaluate(GLOWS) for i in range(count))
    hovered = _hover_a_segment(page)
    glowing = page.locator(f'#detail-body g.segment[data-segment-id="{hovered}"]')
    assert _glows(glowing)

    page.mouse.down()
    page.mouse.up()  # a click where the mouse is: that segment is selected and its similar details are listed
    page.locator("#segment-similar .tile").first.wait_for()
    assert glowing.get_attribute("class") == "segment selected"
    page.mouse.move(0, 0)
    assert _glows(glowing)  # stays lit once the mouse has left: it is the selected one
    assert "local features" in page.locator("#segment-method").inner_text()
    tiles = page.locator("#segment-similar .tile")
    assert 0 < tiles.count() <= 6
    for i in range(tiles.count()):  # each similar detail: another artwork's image with that segment glowing
        tile = tiles.nth(i)
        assert tile.get_attribute("data-object-id") != "smvs-009"
        page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                               arg=tile.locator("img").element_handle())
        assert tile.locator("g.hit polygon").count() >= 1 and _glows(tile.locator("g.hit"))

    # Opening a similar detail opens its artwork with that segment selected.
    first = tiles.first
    target, segment = first.get_attribute("data-object-id"), first.get_attribute("data-segment-id")
    first.click()
    page.wait_for_function(f"() => document.querySelector('#detail').dataset.objectId === '{target}'")
    selected = page.locator(f'#detail-body g.segment.selected[data-segment-id="{segment}"]')
    selected.wait_for()
    assert _glows(selected)
    # Keyboard: segments are focusable buttons; Enter selects one.
    other_id = page.locator("#detail-body g.segment:not(.selected)").first.get_attribute("data-segment-id")
    other = page.locator(f'#detail-body g.segment[data-segment-id="{other_id}"]')
    other.focus()
    page.keyboard.press("Enter")
    page.wait_for_function("g => g.classList.contains('selected')", arg=other.element_handle())
    assert not page.errors


def test_matched_segment_glows_and_opens_the_artwork(segment_page, tmp_path):
    from artlens.imaging import load_image

    from .test_segments import detail_photo

    photo = tmp_path / "detail.jpg"
    photo.write_bytes(detail_photo(load_image(SMVS / "reference" / "001.jpg", max_side=1600).rgb, seed=3))
    page = segment_page
    page.set_input_files("#photo", str(photo))
    card = page.locator('#matches .match[data-object-id="smvs-001"]')
    card.wait_for()
    segment = card.get_attribute("data-segment-id")
    assert segment.startswith("smvs-001#")
    matched = card.locator(f'g.matched[data-segment-id="{segment}"]')
    assert _glows(matched)  # the detail the photo shows glows on the reference
    matched.click()
    page.wait_for_function("() => document.querySelector('#detail').dataset.objectId === 'smvs-001'")
    page.locator(f'#detail-body g.segment.selected[data-segment-id="{segment}"]').wait_for()
    page.locator("#segment-similar .tile").first.wait_for()
    assert not page.errors
