"""Batch and transaction Bundles against a live server."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from .helpers import FHIR_JSON, Api, fhir_client, ids_of, outcome_of

JSON = {"Content-Type": FHIR_JSON}


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def post(url: str, resource: dict[str, Any], full_url: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"resource": resource, "request": {"method": "POST", "url": url}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def family_total(http: httpx.Client, family: str) -> int:
    total: int = http.get("/Patient", params={"family": family, "_summary": "count"}).json()[
        "total"
    ]
    return total


def observation(subject: str, code: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": subject},
        **extra,
    }


def test_transaction_rewrites_urn_uuid_references(api: Api, tag: str) -> None:
    patient_urn, encounter_urn = urn(), urn()
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            # References point forwards and backwards: ids are assigned before any write.
            post(
                "Observation",
                observation(
                    patient_urn,
                    f"{tag}-obs",
                    encounter={"reference": encounter_urn},
                    effectiveDateTime="2021-02-03",
                ),
            ),
            post(
                "Encounter",
                {
                    "resourceType": "Encounter",
                    "status": "finished",
                    "class": {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                        "code": "AMB",
                    },
                    "subject": {"reference": patient_urn},
                },
                encounter_urn,
            ),
            post(
                "Patient",
                {"resourceType": "Patient", "name": [{"family": f"Tx{tag}"}]},
                patient_urn,
            ),
        ],
    }
    with api.client() as http:
        r = http.post("", json=bundle, headers=JSON)
        assert r.status_code == 200, r.text
        reply = r.json()
        assert reply["resourceType"] == "Bundle"
        assert reply["type"] == "transaction-response"
        assert [e["response"]["status"] for e in reply["entry"]] == ["201 Created"] * 3
        locations = [e["response"]["location"] for e in reply["entry"]]
        obs_id = locations[0].split("/")[1]
        enc_id = locations[1].split("/")[1]
        pid = locations[2].split("/")[1]
        assert locations[2] == f"Patient/{pid}/_history/1"
        # A urn:uuid fullUrl whose UUID is free becomes the resource id.
        assert pid == patient_urn.removeprefix("urn:uuid:")

        obs = http.get(f"/Observation/{obs_id}").json()
        assert obs["subject"] == {"reference": f"Patient/{pid}"}
        assert obs["encounter"] == {"reference": f"Encounter/{enc_id}"}
        enc = http.get(f"/Encounter/{enc_id}").json()
        assert enc["subject"] == {"reference": f"Patient/{pid}"}
        assert "urn:uuid" not in http.get(f"/Patient/{pid}/$everything").text
        assert ids_of(http.get("/Observation", params={"patient": pid}).json()) == {obs_id}
        assert ids_of(http.get("/Encounter", params={"subject": f"Patient/{pid}"}).json()) == {
            enc_id
        }


def test_transaction_is_all_or_nothing(api: Api, tag: str) -> None:
    patient_urn = urn()
    good = post(
        "Patient", {"resourceType": "Patient", "name": [{"family": f"Atomic{tag}"}]}, patient_urn
    )
    failures: list[tuple[int, dict[str, Any]]] = [
        # an element the Observation model does not have
        (400, post("Observation", {**observation(patient_urn, f"{tag}-x"), "colour": "red"})),
        # a reference to a resource that does not exist
        (400, post("Observation", observation(f"Patient/missing-{tag}", f"{tag}-x"))),
        # a urn:uuid that names nothing in the bundle or the store
        (400, post("Observation", observation(urn(), f"{tag}-x"))),
        # a version-aware update of a resource that is not at that version
        (
            412,
            {
                "resource": {"resourceType": "Patient", "id": f"absent-{tag}"},
                "request": {"method": "PUT", "url": f"Patient/absent-{tag}", "ifMatch": 'W/"4"'},
            },
        ),
        # deleting something that does not exist
        (404, {"request": {"method": "DELETE", "url": f"Patient/absent-{tag}"}}),
    ]
    with api.client() as http:
        for status, bad in failures:
            before = api.fingerprint()
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [good, bad]}
            r = http.post("", json=bundle, headers=JSON)
            assert r.status_code == status, r.text
            texts = [i["diagnostics"] for i in outcome_of(r)["issue"]]
            assert texts[0] == "entry 1 failed"
            assert api.fingerprint() == before, bad
            assert family_total(http, f"Atomic{tag}") == 0
            assert http.get(f"/Patient/{patient_urn.removeprefix('urn:uuid:')}").status_code == 404

        # The same good entry on its own goes through.
        ok = http.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": [good]})
        assert ok.status_code == 200
        assert family_total(http, f"Atomic{tag}") == 1


def test_batch_answers_each_entry_on_its_own(api: Api, tag: str) -> None:
    with api.client() as http:
        existing = http.post(
            "/Patient",
            json={"resourceType": "Patient", "name": [{"family": f"Batch{tag}"}]},
            headers=JSON,
        ).json()["id"]
        bundle = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                post("Patient", {"resourceType": "Patient", "name": [{"family": f"Batch{tag}"}]}),
                post("Observation", {**observation(f"Patient/{existing}", f"{tag}-b"), "bad": 1}),
                post("Observation", observation(f"Patient/{existing}", f"{tag}-b")),
                {"request": {"method": "GET", "url": f"Patient/{existing}"}},
                {"request": {"method": "GET", "url": f"Patient?family=batch{tag}"}},
                {
                    "resource": {
                        "resourceType": "Patient",
                        "id": existing,
                        "name": [{"family": f"Batch{tag}"}],
                        "gender": "male",
                    },
                    "request": {"method": "PUT", "url": f"Patient/{existing}", "ifMatch": 'W/"1"'},
                },
                {"request": {"method": "DELETE", "url": f"Patient/none-{tag}"}},
            ],
        }
        r = http.post("", json=bundle, headers=JSON)
        assert r.status_code == 200, r.text
        reply = r.json()
        assert reply["type"] == "batch-response"
        statuses = [e["response"]["status"] for e in reply["entry"]]
        assert statuses == [
            "201 Created",
            "400",
            "201 Created",
            "200 OK",
            "200 OK",
            "200 OK",
            "404",
        ]
        bad = reply["entry"][1]["response"]["outcome"]
        assert bad["resourceType"] == "OperationOutcome"
        # The read ran after the update (FHIR batch order: DELETE, POST, PUT, GET).
        assert reply["entry"][3]["resource"]["gender"] == "male"
        assert reply["entry"][4]["resource"]["total"] == 2

        assert family_total(http, f"Batch{tag}") == 2
        obs = http.get("/Observation", params={"code": f"{tag}-b"}).json()
        assert obs["total"] == 1  # the bad entry wrote nothing
        assert http.get(f"/Patient/{existing}").headers["ETag"] == 'W/"2"'


def test_fhirclient_posts_a_transaction(api: Api, tag: str) -> None:
    from fhirclient.models.bundle import Bundle

    patient_urn = urn()
    doc = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            post(
                "Patient",
                {"resourceType": "Patient", "name": [{"family": f"Fc{tag}"}]},
                patient_urn,
            ),
            post("Observation", observation(patient_urn, f"{tag}-fc")),
        ],
    }
    smart = fhir_client(api)
    reply = Bundle(doc).create(smart.server)
    assert reply is not None
    assert reply["type"] == "transaction-response"
    pid = patient_urn.removeprefix("urn:uuid:")
    with api.client() as http:
        obs = http.get("/Observation", params={"code": f"{tag}-fc"}).json()
        assert obs["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{pid}"
