"""FHIR search against a live server: every parameter phiguard serves, paging and $everything."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fhirclient.models.observation import Observation
from fhirclient.models.patient import Patient

from .helpers import FHIR_JSON, Api, fhir_client, ids_of, outcome_of

JSON = {"Content-Type": FHIR_JSON}
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"


def create(http: httpx.Client, resource: dict[str, Any]) -> dict[str, Any]:
    r = http.post(f"/{resource['resourceType']}", json=resource, headers=JSON)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


@dataclass
class Cohort:
    """Five patients with known names, identifiers, birth dates and genders."""

    tag: str
    ids: dict[str, str]
    system: str

    @property
    def scope(self) -> str:
        return ",".join(self.ids.values())

    def names(self, found: set[str]) -> set[str]:
        by_id = {v: k for k, v in self.ids.items()}
        return {by_id[i] for i in found if i in by_id}


def make_cohort(http: httpx.Client, tag: str) -> Cohort:
    system = f"urn:oid:2.16.840.1.{int(tag[1:], 16)}"
    people = {
        "muller": {
            "name": [{"family": f"Müller{tag}", "given": ["Zoë", f"Anna{tag}"]}],
            "birthDate": "1990-02-10",
            "gender": "female",
        },
        "garcia": {"name": [{"family": f"García{tag} López{tag}", "given": ["José"]}]},
        "john": {
            "name": [{"family": f"Smith{tag}", "given": ["John"], "prefix": ["Dr"]}],
            "birthDate": "1985-07-04",
            "gender": "male",
        },
        "jane": {
            "name": [{"family": f"Smith{tag}", "given": ["Jane"]}],
            "birthDate": "1990-12-31",
            "gender": "female",
        },
        "kid": {
            "name": [{"family": f"Smith{tag}", "given": ["Kim"]}],
            "birthDate": "2001-01-01",
            "gender": "other",
        },
    }
    ids = {}
    for n, (key, fields) in enumerate(people.items()):
        ident = [{"system": system, "value": f"MRN-{tag}-{n}"}]
        ids[key] = create(http, {"resourceType": "Patient", "identifier": ident, **fields})["id"]
    return Cohort(tag, ids, system)


def found(http: httpx.Client, rtype: str, **params: str) -> set[str]:
    r = http.get(f"/{rtype}", params=params)
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "searchset"
    assert bundle["total"] == len(bundle.get("entry", []))
    return ids_of(bundle)


def test_patient_by_id_identifier_and_names(api: Api, tag: str) -> None:
    with api.client() as http:
        c = make_cohort(http, tag)
        p = lambda **kw: c.names(found(http, "Patient", **kw))  # noqa: E731

        assert p(_id=c.ids["john"]) == {"john"}
        assert p(_id=f"{c.ids['john']},{c.ids['jane']}") == {"john", "jane"}
        assert p(_id=f"nothing-{tag}") == set()

        assert p(identifier=f"MRN-{tag}-2") == {"john"}
        assert p(identifier=f"{c.system}|MRN-{tag}-3") == {"jane"}
        assert p(identifier=f"urn:oid:9.9|MRN-{tag}-3") == set()
        assert p(identifier=f"mrn-{tag}-3") == set()  # identifiers are exact

        # family: case- and accent-insensitive, whole words, no prefixes.
        assert p(family=f"muller{tag}") == {"muller"}
        assert p(family=f"MÜLLER{tag}") == {"muller"}
        assert p(family=f"Mülle{tag}") == set()
        assert p(family=f"lopez{tag}") == {"garcia"}
        assert p(family=f"GARCIA{tag}") == {"garcia"}
        assert p(family=f"garcía{tag} LÓPEZ{tag}") == {"garcia"}
        assert p(family=f"smith{tag}") == {"john", "jane", "kid"}
        assert p(family=f"smith{tag},muller{tag}") == {"john", "jane", "kid", "muller"}

        # given, and name (family, given, prefix)
        assert p(given=f"anna{tag}") == {"muller"}
        assert p(given="zoe", _id=c.scope) == {"muller"}
        assert p(given="ZOË", _id=c.scope) == {"muller"}
        assert p(given="jose", _id=c.scope) == {"garcia"}
        assert p(name=f"smith{tag}") == {"john", "jane", "kid"}
        assert p(name=f"Anna{tag}") == {"muller"}
        assert p(name="jane", _id=c.scope) == {"jane"}
        assert p(name="dr", _id=c.scope) == {"john"}
        assert p(family=f"smith{tag}", given="kim") == {"kid"}

        # gender (token, exact), OR within a parameter, AND across parameters
        assert p(gender="female", _id=c.scope) == {"muller", "jane"}
        assert p(gender="male", _id=c.scope) == {"john"}
        assert p(gender="female,other", _id=c.scope) == {"muller", "jane", "kid"}
        assert p(gender="female", family=f"smith{tag}") == {"jane"}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("1990", {"muller", "jane"}),
        ("1990-02", {"muller"}),
        ("1990-02-10", {"muller"}),
        ("eq1990-02-10", {"muller"}),
        ("1990-02-11", set()),
        ("ge1990-02-10", {"muller", "jane", "kid"}),
        ("gt1990-02-10", {"jane", "kid"}),
        ("le1990-02-10", {"muller", "john"}),
        ("lt1990-02-10", {"john"}),
        ("lt1990", {"john"}),
        ("le1990", {"john", "muller", "jane"}),
        ("gt1990", {"kid"}),
        ("ge1990-12", {"jane", "kid"}),
        ("lt1985-07-04", set()),
        ("le1985-07-04", {"john"}),
    ],
)
def test_patient_birthdate(api: Api, tag: str, query: str, expected: set[str]) -> None:
    with api.client() as http:
        c = make_cohort(http, tag)
        assert c.names(found(http, "Patient", birthdate=query, _id=c.scope)) == expected


def test_birthdate_range_with_two_bounds(api: Api, tag: str) -> None:
    with api.client() as http:
        c = make_cohort(http, tag)
        r = http.get(
            "/Patient",
            params=[("birthdate", "ge1985"), ("birthdate", "lt1990-12-31"), ("_id", c.scope)],
        )
        assert c.names(ids_of(r.json())) == {"john", "muller"}


def clinical(http: httpx.Client, tag: str, pid: str, other: str) -> dict[str, str]:
    """Observations and a condition with codes of this test's own, on two patients."""
    subject = {"reference": f"Patient/{pid}"}
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": f"{tag}-hr", "display": "Heart rate"}]},
        "subject": subject,
    }
    ids = {
        "hr2019": create(http, {**obs, "effectiveDateTime": "2019-11-30T23:30:00+00:00"})["id"],
        "hr2020": create(http, {**obs, "effectiveDateTime": "2020-03-05T10:30:00+01:00"})["id"],
        "bp2021": create(
            http,
            {
                **obs,
                "code": {"coding": [{"system": LOINC, "code": f"{tag}-bp"}]},
                "effectivePeriod": {"start": "2021-06-01", "end": "2021-06-02"},
            },
        )["id"],
        "other": create(
            http,
            {**obs, "subject": {"reference": f"Patient/{other}"}, "effectiveDateTime": "2020"},
        )["id"],
        "asthma": create(
            http,
            {
                "resourceType": "Condition",
                "subject": subject,
                "code": {"coding": [{"system": SNOMED, "code": f"{tag}-asthma"}]},
                "onsetDateTime": "2010-04-01",
            },
        )["id"],
        "flu": create(
            http,
            {
                "resourceType": "Condition",
                "subject": subject,
                "code": {"coding": [{"system": SNOMED, "code": f"{tag}-flu"}]},
                "onsetDateTime": "2022-01-15T08:00:00Z",
            },
        )["id"],
    }
    return ids


def test_clinical_search_by_patient_subject_code_and_date(api: Api, tag: str) -> None:
    with api.client() as http:
        c = make_cohort(http, tag)
        pid, other = c.ids["john"], c.ids["jane"]
        ids = clinical(http, tag, pid, other)
        names = {v: k for k, v in ids.items()}
        o = lambda **kw: {names[i] for i in found(http, "Observation", **kw)}  # noqa: E731
        cond = lambda **kw: {names[i] for i in found(http, "Condition", **kw)}  # noqa: E731

        assert o(patient=pid) == {"hr2019", "hr2020", "bp2021"}
        assert o(subject=f"Patient/{pid}") == {"hr2019", "hr2020", "bp2021"}
        assert o(patient=f"{pid},{other}") == {"hr2019", "hr2020", "bp2021", "other"}
        assert o(_id=ids["bp2021"]) == {"bp2021"}
        assert cond(patient=pid) == {"asthma", "flu"}
        assert cond(subject=pid) == {"asthma", "flu"}

        assert o(code=f"{tag}-hr") == {"hr2019", "hr2020", "other"}
        assert o(code=f"{LOINC}|{tag}-hr") == {"hr2019", "hr2020", "other"}
        assert o(code=f"http://example.org|{tag}-hr") == set()
        assert o(code=f"{tag}-hr,{tag}-bp", patient=pid) == {"hr2019", "hr2020", "bp2021"}
        assert o(code=f"{tag}-hr", date="2020") == {"hr2020", "other"}
        assert o(code=f"{tag}-hr", date="2020-03-05") == {"hr2020"}
        assert o(code=f"{tag}-hr", date="ge2020-01-01") == {"hr2020", "other"}
        assert o(code=f"{tag}-hr", date="lt2020") == {"hr2019"}
        assert o(patient=pid, date="ge2021") == {"bp2021"}
        assert o(patient=pid, date="2021-06") == {"bp2021"}
        assert o(patient=pid, date="le2019-11-30") == {"hr2019"}
        assert o(patient=pid, date="gt2019-11-30") == {"hr2020", "bp2021"}

        assert cond(code=f"{tag}-asthma") == {"asthma"}
        assert cond(code=f"{SNOMED}|{tag}-flu") == {"flu"}
        assert cond(patient=pid, date="2010") == {"asthma"}
        assert cond(patient=pid, date="ge2011") == {"flu"}
        assert cond(patient=pid, date="lt2022-01-15") == {"asthma"}
        assert cond(code=f"{tag}-flu", date="2022-01-15") == {"flu"}

        # The FHIR client's search gives the same answers.
        smart = fhir_client(api)
        hits = Observation.where(struct={"code": f"{LOINC}|{tag}-hr", "patient": pid})
        assert {ob.id for ob in hits.perform_resources_iter(smart.server)} == {
            ids["hr2019"],
            ids["hr2020"],
        }


def test_last_updated(api: Api, tag: str) -> None:
    with api.client() as http:
        first = create(http, {"resourceType": "Patient", "name": [{"family": f"Lu{tag}"}]})
        time.sleep(0.02)  # lastUpdated has millisecond precision
        second = create(http, {"resourceType": "Patient", "name": [{"family": f"Lu{tag}"}]})
        stamp = second["meta"]["lastUpdated"]
        assert stamp > first["meta"]["lastUpdated"]
        scope = {"family": f"Lu{tag}"}
        assert found(http, "Patient", _lastUpdated=f"ge{stamp}", **scope) == {second["id"]}
        assert found(http, "Patient", _lastUpdated=f"lt{stamp}", **scope) == {first["id"]}
        assert found(http, "Patient", _lastUpdated="ge2000-01-01", **scope) == {
            first["id"],
            second["id"],
        }
        assert found(http, "Patient", _lastUpdated="lt2000", **scope) == set()
        obs = create(
            http,
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "note"},
                "subject": {"reference": f"Patient/{first['id']}"},
            },
        )
        assert found(
            http, "Observation", patient=first["id"], _lastUpdated=f"ge{obs['meta']['lastUpdated']}"
        ) == {obs["id"]}


def test_paging_follows_next_until_exhausted(api: Api, tag: str) -> None:
    with api.client() as http:
        made = {
            create(http, {"resourceType": "Patient", "name": [{"family": f"Page{tag}"}]})["id"]
            for _ in range(7)
        }
        r = http.get("/Patient", params={"family": f"page{tag}", "_count": "3"})
        bundle = r.json()
        assert bundle["total"] == 7
        assert len(bundle["entry"]) == 3
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        assert "next" in links
        assert "previous" not in links
        seen: list[str] = []
        pages = 0
        while True:
            pages += 1
            assert bundle["total"] == 7
            seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
            links = {link["relation"]: link["url"] for link in bundle["link"]}
            if pages > 1:
                assert "previous" in links
            if "next" not in links:
                break
            assert links["next"].startswith(f"{api.fhir}/Patient?")
            bundle = http.get(links["next"]).json()
            assert pages < 10
        assert pages == 3
        assert len(seen) == bundle["total"] == 7
        assert set(seen) == made

        # fhirclient follows the same next links.
        smart = fhir_client(api)
        search = Patient.where(struct={"family": f"Page{tag}", "_count": "2"})
        assert {p.id for p in search.perform_resources_iter(smart.server)} == made

        # _summary=count: the total only, no entries and no paging links.
        for params in ({"_summary": "count"}, {"_count": "0"}):
            summary = http.get("/Patient", params={"family": f"page{tag}", **params}).json()
            assert summary["total"] == 7
            assert "entry" not in summary
            assert not [x for x in summary.get("link", []) if x["relation"] == "next"]

        # Sorting by id, both ways.
        up = http.get("/Patient", params={"family": f"page{tag}", "_sort": "_id"}).json()
        assert [e["resource"]["id"] for e in up["entry"]] == sorted(made)
        down = http.get("/Patient", params={"family": f"page{tag}", "_sort": "-_id"}).json()
        assert [e["resource"]["id"] for e in down["entry"]] == sorted(made, reverse=True)


def test_post_search_form_encoded(api: Api, tag: str) -> None:
    with api.client() as http:
        c = make_cohort(http, tag)
        r = http.post(
            "/Patient/_search",
            data={"family": f"smith{tag}", "gender": "female,male", "_count": "1"},
        )
        assert r.status_code == 200
        bundle = r.json()
        assert bundle["total"] == 2
        assert len(bundle["entry"]) == 1
        assert c.names(ids_of(bundle)) <= {"john", "jane"}
        # Query-string parameters and form parameters are AND-ed.
        r2 = http.post(
            f"/Patient/_search?_id={c.ids['jane']}", data={"family": f"smith{tag}"}
        ).json()
        assert c.names(ids_of(r2)) == {"jane"}


def test_everything(api: Api, tag: str) -> None:
    with api.client() as http:
        c = make_cohort(http, tag)
        pid = c.ids["john"]
        ids = clinical(http, tag, pid, c.ids["jane"])
        assert http.delete(f"/Observation/{ids['hr2019']}").status_code == 200
        r = http.get(f"/Patient/{pid}/$everything")
        assert r.status_code == 200
        bundle = r.json()
        assert bundle["resourceType"] == "Bundle"
        assert bundle["entry"][0]["resource"]["resourceType"] == "Patient"
        assert bundle["entry"][0]["resource"]["id"] == pid
        got = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"]}
        assert got == {
            ("Patient", pid),
            ("Observation", ids["hr2020"]),
            ("Observation", ids["bp2021"]),
            ("Condition", ids["asthma"]),
            ("Condition", ids["flu"]),
        }
        assert bundle["total"] == 5
        missing = http.get(f"/Patient/none-{tag}/$everything")
        assert missing.status_code == 404
        outcome_of(missing)


def test_no_match_is_an_empty_searchset(api: Api, tag: str) -> None:
    with api.client() as http:
        r = http.get("/Patient", params={"family": f"Nobody{tag}"})
        assert r.status_code == 200
        bundle = r.json()
        assert bundle["total"] == 0
        assert "entry" not in bundle  # FHIR JSON has no empty arrays
