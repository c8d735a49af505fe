"""Collections whose images are http(s)/IIIF URLs, served from a real HTTP server on loopback."""

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from artlens.indexing.build import build_bundle
from artlens.indexing.store.bundle import load_bundle

from .conftest import SMVS, needs_shared, write_collection

pytestmark = needs_shared


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture()
def image_server():
    handler = functools.partial(_QuietHandler, directory=str(SMVS / "reference"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_images_by_url_are_fetched_and_http_errors_reported_by_line(image_server, tiny_model, tmp_path):
    rows = [{"object_id": "a", "image": f"{image_server}/001.jpg"},
            {"object_id": "b", "image": f"{image_server}/does-not-exist.jpg"},
            {"object_id": "c", "image": f"{image_server}/003.jpg"}]
    csv_path = write_collection(tmp_path / "c.csv", rows)
    report = build_bundle(tiny_model, csv_path, tmp_path / "bundle")
    assert report.indexed == 2
    assert len(report.skipped) == 1
    line, reason = report.skipped[0]
    assert line == 3 and "does-not-exist.jpg" in reason and "HTTP 404" in reason
    bundle = load_bundle(tmp_path / "bundle")
    assert [a["object_id"] for a in bundle.artworks] == ["a", "c"]
    assert bundle.artworks[0]["image"] == f"{image_server}/001.jpg"
