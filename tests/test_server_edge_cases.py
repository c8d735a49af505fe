"""Requests an outside review found mishandled: deeply nested JSON, a multipart part with over-long headers, unknown
documentation pages, and an over-long unknown id echoed back whole."""

import pytest

from .conftest import needs_shared
from .serverkit import API_KEY, client_for

pytestmark = needs_shared
ADMIN = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def client(smvs_bundle):
    with client_for(smvs_bundle) as test_client:
        yield test_client


def test_deeply_nested_json_is_400_not_500(client):
    r = client.post("/v1/index/reload", headers={**ADMIN, "Content-Type": "application/json"},
                    content=b"[" * 5000 + b"]" * 5000)
    assert r.status_code == 400 and r.json()["code"] == "invalid_request", r.text


def test_a_part_with_over_long_headers_is_invalid_request_not_too_many_frames(client):
    body = (b'--BB\r\nContent-Disposition: form-data; name="image"; filename="' + b"a" * 200_000
            + b'"\r\n\r\nx\r\n--BB--\r\n')
    r = client.post("/v1/recognize", content=body, headers={"Content-Type": "multipart/form-data; boundary=BB"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_request", r.text
    assert "headers are too long" in r.json()["message"]


@pytest.mark.parametrize("path", ["/schema/redoc", "/schema/rapidoc", "/schema/elements", "/schema/%2e%2e"])
def test_unknown_documentation_pages_are_json_404(client, path):
    r = client.get(path)
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/json"), r.text
    assert r.json()["code"] == "not_found"
    assert client.get("/schema/openapi.json").status_code == 200


def test_an_over_long_unknown_id_is_not_echoed_whole(client):
    r = client.get("/v1/artworks/" + "x" * 8000)
    assert r.status_code == 404 and r.json()["code"] == "artwork_not_found"
    assert len(r.json()["message"]) < 200


def test_with_cors_on_every_answer_varies_on_origin(smvs_bundle):
    with client_for(smvs_bundle, cors_origins=["https://museum.example"]) as cors_client:
        for origin in (None, "https://museum.example", "https://elsewhere.example"):
            headers = {"Origin": origin} if origin else {}
            for path in ("/v1/artworks/smvs-001", "/v1/artworks?limit=2", "/v1/artworks/nope"):
                r = cors_client.get(path, headers=headers)
                assert "origin" in r.headers.get("vary", "").lower(), (path, origin, r.headers)
