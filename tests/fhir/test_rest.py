"""The FHIR REST interactions against a live server: a real FHIR client and plain HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import requests
from fhirclient.models.humanname import HumanName
from fhirclient.models.patient import Patient

from .helpers import FHIR_JSON, Api, fhir_client, outcome_of

JSON = {"Content-Type": FHIR_JSON}


def patient(tag: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "name": [{"family": f"Rest{tag}", "given": ["Ada"]}],
        "birthDate": "1980-05-17",
        "gender": "female",
        **extra,
    }


def test_capability_statement_needs_no_token(api: Api) -> None:
    r = httpx.get(f"{api.fhir}/metadata")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(FHIR_JSON)
    cs = r.json()
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"
    rest = cs["rest"][0]
    assert {i["code"] for i in rest["interaction"]} == {"batch", "transaction"}
    by_type = {res["type"]: res for res in rest["resource"]}
    patient_params = {p["name"] for p in by_type["Patient"]["searchParam"]}
    assert {"_id", "_lastUpdated", "identifier", "name", "family", "given"} <= patient_params
    assert {"birthdate", "gender"} <= patient_params
    assert {"code", "date", "patient", "subject"} <= {
        p["name"] for p in by_type["Observation"]["searchParam"]
    }
    assert by_type["Patient"]["operation"][0]["name"] == "everything"

    # The FHIR client parses it with its own R4 models.
    statement = fhir_client(api).server.capabilityStatement
    assert statement.fhirVersion == "4.0.1"
    assert "Condition" in {res.type for res in statement.rest[0].resource}


def test_fhirclient_create_read_update_search_delete(api: Api, tag: str) -> None:
    smart = fhir_client(api)
    new = Patient(patient(tag))
    created = new.create(smart.server)
    assert created is not None
    pid = created["id"]
    assert created["meta"]["versionId"] == "1"

    read = Patient.read(pid, smart.server)
    assert read.id == pid
    assert read.name[0].family == f"Rest{tag}"
    assert read.birthDate.isostring == "1980-05-17"
    assert read.meta.versionId == "1"

    read.gender = "other"
    alias = HumanName()
    alias.family = f"Alias{tag}"
    alias.given = ["Ada"]
    read.name.append(alias)
    updated = read.update()
    assert updated is not None
    assert updated["meta"]["versionId"] == "2"
    assert Patient.read(pid, smart.server).gender == "other"

    by_family = list(
        Patient.where(struct={"family": f"alias{tag}"}).perform_resources_iter(smart.server)
    )
    assert [p.id for p in by_family] == [pid]
    by_both = list(
        Patient.where(struct={"family": f"REST{tag}", "gender": "other"}).perform_resources_iter(
            smart.server
        )
    )
    assert [p.id for p in by_both] == [pid]
    assert (
        list(
            Patient.where(struct={"family": f"rest{tag}", "gender": "male"}).perform_resources_iter(
                smart.server
            )
        )
        == []
    )

    read.delete()
    with pytest.raises(requests.HTTPError) as gone:
        Patient.read(pid, smart.server)
    assert gone.value.response.status_code == 410
    assert gone.value.response.json()["resourceType"] == "OperationOutcome"


def test_create_answers_201_with_location_and_etag(api: Api, tag: str) -> None:
    with api.client() as http:
        r = http.post("/Patient", json=patient(tag), headers=JSON)
        assert r.status_code == 201
        assert r.headers["content-type"].startswith(FHIR_JSON)
        body = r.json()
        pid = body["id"]
        assert r.headers["Location"] == f"{api.fhir}/Patient/{pid}/_history/1"
        assert r.headers["ETag"] == 'W/"1"'
        assert r.headers["Last-Modified"] == body["meta"]["lastUpdated"]
        assert body["meta"]["versionId"] == "1"
        assert body["name"] == [{"family": f"Rest{tag}", "given": ["Ada"]}]

        # A client-supplied id on create is ignored: the server assigns ids.
        r2 = http.post("/Patient", json=patient(tag, id="chosen-by-client"), headers=JSON)
        assert r2.status_code == 201
        assert r2.json()["id"] != "chosen-by-client"

        # Prefer: return=minimal gives the headers and no body.
        r3 = http.post("/Patient", json=patient(tag), headers={**JSON, "Prefer": "return=minimal"})
        assert r3.status_code == 201
        assert r3.content == b""
        assert r3.headers["Location"].startswith(f"{api.fhir}/Patient/")

        read = http.get(f"/Patient/{pid}")
        assert read.status_code == 200
        assert read.headers["ETag"] == 'W/"1"'
        assert read.json() == body
        assert read.headers["Cache-Control"] == "no-store"
        assert read.headers["X-Content-Type-Options"] == "nosniff"

        vread = http.get(r.headers["Location"])
        assert vread.status_code == 200
        assert vread.json() == body


def test_update_with_if_match_and_stale_if_match(api: Api, tag: str) -> None:
    with api.client() as http:
        pid = http.post("/Patient", json=patient(tag), headers=JSON).json()["id"]
        v2 = http.put(
            f"/Patient/{pid}",
            json=patient(tag, id=pid, gender="male"),
            headers={**JSON, "If-Match": 'W/"1"'},
        )
        assert v2.status_code == 200
        assert v2.headers["ETag"] == 'W/"2"'
        assert v2.json()["meta"]["versionId"] == "2"
        assert v2.json()["gender"] == "male"

        before = api.fingerprint()
        stale = http.put(
            f"/Patient/{pid}",
            json=patient(tag, id=pid, gender="other"),
            headers={**JSON, "If-Match": 'W/"1"'},
        )
        assert stale.status_code == 412
        outcome_of(stale)
        assert api.fingerprint() == before
        current = http.get(f"/Patient/{pid}")
        assert current.headers["ETag"] == 'W/"2"'
        assert current.json()["gender"] == "male"

        # Without If-Match the update is unconditional.
        v3 = http.put(f"/Patient/{pid}", json=patient(tag, gender="unknown"), headers=JSON)
        assert v3.status_code == 200
        assert v3.headers["ETag"] == 'W/"3"'


def test_update_as_create(api: Api, tag: str) -> None:
    rid = f"client-{tag}"
    with api.client() as http:
        r = http.put(f"/Patient/{rid}", json=patient(tag, id=rid), headers=JSON)
        assert r.status_code == 201
        assert r.headers["Location"] == f"{api.fhir}/Patient/{rid}/_history/1"
        assert r.headers["ETag"] == 'W/"1"'
        assert r.json()["id"] == rid
        read = http.get(f"/Patient/{rid}")
        assert read.status_code == 200
        assert read.json()["name"][0]["family"] == f"Rest{tag}"
        again = http.put(f"/Patient/{rid}", json=patient(tag), headers=JSON)
        assert again.status_code == 200
        assert again.headers["ETag"] == 'W/"2"'


def test_delete_then_gone_history_and_vread(api: Api, tag: str) -> None:
    with api.client() as http:
        pid = http.post("/Patient", json=patient(tag), headers=JSON).json()["id"]
        v2 = http.put(f"/Patient/{pid}", json=patient(tag, gender="male"), headers=JSON)
        assert v2.status_code == 200

        deleted = http.delete(f"/Patient/{pid}")
        assert deleted.status_code == 200
        assert deleted.json()["resourceType"] == "OperationOutcome"

        gone = http.get(f"/Patient/{pid}")
        assert gone.status_code == 410
        outcome_of(gone)

        history = http.get(f"/Patient/{pid}/_history")
        assert history.status_code == 200
        bundle = history.json()
        assert bundle["resourceType"] == "Bundle"
        assert bundle["type"] == "history"
        assert bundle["total"] == 3
        methods = [e["request"]["method"] for e in bundle["entry"]]
        assert methods == ["DELETE", "PUT", "POST"]
        assert [e["response"]["etag"] for e in bundle["entry"]] == ['W/"3"', 'W/"2"', 'W/"1"']
        assert "resource" not in bundle["entry"][0]
        assert bundle["entry"][1]["resource"]["gender"] == "male"
        assert bundle["entry"][2]["resource"]["gender"] == "female"

        v1 = http.get(f"/Patient/{pid}/_history/1")
        assert v1.status_code == 200
        assert v1.json()["gender"] == "female"
        assert v1.headers["ETag"] == 'W/"1"'
        assert http.get(f"/Patient/{pid}/_history/3").status_code == 410
        missing = http.get(f"/Patient/{pid}/_history/9")
        assert missing.status_code == 404
        outcome_of(missing)

        search = http.get("/Patient", params={"family": f"Rest{tag}"})
        assert search.json()["total"] == 0

        # Deleting again is harmless; unknown resources are 404.
        assert http.delete(f"/Patient/{pid}").status_code == 200
        unknown = http.delete(f"/Patient/none-{tag}")
        assert unknown.status_code == 404
        outcome_of(unknown)


def test_read_unknown_resource_is_404(api: Api, tag: str) -> None:
    with api.client() as http:
        r = http.get(f"/Patient/unknown-{tag}")
        assert r.status_code == 404
        outcome_of(r)
        h = http.get(f"/Patient/unknown-{tag}/_history")
        assert h.status_code == 404
        outcome_of(h)
