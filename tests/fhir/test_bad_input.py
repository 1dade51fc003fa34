"""Bad input: the right status with an OperationOutcome, nothing written, and no PHI echoed.

Every test sends a PHI canary (a made-up name) in the rejected body or in the search
query, then checks that neither the error body nor the server's logs (the access
log and the console output) contain it, and that the database did not change.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from .helpers import FHIR_JSON, SHARED_MAX_BODY, Api, outcome_of

JSON = {"Content-Type": FHIR_JSON}


@pytest.fixture
def canary(tag: str) -> str:
    return f"Zyxwquist{tag}"


@pytest.fixture
def phi_safe(api: Api, canary: str) -> Iterator[None]:
    """After the test: the canary is in no log, and the access log did record requests."""
    yield
    logs = api.logs()
    assert canary.lower() not in logs.lower()
    assert '"path":"/fhir' in api.access_log()


@contextmanager
def unchanged(api: Api) -> Iterator[None]:
    before = api.fingerprint()
    yield
    assert api.fingerprint() == before


def rejected(
    response: httpx.Response, status: int, canary: str, code: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = outcome_of(response)
    if code is not None:
        assert body["issue"][0]["code"] == code, body
    assert canary.lower() not in response.text.lower()
    assert canary.lower() not in str(response.headers).lower()
    return body


def patient(canary: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "name": [{"family": canary, "given": ["Private"]}],
        "birthDate": "1970-01-01",
        **extra,
    }


def existing_patient(http: httpx.Client, family: str) -> str:
    r = http.post("/Patient", json={"resourceType": "Patient", "name": [{"family": family}]})
    assert r.status_code == 201
    rid: str = r.json()["id"]
    return rid


@pytest.mark.usefixtures("phi_safe")
def test_malformed_json_is_400(api: Api, canary: str) -> None:
    whole = json.dumps(patient(canary)).encode()
    bodies = [
        whole[:-7],  # truncated
        whole.replace(b'"name"', b"name"),  # not JSON
        b"[" + whole + b"]",  # JSON, but not an object
        whole.replace(canary.encode(), canary.encode() + b"\xff\xfe"),  # not UTF-8
        b"",
    ]
    with api.client() as http, unchanged(api):
        for body in bodies:
            rejected(http.post("/Patient", content=body, headers=JSON), 400, canary, "structure")
            rejected(http.put(f"/Patient/{uuid.uuid4()}", content=body, headers=JSON), 400, canary)
            rejected(http.post("", content=body, headers=JSON), 400, canary)


@pytest.mark.usefixtures("phi_safe")
def test_resource_type_that_does_not_match_the_url_is_400(api: Api, canary: str) -> None:
    with api.client() as http:
        pid = existing_patient(http, f"Keep{canary[-10:]}")
        obs = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": canary},
            "subject": {"reference": f"Patient/{pid}"},
        }
        with unchanged(api):
            rejected(http.post("/Patient", json=obs, headers=JSON), 400, canary, "invalid")
            rejected(http.put(f"/Patient/{pid}", json=obs, headers=JSON), 400, canary)
            rejected(http.post("/Observation", json=patient(canary), headers=JSON), 400, canary)
            no_type = {k: v for k, v in patient(canary).items() if k != "resourceType"}
            rejected(http.post("/Patient", json=no_type, headers=JSON), 400, canary)
            # The id in the body must match the id in the URL.
            other = patient(canary, id=f"other-{pid[:8]}")
            rejected(http.put(f"/Patient/{pid}", json=other, headers=JSON), 400, canary)
            # A Bundle is not a resource to create; it goes to POST /fhir.
            bundle = {"resourceType": "Bundle", "type": "collection"}
            rejected(http.post("/Patient", json=bundle, headers=JSON), 400, canary)
            rejected(http.post("", json=patient(canary), headers=JSON), 400, canary)
        assert http.get(f"/Patient/{pid}").headers["ETag"] == 'W/"1"'


@pytest.mark.usefixtures("phi_safe")
def test_unknown_resource_type_is_404(api: Api, canary: str) -> None:
    body = {"resourceType": "Wizard", "name": canary}
    with api.client() as http, unchanged(api):
        for r in (
            http.get("/Wizard", params={"name": canary}),
            http.post("/Wizard", json=body, headers=JSON),
            http.get("/Wizard/1"),
            http.put("/Wizard/1", json={**body, "id": "1"}, headers=JSON),
            http.delete("/Wizard/1"),
            http.get("/Wizard/1/_history"),
            http.get("/Wizard/1/_history/1"),
            http.post("/Wizard/_search", data={"name": canary}),
            http.get("/patient", params={"name": canary}),  # types are case-sensitive
        ):
            rejected(r, 404, canary, "not-supported")
        # A body of an unknown type sent to a known endpoint is a bad request.
        rejected(http.post("/Patient", json=body, headers=JSON), 400, canary)
        transaction = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "resource": patient(canary),
                    "request": {"method": "POST", "url": "Patient"},
                },
                {"resource": body, "request": {"method": "POST", "url": "Wizard"}},
            ],
        }
        rejected(http.post("", json=transaction, headers=JSON), 400, canary)
        assert http.get("/Patient", params={"family": canary}).json()["total"] == 0
        # An unknown endpoint gets an OperationOutcome too.
        rejected(http.get("/Patient/1/_history/1/extra"), 404, canary, "not-found")


@pytest.mark.usefixtures("phi_safe")
def test_body_over_the_size_limit_is_413(api: Api, canary: str) -> None:
    big = patient(canary, text={"status": "generated", "div": ""})
    filler = f"<p>{canary}</p>" * (SHARED_MAX_BODY // 20)
    big["text"]["div"] = f'<div xmlns="http://www.w3.org/1999/xhtml">{filler}</div>'
    raw = json.dumps(big).encode()
    assert len(raw) > SHARED_MAX_BODY

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server counts as it reads
        for i in range(0, len(raw), 16 * 1024):
            yield raw[i : i + 16 * 1024]

    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"resource": big, "request": {"method": "POST", "url": "Patient"}}],
    }
    with api.client() as http, unchanged(api):
        rejected(http.post("/Patient", content=raw, headers=JSON), 413, canary, "too-long")
        rejected(http.post("/Patient", content=chunks(), headers=JSON), 413, canary, "too-long")
        rejected(http.put("/Patient/big-one", content=raw, headers=JSON), 413, canary)
        rejected(http.post("", json=bundle, headers=JSON), 413, canary)
        form = {"family": canary, "given": "x" * SHARED_MAX_BODY}
        rejected(http.post("/Patient/_search", data=form), 413, canary)
        # Just under the limit is fine (and is then a search like any other).
        assert http.post("/Patient/_search", data={"family": canary}).status_code == 200


@pytest.mark.usefixtures("phi_safe")
def test_wrong_content_type_is_415(api: Api, canary: str) -> None:
    raw = json.dumps(patient(canary)).encode()
    with api.client() as http, unchanged(api):
        for ctype in ("text/plain", "application/xml", "application/fhir+xml", None):
            headers = {"Content-Type": ctype} if ctype else {}
            rejected(
                http.post("/Patient", content=raw, headers=headers), 415, canary, "not-supported"
            )
            rejected(http.put("/Patient/ct-1", content=raw, headers=headers), 415, canary)
            rejected(http.post("", content=raw, headers=headers), 415, canary)
        rejected(
            http.post("/Patient/_search", content=json.dumps({"family": canary}), headers=JSON),
            415,
            canary,
        )
        # A charset parameter on the form type is fine.
        ok = http.post(
            "/Patient/_search",
            data={"family": canary},
            headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
        )
        assert ok.status_code == 200
    assert ok.json()["total"] == 0


@pytest.mark.usefixtures("phi_safe")
def test_reference_to_a_missing_resource_is_400(api: Api, canary: str, tag: str) -> None:
    with api.client() as http:
        gone = existing_patient(http, f"Gone{tag}")
        assert http.delete(f"/Patient/{gone}").status_code == 200

        def obs(subject: str) -> dict[str, Any]:
            return {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": canary},
                "subject": {"reference": subject},
            }

        with unchanged(api):
            for ref in (
                f"Patient/missing-{tag}",
                f"Patient/{gone}",  # deleted
                f"Patient/missing-{tag}/_history/1",
                "Patient/",
                "Wizard/1",
                f"urn:uuid:{uuid.uuid4()}",  # only bundles resolve urn:uuid
            ):
                body = rejected(
                    http.post("/Observation", json=obs(ref), headers=JSON), 400, canary, "invalid"
                )
                assert body["issue"][0]["diagnostics"].startswith("a reference")
                rejected(
                    http.put(f"/Observation/r-{tag}", json=obs(ref), headers=JSON), 400, canary
                )
        assert http.get("/Observation", params={"patient": gone}).json()["total"] == 0


@pytest.mark.usefixtures("phi_safe")
def test_if_match_conflict_is_412(api: Api, canary: str, tag: str) -> None:
    with api.client() as http:
        pid = existing_patient(http, f"Match{tag}")
        with unchanged(api):
            for etag in ('W/"2"', '"0"', 'W/"99"'):
                rejected(
                    http.put(
                        f"/Patient/{pid}",
                        json=patient(canary),
                        headers={**JSON, "If-Match": etag},
                    ),
                    412,
                    canary,
                    "conflict",
                )
            # If-Match on a resource that does not exist yet cannot match either.
            rejected(
                http.put(
                    f"/Patient/new-{tag}",
                    json=patient(canary),
                    headers={**JSON, "If-Match": 'W/"1"'},
                ),
                412,
                canary,
            )
            rejected(
                http.put(
                    f"/Patient/{pid}", json=patient(canary), headers={**JSON, "If-Match": "yes"}
                ),
                400,
                canary,
            )
        read = http.get(f"/Patient/{pid}")
        assert read.headers["ETag"] == 'W/"1"'
        assert read.json()["name"][0]["family"] == f"Match{tag}"


@pytest.mark.usefixtures("phi_safe")
def test_missing_or_invalid_token_is_401(api: Api, canary: str) -> None:
    url = api.fhir
    raw = json.dumps(patient(canary))
    with unchanged(api):
        for headers in (
            {},
            {"Authorization": "Bearer pg_not-a-real-token"},
            {"Authorization": f"Bearer {api.server.token}x"},
            {"Authorization": "Bearer"},
            {"Authorization": f"Basic {api.server.token}"},
            {"Authorization": api.server.token},
        ):
            for r in (
                httpx.get(f"{url}/Patient", params={"family": canary}, headers=headers),
                httpx.post(f"{url}/Patient", content=raw, headers={**headers, **JSON}),
                httpx.put(f"{url}/Patient/x-1", content=raw, headers={**headers, **JSON}),
                httpx.post(f"{url}/Patient/_search", data={"family": canary}, headers=headers),
                httpx.post(url, content=raw, headers={**headers, **JSON}),
                httpx.get(f"{url}/Patient/x-1", headers=headers),
                httpx.delete(f"{url}/Patient/x-1", headers=headers),
            ):
                body = rejected(r, 401, canary, "login")
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
                assert body["issue"][0]["diagnostics"] == "authentication failed"


@pytest.mark.usefixtures("phi_safe")
def test_unknown_or_malformed_search_parameter_is_400(api: Api, canary: str) -> None:
    with api.client() as http, unchanged(api):
        for rtype, params in (
            ("Patient", {"nickname": canary}),
            ("Patient", {"family:contains": canary}),
            ("Patient", {"birthdate": canary}),
            ("Patient", {"birthdate": "1970-02-30"}),
            ("Patient", {"family": canary, "_count": "many"}),
            ("Patient", {"family": canary, "_sort": "family"}),
            ("Patient", {"family": canary, "_summary": "true"}),
            ("Patient", {"family": canary, "_lastUpdated": f"ne{canary}"}),
            ("Observation", {"patient": f"Group/{canary}"}),
            ("Observation", {"code": canary, "value-quantity": "5"}),
        ):
            rejected(http.get(f"/{rtype}", params=params), 400, canary, "invalid")
            rejected(http.post(f"/{rtype}/_search", data=params), 400, canary, "invalid")
        rejected(http.get("/Patient/x/_history/latest"), 400, canary)
        r = http.get("/Patient", params={"family": canary}, headers={"X-Purpose-Of-Use": "SPY"})
        rejected(r, 400, canary)


@pytest.mark.usefixtures("phi_safe")
def test_invalid_values_are_400_without_echoing_them(api: Api, canary: str) -> None:
    with api.client() as http, unchanged(api):
        for bad in (
            patient(canary, birthDate=f"19{canary}"),
            patient(canary, active=canary),
            patient(canary, deceasedBoolean=canary),
            patient(canary, multipleBirthInteger=canary),
            patient(canary, telecom=canary),
            patient(canary, name=canary),
            patient(canary, contact=[{"name": {"family": 5}}]),
        ):
            body = rejected(http.post("/Patient", json=bad, headers=JSON), 400, canary, "invalid")
            assert body["issue"][0]["diagnostics"] == "Patient failed validation"
            rejected(http.put("/Patient/invalid-1", json=bad, headers=JSON), 400, canary)
        # An id that is not a FHIR id (ids are logged as part of the path: no canary there).
        rejected(http.put("/Patient/bad%20id", json=patient(canary), headers=JSON), 400, canary)


@pytest.mark.usefixtures("phi_safe")
def test_phi_in_successful_searches_stays_out_of_logs(api: Api, canary: str) -> None:
    with api.client() as http:
        assert http.get("/Patient", params={"family": canary, "birthdate": "1970"}).is_success
        assert http.get("/Patient", params={"name": canary, "_count": "1"}).is_success
        assert http.post("/Patient/_search", data={"given": canary}).is_success
        stored = http.post("/Patient", json=patient(canary), headers=JSON)
        assert stored.status_code == 201
        found = http.get("/Patient", params={"family": canary}).json()
        assert found["total"] == 1  # the canary was really sent, stored and searched
