"""POSTed searches page through opaque continuations: no search value in any link."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from tests.fhir.helpers import Api


def test_post_search_links_carry_no_search_values(api: Api, tag: str) -> None:
    family = f"Pagingfam{tag}"
    with api.client() as http:
        for i in range(5):
            body = {"resourceType": "Patient", "name": [{"family": family, "given": [f"G{i}"]}]}
            assert http.post("/Patient", json=body).status_code == 201
        first = http.post("/Patient/_search", data={"family": family, "_count": "2"}).json()
        assert first["total"] == 5
        seen = [e["resource"]["id"] for e in first["entry"]]
        links = {link["relation"]: link["url"] for link in first["link"]}
        assert all(family.lower() not in url.lower() for url in links.values())
        url = links.get("next")
        while url:
            query = dict(parse_qsl(urlsplit(url).query))
            assert set(query) == {"_getpages", "_count", "_offset"}
            page = http.get(url).json()
            assert page["total"] == 5
            seen += [e["resource"]["id"] for e in page.get("entry", [])]
            url = {link["relation"]: link["url"] for link in page["link"]}.get("next")
        assert len(seen) == len(set(seen)) == 5


def test_a_continuation_is_the_callers_only(api: Api, tag: str) -> None:
    with api.client() as http:
        bundle = http.post("/Patient/_search", data={"family": f"Nobody{tag}", "_count": "1"})
        link = bundle.json()["link"][0]["url"]
        key = dict(parse_qsl(urlsplit(link).query))["_getpages"]
        # Another type, a made-up key: the same refusal as an expired one.
        for bad in (f"/Observation?_getpages={key}", "/Patient?_getpages=made-up"):
            r = http.get(bad)
            assert r.status_code == 400
            assert "expired" in r.json()["issue"][0]["diagnostics"]
