"""The system canary: no plaintext PHI at rest through any path phiguard now has.

``test_canary.py`` covers the vault's own paths.  This test drives everything built
since, through the real entry points, with unique canary strings as the PHI:

- FHIR over HTTP with an operator token and a user's OAuth token: patients, a care
  team, an encounter, an appointment and a consent (the relationship index), searches
  whose query strings carry names, an MRN, an address and a birth date, a search
  refused for a bad value, and a bulk ``$export`` whose files stay in the home;
- the console over HTTP (sign-in with TOTP enrolment): break-the-glass declared with
  a free-text reason, reviewed and closed with a note; the access report as a page and
  a PDF; user and policy administration; OAuth consent with a launch patient (once
  with a patient's *name* typed by mistake), the code exchanged and the token used;
- privacy monitoring from the command line: CSV exports from another EHR (names,
  addresses, birth dates, MRNs, and refused rows holding canaries), a scan over the
  exports and the ledger that notifies a real SMTP peer and a real webhook receiver,
  notes and suppression reasons (CLI and console), the watcher following the ledger
  while the emergency is declared; ``audit report`` and ``audit export`` writing into
  the home; ``monitor evaluate`` and ``monitor generate`` (synthetic data, and said so).

Then every byte is searched, in the forms a leak could take (``tests.support.canary``):
the home (databases with their WAL and journals, the ledger, logs, ``serve.out``,
reports), the temporary directory, home directory and working directory the processes
were given, the refused-rows file, every command's output, every error body, every
mail and webhook request.  Staff free text (a display name, a department, a policy
comment) is not PHI and may be stored, but must not reach a log or an output either.

The same flow against the deliberately leaky build (``tests/support/leaky``: sealing
off, full URLs logged, notifications naming patients, refused rows quoted) must be
caught on every channel, or the scans prove nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pyotp
import pytest

from phiguard.crypto.envelope import Sealer
from phiguard.identity.accounts import Accounts
from phiguard.identity.clients import ClientRegistry
from phiguard.identity.passwords import PasswordHashing
from phiguard.records.context import system_context
from phiguard.synth.fhir import consent_denying
from phiguard.system import System, create_api_token
from tests.cli import assert_one_error_line, cli, cli_env, make_home
from tests.identity.conftest import CHEAP
from tests.support.canary import encodings, find, mail_text, scan_tree
from tests.support.oauth import pkce_pair
from tests.support.peers import Hooks, Inbox, smtp_peer, webhook_peer
from tests.support.server import LiveServer, live_server
from tests.web.console_helpers import PASSWORD, csrf_of, enrol

LEAKY = Path(__file__).parent / "support" / "leaky"
FHIR_JSON = {"Content-Type": "application/fhir+json"}
REDIRECT = "https://app.example.org/callback"
WEBHOOK_SECRET = "canary-webhook-secret-" + "w" * 32
OPERATOR = "operator/canary"
PUBLIC_BASE = "http://127.0.0.1:8000"  # loopback: OAuth over plain HTTP is allowed
WATCH = (sys.executable, "-m", "phiguard.cli", "monitor", "watch")


# -- the canaries -------------------------------------------------------------------------
def canaries() -> tuple[dict[str, str], dict[str, str]]:
    """(PHI canaries, staff free text): unique per run, some with accents and quotes."""
    tag = secrets.token_hex(4)
    rng = random.Random(tag)
    birth = f"19{rng.randint(10, 39)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    phi = {
        "family": f"Qzvfamilé{tag}",
        "given": f"Wxkgiven{tag}",
        "family_b": f"Pjrsecönd{tag}",
        "mrn": f"MRNCANARY{tag}",
        "street": f"{tag} O'Canary Lane",
        "birth": birth,
        "observation": f"Obscanary{tag}",
        "appointment": f"Apptcanary{tag}",
        "btg_reason": f"Btgreasoné{tag}",
        "btg_note": f"Btgnoteé{tag}",
        "btg_api": f"Btgapié{tag}",
        "note_case": f"Casenoteé{tag}",
        "note_cli": f"Clinoteé{tag}",
        "note_console": f"Webnoteé{tag}",
        "suppress_cli": f"Clisuppressé{tag}",
        "suppress_console": f"Websuppressé{tag}",
        "bad_row": f"Badrowcanary{tag}",
        "bad_search": f"Badsearché{tag}",
    }
    staff = {
        "display_name": f"Stäffname{tag}",
        "department": f"Deptcanary{tag}",
        "policy_comment": f"Policycomment{tag}",
    }
    return phi, staff


# -- what the flow saw ------------------------------------------------------------------------
@dataclass
class Seen:
    """Everything that left phiguard during the flow, by channel."""

    outputs: list[tuple[str, str]] = field(default_factory=list)  # (what, stdout+stderr)
    error_bodies: list[tuple[str, str]] = field(default_factory=list)
    wal_scans: list[str] = field(default_factory=list)  # hits while the server ran
    inbox: Inbox | None = None
    hooks: Hooks | None = None
    errors_file: Path | None = None
    watcher_alerts: int = 0
    facts: dict[str, Any] = field(default_factory=dict)

    def output(self, what: str, done: subprocess.CompletedProcess[str]) -> str:
        self.outputs.append((what, done.stdout + done.stderr))
        return done.stdout


@dataclass
class Layout:
    """Where a run keeps things: the home, the exports it reads, and the directories its
    processes were given as temporary directory, home directory and working directory."""

    root: Path

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    @property
    def scratch(self) -> Path:
        return self.root / "scratch"

    def env(self, *, leaky: bool, **extra: str) -> dict[str, str]:
        for name in ("tmp", "userhome", "cwd"):
            (self.scratch / name).mkdir(parents=True, exist_ok=True)
        paths = [str(LEAKY)] if leaky else []
        if os.environ.get("PYTHONPATH"):
            paths.append(os.environ["PYTHONPATH"])
        return cli_env(
            TMPDIR=str(self.scratch / "tmp"),
            HOME=str(self.scratch / "userhome"),
            XDG_CACHE_HOME=str(self.scratch / "userhome" / ".cache"),
            PYTHONPATH=os.pathsep.join(paths),
            PHIGUARD_WEBHOOK_SECRET=WEBHOOK_SECRET,
            **extra,
        )


def ok(seen: Seen, env: dict[str, str], *args: str | Path, stdin: str | None = None) -> str:
    done = cli(*args, env=env, stdin=stdin)
    assert done.returncode == 0, f"phiguard {args[:2]} failed: {done.stderr[-2000:]}"
    return seen.output(" ".join(map(str, args[:2])), done)


# -- the home before the server starts ----------------------------------------------------------
def fill(system: System, ids: dict[str, str]) -> None:
    """Staff accounts, the nurse's Practitioner, an OAuth app and an operator token."""
    repo = system.vault.repository(system_context())
    ids["practitioner"] = repo.create(
        {"resourceType": "Practitioner", "name": [{"family": "Nightingale", "given": ["Flo"]}]}
    ).id
    ids["other_practitioner"] = repo.create(
        {"resourceType": "Practitioner", "name": [{"family": "Elsewhere"}]}
    ).id
    accounts = Accounts.from_system(system, hashing=PasswordHashing(CHEAP))
    for user_id, roles, practitioner in (
        ("nurse01", ["nurse"], ids["practitioner"]),
        ("privacy01", ["privacy_officer"], None),
        ("admin01", ["security_admin"], None),
    ):
        accounts.add(
            user_id,
            f"{user_id.title()} Staff",
            f"{user_id}@hospital.example",
            roles,
            PASSWORD,
            by=OPERATOR,
            practitioner_id=practitioner,
        )
    app = ClientRegistry.from_system(system).add(
        "Bedside app",
        "public",
        by=OPERATOR,
        redirect_uris=[REDIRECT],
        scopes=["openid", "fhirUser", "launch/patient", "patient/*.rs"],
    )
    ids["client"] = app.client_id
    ids["operator_token"] = create_api_token(system, "canary-operator")


def configure(home: Path, smtp_port: int, webhook_url: str) -> None:
    """A fixed public base (tokens from the CLI and the server name the same issuer) and
    both notification channels, every alert notified."""
    cfg = home / "phiguard.toml"
    text = re.sub(r'(?m)^base_url = ""$', f'base_url = "{PUBLIC_BASE}"', cfg.read_text())
    cfg.write_text(text)
    with cfg.open("a") as f:
        f.write(
            "\n[monitor]\n"
            "notify_min_score = 0.0\n"
            'smtp_host = "127.0.0.1"\n'
            f"smtp_port = {smtp_port}\n"
            "smtp_starttls = false\n"
            'smtp_from = "phiguard@hospital.example"\n'
            'smtp_to = ["privacy@hospital.example"]\n'
            f'webhook_url = "{webhook_url}"\n'
        )


# -- FHIR: records, the relationship index, searches ---------------------------------------------
def patient(c: dict[str, str], family: str, mrn: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:phiguard:mrn", "value": mrn}],
        "name": [{"family": family, "given": [c["given"]]}],
        "address": [{"line": [c["street"]], "city": "Springfield", "postalCode": "12345"}],
        "birthDate": c["birth"],
    }


def write_records(server: LiveServer, c: dict[str, str], ids: dict[str, str]) -> None:
    h = {**server.headers, **FHIR_JSON}
    base = server.fhir

    def post(body: dict[str, Any]) -> str:
        r = httpx.post(f"{base}/{body['resourceType']}", json=body, headers=h, timeout=30)
        assert r.status_code == 201, r.text[:500]
        return str(r.json()["id"])

    ids["a"] = post(patient(c, c["family"], c["mrn"]))
    ids["b"] = post(patient(c, c["family_b"], c["mrn"] + "B"))
    nurse = {"reference": f"Practitioner/{ids['practitioner']}"}
    subject = {"reference": f"Patient/{ids['a']}"}
    today = dt.date.today().isoformat()
    post(
        {
            "resourceType": "CareTeam",
            "status": "active",
            "subject": subject,
            "period": {"start": "2020-01-01"},
            "participant": [{"member": nurse}],
        }
    )
    post(
        {
            "resourceType": "Encounter",
            "status": "in-progress",
            "class": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "IMP",
            },
            "subject": subject,
            "participant": [{"individual": nurse}],
            "period": {"start": f"{today}T08:00:00Z"},
            "reasonCode": [{"text": c["observation"]}],
        }
    )
    post(
        {
            "resourceType": "Appointment",
            "status": "booked",
            "description": c["appointment"],
            "start": f"{today}T09:00:00Z",
            "end": f"{today}T09:30:00Z",
            "participant": [
                {"actor": subject, "status": "accepted"},
                {"actor": nurse, "status": "accepted"},
            ],
        }
    )
    post(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": subject,
            "effectiveDateTime": f"{today}T10:00:00Z",
            "note": [{"text": c["observation"]}],
            "valueQuantity": {"value": 72, "unit": "/min"},
        }
    )
    consent = consent_denying(
        "canary-consent", ids["a"], practitioners=(ids["other_practitioner"],)
    )
    r = httpx.put(f"{base}/Consent/canary-consent", json=consent, headers=h, timeout=30)
    assert r.status_code in (200, 201), r.text[:500]


def search_records(server: LiveServer, token: str, c: dict[str, str], seen: Seen) -> None:
    """A user's searches put names, an MRN, an address and a birth date in the URL."""
    auth = {"Authorization": f"Bearer {token}"}
    base = server.fhir
    for params in (
        {"family": c["family"]},
        {"identifier": f"urn:phiguard:mrn|{c['mrn']}"},
        {"name": c["given"]},
        {"birthdate": c["birth"], "given": c["given"]},
    ):
        r = httpx.get(f"{base}/Patient", params=params, headers=auth, timeout=30)
        assert r.status_code == 200 and r.json()["total"] == 1, (params, r.text[:300])
    r = httpx.post(f"{base}/Patient/_search", data={"family": c["family"]}, headers=auth)
    assert r.json()["total"] == 1
    for refused in (
        {"birthdate": f"not-a-date-{c['bad_search']}"},
        {"address": c["street"]},  # not a supported parameter
        {"family:contains": c["family"]},  # no modifiers on blind indexes
    ):
        r = httpx.get(f"{base}/Patient", params=refused, headers=auth)
        assert r.status_code == 400, r.text[:300]
        seen.error_bodies.append((f"refused search {list(refused)}", r.text))
    r = httpx.get(f"{base}/Observation", params={"patient": seen.facts["a"]}, headers=auth)
    assert r.status_code == 200 and r.json()["total"] == 1


def bulk_export(server: LiveServer, token: str, c: dict[str, str]) -> None:
    """A bulk $export of the patients; its files stay (sealed) in the home for the scan."""
    auth = {"Authorization": f"Bearer {token}"}
    kicked = httpx.get(
        f"{server.fhir}/$export",
        params={"_type": "Patient"},
        headers={**auth, "Prefer": "respond-async"},
        timeout=30,
    )
    assert kicked.status_code == 202, kicked.text[:300]

    # The URLs name the configured public base; this server listens elsewhere.
    def here(url: str) -> str:
        return server.base + urlsplit(url).path

    status = here(kicked.headers["content-location"])
    deadline = time.monotonic() + 60
    while (polled := httpx.get(status, headers=auth, timeout=30)).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert polled.status_code == 200, polled.text[:300]
    outputs = polled.json()["output"]
    files = [httpx.get(here(o["url"]), headers=auth, timeout=30) for o in outputs]
    # The export carries the PHI to its caller (or this would prove nothing at rest).
    assert any(c["family"] in f.text for f in files)


# -- the console ----------------------------------------------------------------------------------
def browser(server: LiveServer, user_id: str) -> tuple[httpx.Client, str]:
    """A signed-in console session (password, then TOTP enrolment) and the TOTP secret."""
    client = httpx.Client(base_url=server.base, follow_redirects=False, timeout=30)
    secret = enrol(client, user_id)  # type: ignore[arg-type]
    assert client.get("/account").status_code == 200
    return client, secret


def api_break_the_glass(
    server: LiveServer, token: str, secret: str, c: dict[str, str], pid: str, seen: Seen
) -> None:
    """``POST /access/break-glass``: password and TOTP in the body with the reason."""
    auth = {"Authorization": f"Bearer {token}"}
    body = {
        "password": PASSWORD,
        "totp": pyotp.TOTP(secret).at(time.time() + 30),  # enrolment used this step
        "reason": f"Seizure in the lobby, {c['btg_api']} brought her in",
    }
    typo = {**body, "patient": f"{c['family_b']} {c['given']}"}  # a name, not an id
    r = httpx.post(f"{server.base}/access/break-glass", json=typo, headers=auth, timeout=30)
    assert r.status_code == 400
    seen.error_bodies.append(("break-glass for a name", r.text))
    r = httpx.post(f"{server.base}/access/break-glass", json={**body, "patient": pid}, headers=auth)
    assert r.status_code == 201, r.text[:500]


def break_the_glass(
    server: LiveServer,
    nurse: httpx.Client,
    officer: httpx.Client,
    token: str,
    c: dict[str, str],
    pid: str,
) -> None:
    page = nurse.get("/emergency", params={"patient": pid})
    reason = f"Found unconscious at the café; {c['btg_reason']} says it's urgent"
    r = nurse.post(
        "/emergency", data={"csrf": csrf_of(page.text), "patient": pid, "reason": reason}
    )
    assert r.status_code == 200 and 'id="grant"' in r.text, r.text[:500]
    btg = {"Authorization": f"Bearer {token}", "X-Purpose-Of-Use": "BTG"}
    read = httpx.get(f"{server.fhir}/Patient/{pid}", headers=btg, timeout=30)
    assert read.status_code == 200 and c["family_b"] in read.text
    listing = officer.get("/privacy/break-glass")
    link = re.search(r'href="(/privacy/break-glass/[^"]+)"', listing.text)
    assert link, listing.text[:500]
    review = officer.get(link.group(1))
    assert c["btg_reason"] in html.unescape(review.text)
    note = f"Checked with the ward: {c['btg_note']}'s story holds"
    r = officer.post(link.group(1) + "/close", data={"csrf": csrf_of(review.text), "note": note})
    assert r.status_code == 303, r.text[:500]


def access_report(officer: httpx.Client, pid: str) -> None:
    today = dt.date.today()
    span = {"patient": pid, "start": (today - dt.timedelta(days=2)).isoformat()}
    span["end"] = (today + dt.timedelta(days=1)).isoformat()
    page = officer.get("/privacy/access-report", params=span)
    assert page.status_code == 200 and "nurse01" in page.text.lower() + page.text
    pdf = officer.get("/privacy/access-report.pdf", params=span)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")


def oauth_launch(
    server: LiveServer, nurse: httpx.Client, c: dict[str, str], seen: Seen, ids: dict[str, str]
) -> None:
    """Authorization code + PKCE with a launch patient chosen on the consent page."""
    verifier, challenge = pkce_pair()
    query = {
        "response_type": "code",
        "client_id": ids["client"],
        "redirect_uri": REDIRECT,
        "scope": "openid fhirUser launch/patient patient/*.rs",
        "state": secrets.token_hex(8),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "aud": f"{PUBLIC_BASE}/fhir",
    }
    page = nurse.get("/oauth/authorize", params=query)
    assert page.status_code == 200, page.text[:500]
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert action
    target = html.unescape(action.group(1))
    form = {"csrf": csrf_of(page.text), "decision": "approve"}
    typo = nurse.post(target, data={**form, "patient": f"{c['family']} {c['given']}"})
    assert typo.status_code == 400
    seen.error_bodies.append(("consent with a name for a patient id", typo.text))
    answer = nurse.post(target, data={**form, "patient": ids["a"]})
    assert answer.status_code == 303, answer.text[:500]
    code = httpx.URL(answer.headers["location"]).params["code"]
    token = httpx.post(
        f"{server.base}/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": ids["client"],
            "code_verifier": verifier,
        },
        timeout=30,
    )
    assert token.status_code == 200, token.text
    doc = token.json()
    assert doc["patient"] == ids["a"]
    auth = {"Authorization": f"Bearer {doc['access_token']}"}
    read = httpx.get(f"{server.fhir}/Patient/{ids['a']}", headers=auth, timeout=30)
    assert read.status_code == 200 and c["mrn"] in read.text


def administration(admin: httpx.Client, staff: dict[str, str]) -> None:
    """A new account and a policy change; their free text is staff data, not PHI."""
    page = admin.get("/admin/users")
    assert page.status_code == 200
    r = admin.post(
        "/admin/users",
        data={
            "csrf": csrf_of(page.text),
            "user_id": "clerk07",
            "display_name": staff["display_name"],
            "email": "clerk07@hospital.example",
            "roles": "registration",
            "password": "amber-Canal-quartz-81",
            "department": staff["department"],
        },
    )
    assert r.status_code == 303, r.text[:500]
    page = admin.get("/admin/policies", params={"file": "clinical.cedar"})
    original = re.search(r"<textarea[^>]*>(.*?)</textarea>", page.text, re.S)
    assert original
    r = admin.post(
        "/admin/policies",
        data={
            "csrf": csrf_of(page.text),
            "file": "clinical.cedar",
            "text": html.unescape(original.group(1)) + "\n// reviewed\n",
            "comment": staff["policy_comment"],
        },
    )
    assert r.status_code == 303, r.text[:500]


# -- monitoring ----------------------------------------------------------------------------------
STAFF_HEADER = (
    "user_id,family_name,given_name,role,department,address,postal_code,hire_date,"
    "termination_date,patient_id\n"
)
PATIENT_HEADER = "patient_id,mrn,family_name,given_name,birth_date,address,postal_code,vip\n"


def write_exports(folder: Path, c: dict[str, str], ids: dict[str, str]) -> dict[str, Path]:
    """Another EHR's exports about the same patients; two rows are refused on purpose."""
    folder.mkdir(parents=True, exist_ok=True)
    day = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=1)
    at = [(day + dt.timedelta(minutes=m)).isoformat() for m in range(6)]
    street = c["street"]
    files = {
        "staff": STAFF_HEADER
        + f"u-snoop,{c['family_b']},Ann,nurse,ED,{street},12345,2020-01-01,,\n"
        + "u-gone,Leaver,Bo,clerk,ED,1 Elm Road,12345,2019-01-01,2025-01-01,\n",
        "patients": PATIENT_HEADER
        + f"{ids['a']},{c['mrn']},{c['family']},{c['given']},{c['birth']},{street},12345,true\n"
        + f'{ids["b"]},{c["mrn"]}B,{c["family_b"]},{c["given"]},{c["birth"]},"{street}, Flat 2",'
        + "12345,false\n"
        + f"p-bad,MRN0,{c['bad_row']},X,born {c['bad_row']},1 Elm Road,12345,false\n",
        "care": "patient_id,user_id,department,start,end,kind\n"
        + f"{ids['a']},u-other,Cardiology,2026-01-04T08:00:00Z,2026-01-06T08:00:00Z,encounter\n",
        "access": "timestamp,user_id,patient_id,action,resource_type,workstation\n"
        + f"{at[0]},u-snoop,{ids['b']},view,Patient,ws1\n"
        + f"{at[1]},u-snoop,{ids['a']},view,Patient,ws1\n"
        + f"{at[2]},u-gone,{ids['a']},view,Patient,ws2\n"
        + f"{at[3]},u-snoop,{ids['a']},view,{c['bad_row']},ws1,extra\n"
        + f"{at[4]} {c['bad_row']},u-snoop,{ids['a']},view,Patient,ws1\n"
        + f"{at[4]},u-snoop,{ids['a']},{c['bad_row']},Patient,ws1\n",
        # Quotes send a block through the standard reader; the last quote never closes.
        "auth": "timestamp,user_id,source,outcome\n"
        + f'{at[5]},u-snoop,"10.0.0.9",success\n'
        + f'{at[5]},u-snoop,"{c["bad_row"]},failure\n',
        "headerless": f"{ids['a']},{c['mrn']},{c['family']},{c['given']},{c['birth']},x,1,false\n",
    }
    out = {}
    for kind, text in files.items():
        out[kind] = folder / f"{kind}.csv"
        out[kind].write_text(text)
    return out


def monitoring(
    env: dict[str, str], home: Path, layout: Layout, c: dict[str, str], seen: Seen
) -> list[str]:
    """Ingest, scan (notifying), review from the CLI; returns the new alert ids."""
    h = ("--home", str(home))
    files = write_exports(layout.exports, c, seen.facts)
    seen.errors_file = layout.scratch / "refused-rows.csv"
    for kind in ("staff", "patients", "care", "access", "auth"):
        extra = ("--errors", str(seen.errors_file)) if kind == "patients" else ()
        out = ok(seen, env, "monitor", "ingest", "--kind", kind, files[kind], *h, *extra)
        assert "Loaded " in out
    assert "birth_date is not a date" in seen.errors_file.read_text()
    refused = seen.outputs[-2][1] + seen.outputs[-1][1]  # the access and auth loads
    for reason in ("fields", "timestamp is not", "action is not one of", "not well-formed"):
        assert reason in refused, refused
    # A file without its header line: its first row would be taken for one.
    headless = cli("monitor", "ingest", "--kind", "patients", files["headerless"], *h, env=env)
    assert_one_error_line(headless, contains="no column for")
    seen.output("monitor ingest (no header)", headless)
    summary = ok(seen, env, "monitor", "scan", "--source", "all", *h)
    assert "Notified" in summary, summary
    queue = json.loads(ok(seen, env, "monitor", "alerts", "--format", "json", *h))
    alerts = [a["alert_id"] for a in queue]
    assert alerts, "the exports raise no alert"
    ok(seen, env, "monitor", "note", alerts[0], *h, stdin=f"HR says {c['note_cli']}'s aunt\n")
    rule = ok(
        seen,
        env,
        "monitor",
        "suppress",
        "--detector",
        "vip",
        "--user",
        "u-snoop",
        "--days",
        "3",
        *h,
        stdin=f"{c['suppress_cli']} is the patient's carer\n",
    )
    assert "Suppression " in rule
    shown = cli("monitor", "show", alerts[0], *h, env=env)  # shows notes to its reviewer
    assert shown.returncode == 0 and c["note_cli"] in shown.stdout
    ok(seen, env, "monitor", "suppressions", "--format", "json", *h)
    cases = json.loads(ok(seen, env, "monitor", "cases", "--format", "json", *h))
    assert cases, "the exports open no case"
    ok(seen, env, "monitor", "note", cases[0]["case_id"], *h, stdin=f"{c['note_case']}\n")
    ok(seen, env, "monitor", "close", alerts[0], "--disposition", "false-positive", *h)
    return alerts


def console_monitoring(officer: httpx.Client, alert_id: str, c: dict[str, str]) -> None:
    queue = officer.get("/monitor")
    assert queue.status_code == 200 and alert_id in queue.text
    item = officer.get(f"/monitor/alerts/{alert_id}")
    assert item.status_code == 200
    csrf = csrf_of(item.text)
    r = officer.post(
        f"/monitor/alerts/{alert_id}/note",
        data={"csrf": csrf, "text": f"Called {c['note_console']}'s manager"},
    )
    assert r.status_code == 303, r.text[:500]
    r = officer.post(
        f"/monitor/alerts/{alert_id}/suppress",
        data={"csrf": csrf, "days": "7", "reason": f"{c['suppress_console']} is family"},
    )
    assert r.status_code == 303, r.text[:500]
    assert c["note_console"] in html.unescape(officer.get(f"/monitor/alerts/{alert_id}").text)


@contextmanager
def watcher(env: dict[str, str], home: Path, seen: Seen) -> Iterator[subprocess.Popen[str]]:
    """``phiguard monitor watch`` following the ledger while the block runs."""
    proc = subprocess.Popen(
        [*WATCH, "--home", str(home), "--for", "120", "--interval", "0.1"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        started = proc.stderr.readline()
        assert started.startswith("Watching the ledger"), started
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        seen.outputs.append(("monitor watch", started + out + err))
        seen.watcher_alerts += sum(line.startswith("alert ") for line in out.splitlines())


# -- the flow -------------------------------------------------------------------------------------
def run_flow(
    layout: Layout, c: dict[str, str], staff: dict[str, str], *, leaky: bool
) -> tuple[Seen, dict[str, list[str]]]:
    """Everything, then every scan; returns what was seen and the hits by channel."""
    seen = Seen()
    ids: dict[str, str] = {}
    make_home(layout.home, lambda system: fill(system, ids))
    seen.facts = ids
    with smtp_peer() as (inbox, smtp_port), webhook_peer() as (hooks, hook_url):
        seen.inbox, seen.hooks = inbox, hooks
        configure(layout.home, smtp_port, hook_url)
        env = layout.env(leaky=leaky)
        h = ("--home", str(layout.home))
        with live_server(layout.home, ids["operator_token"], env) as server:
            write_records(server, c, ids)
            token = ok(seen, env, "token", "issue", "--user", "nurse01", *h).strip()
            search_records(server, token, c, seen)
            bulk_export(server, ids["operator_token"], c)
            (nurse, secret), (officer, _), (admin, _) = (
                browser(server, u) for u in ("nurse01", "privacy01", "admin01")
            )
            with watcher(env, layout.home, seen) as watching:
                break_the_glass(server, nurse, officer, token, c, ids["b"])
                assert watching.stdout is not None
                first = watching.stdout.readline()
                seen.watcher_alerts += first.startswith("alert ")
                seen.outputs.append(("monitor watch", first))
            api_break_the_glass(server, token, secret, c, ids["a"], seen)
            access_report(officer, ids["b"])
            oauth_launch(server, nurse, c, seen, ids)
            administration(admin, staff)
            alerts = monitoring(env, layout.home, layout, c, seen)
            console_monitoring(officer, alerts[-1], c)
            reports = layout.home / "reports"
            reports.mkdir()
            today = dt.date.today()
            span = ("--from", str(today - dt.timedelta(days=1)), "--to", str(today))
            ok(seen, env, "audit", "report", "--patient", ids["b"], *span, *h)  # HTML out
            for fmt in ("pdf", "json"):
                out = reports / f"access-report.{fmt}"
                args = ("--patient", ids["b"], *span, "--format", fmt, "--out", str(out))
                ok(seen, env, "audit", "report", *args, *h)
            siem = layout.home / "exports" / "siem.jsonl"
            siem.parent.mkdir()
            ok(seen, env, "audit", "export", "--out", str(siem), *h)
            for client in (nurse, officer, admin):
                client.close()
            # The newest pages are in the WAL while the server runs.
            seen.wal_scans = scan_tree(layout.home, c)
        small = ("--patients", "500", "--days", "30")
        ok(seen, env, "monitor", "evaluate", *small, "--no-targets", "--format", "json")
        generated = ok(
            seen, env, "monitor", "generate", *small, "--out", str(layout.scratch / "generated")
        )
        assert "(synthetic data)" in generated
    return seen, hits(layout, c, staff, seen)


def hits(
    layout: Layout, c: dict[str, str], staff: dict[str, str], seen: Seen
) -> dict[str, list[str]]:
    """Canaries found, by channel (every list empty: nothing leaked)."""
    everyone = {**c, **staff}
    found: dict[str, list[str]] = defaultdict(list)
    found["home"] = sorted(set(scan_tree(layout.home, c)) | set(seen.wal_scans))
    # Logs must not hold staff free text either (it may be stored, never logged).
    found["logs"] = [f"logs/{hit}" for hit in scan_tree(layout.home / "logs", everyone)]
    found["logs"] += [
        f"serve.out: {hit}" for hit in find((layout.home / "serve.out").read_bytes(), everyone)
    ]
    found["scratch"] = scan_tree(layout.scratch, c)
    found["outputs"] = [
        f"{what}: {hit}" for what, text in seen.outputs for hit in find(text.encode(), everyone)
    ]
    found["error bodies"] = [
        f"{what}: {hit}"
        for what, text in seen.error_bodies
        for hit in find(text.encode(), everyone)
    ]
    assert seen.inbox is not None and seen.hooks is not None
    found["smtp"] = [hit for m in seen.inbox.messages for hit in find(mail_text(m), everyone)]
    found["webhook"] = find(seen.hooks.everything(), everyone)
    return dict(found)


# -- the tests --------------------------------------------------------------------------------
@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Layout:
    here = Layout(tmp_path)
    (here.scratch / "cwd").mkdir(parents=True)
    monkeypatch.chdir(here.scratch / "cwd")  # the processes' working directory
    return here


def test_no_plaintext_phi_through_any_path(layout: Layout) -> None:
    c, staff = canaries()
    seen, found = run_flow(layout, c, staff, leaky=False)
    # Every channel was exercised: mail and webhooks went out, the watcher alerted,
    # refused rows were reported, and the inputs do hold the canaries.
    assert seen.inbox is not None and seen.inbox.messages
    assert seen.hooks is not None and seen.hooks.bodies
    assert seen.watcher_alerts >= 1
    assert seen.errors_file is not None and seen.errors_file.read_text().count("\n") >= 2
    inputs = {hit.split(": ")[1].split(" (")[0] for hit in scan_tree(layout.exports, c)}
    assert {"family", "mrn", "street", "birth", "bad_row"} <= inputs
    written = {str(p.relative_to(layout.home)) for p in layout.home.rglob("*") if p.is_file()}
    assert {"phiguard.db", "audit.db", "serve.out", "logs/access.log"} <= written
    assert {"reports/access-report.pdf", "exports/siem.jsonl"} <= written
    # Nothing but what was asked for was written outside the home.
    stray = [
        str(p.relative_to(layout.scratch))
        for p in layout.scratch.rglob("*")
        if p.is_file() and p.parts[len(layout.scratch.parts)] in ("tmp", "userhome", "cwd")
    ]
    assert stray == []
    assert {k: v for k, v in found.items() if v} == {}, "plaintext PHI found"


def test_the_leaky_build_is_caught_on_every_channel(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Sealer, "seal", lambda self, plaintext, associated: plaintext)
    monkeypatch.setattr(Sealer, "open", lambda self, token, associated, where="": token)
    c, staff = canaries()
    _seen, found = run_flow(layout, c, staff, leaky=True)
    home = " ".join(found["home"])
    # Sealing off: the exports, notes, reasons and records are in the databases.
    for name in ("family", "mrn", "birth", "note_cli", "note_case", "suppress_console"):
        assert f"phiguard.db: {name} (" in home, (name, found["home"])
    for name in ("btg_reason", "btg_api", "btg_note"):  # sealed rows and the ledger's detail
        assert f"phiguard.db: {name} (" in home and f"audit.db: {name} (" in home, name
    # Full URLs: the query strings (URL-encoded) in the access log and the server output.
    logs = " ".join(found["logs"])
    for where in ("logs/access.log", "serve.out"):
        assert f"{where}: family (url)" in logs and f"{where}: mrn (" in logs, found["logs"]
    # Notifications naming patients: in the mail (encoded body) and the webhook (JSON).
    assert any(hit.startswith("family_b") for hit in found["smtp"]), found["smtp"]
    assert any(hit.startswith("family_b") for hit in found["webhook"]), found["webhook"]
    # Refused rows quoted: on standard error and in the --errors file.
    assert any("bad_row" in hit for hit in found["outputs"]), found["outputs"]
    assert any("refused-rows.csv: bad_row" in hit for hit in found["scratch"]), found["scratch"]


@pytest.mark.parametrize("value", ["Qzvfamilé0a1b2c3d", "0a1b2c3d O'Canary Lane", "MRN0A1B2C3D"])
def test_the_scanner_finds_the_value_in_every_form_it_could_take(value: str) -> None:
    """Each form is found wherever it sits; documents that wrap the value are caught."""
    canary = {"v": value}
    for _form, raw in encodings(value):
        for pad in range(3):
            assert find(secrets.token_bytes(50 + pad) + raw + b"\n", canary), _form
    inside = f"Seen by Ann: {value}, at the ward"
    documents = [
        json.dumps({"text": inside}).encode(),
        html.escape(inside).encode(),
        str(httpx.URL("http://h/fhir/Patient", params={"name": inside})).encode(),
        inside.encode("utf-16"),
    ]
    for prefix in range(3):
        doc = ("x" * prefix + json.dumps({"detail": inside})).encode()
        documents.append(b'{"detail":"' + base64.b64encode(doc) + b'"}')
    for doc in documents:
        assert find(doc, canary), doc
    mail = EmailMessage()
    mail["Subject"] = f"About {value}"
    mail.set_content(f"{inside}\n" * 3)  # non-ASCII bodies go out encoded
    assert find(mail_text(mail.as_bytes()), canary)
    other = {"v": value.replace("0a1b2c3d", "9f8e7d6c").replace("0A1B2C3D", "9F8E7D6C")}
    assert all(not find(doc, other) for doc in documents)


MRN_MAPPING = """
columns: {timestamp: ACCESS_TIME, user_id: EMP_ID, patient_id: PAT_MRN, action: ACCESS_TYPE,
          resource_type: SCREEN, workstation: WORKSTATION}
values: {action: {"Chart Review": view}}
"""


def test_an_export_keyed_by_mrn_keeps_the_mrn_out_of_the_home(layout: Layout) -> None:
    """The documented mapping (``patient_id: PAT_MRN``): the MRN is the patient's key.

    It is stored as a pseudonym only (alerts, cases, the drill-down index, a
    suppression naming the patient, the ledger's patient index when the alert is
    opened); the officer still sees the MRN when opening the alert and finds the
    alert by it."""
    c, _staff = canaries()
    make_home(layout.home)
    env = layout.env(leaky=False)
    h = ("--home", str(layout.home))
    seen = Seen()
    at = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).replace(microsecond=0).isoformat()
    staff = layout.exports / "staff.csv"
    staff.parent.mkdir(parents=True)
    staff.write_text(
        STAFF_HEADER + "u-gone,Leaver,Bo,clerk,ED,1 Elm Road,1,2019-01-01,2025-01-01,\n"
    )
    access = layout.exports / "epic-access.csv"
    access.write_text(
        "ACCESS_TIME,EMP_ID,PAT_MRN,ACCESS_TYPE,SCREEN,WORKSTATION\n"
        f"{at},u-gone,{c['mrn']},Chart Review,Chart,ws9\n"
    )
    mapping = layout.exports / "epic.yaml"
    mapping.write_text(MRN_MAPPING)
    ok(seen, env, "monitor", "ingest", "--kind", "staff", staff, *h)
    ok(seen, env, "monitor", "ingest", "--kind", "access", access, "--mapping", mapping, *h)
    ok(seen, env, "monitor", "scan", "--no-notify", *h)
    queue = json.loads(ok(seen, env, "monitor", "alerts", "--format", "json", *h))
    assert [a["detector"] for a in queue] == ["terminated-user"]
    [pseudonym] = queue[0]["patient_ids"]
    assert pseudonym != c["mrn"]
    cases = json.loads(ok(seen, env, "monitor", "cases", "--format", "json", *h))
    assert [case["patient_ids"] for case in cases] == [[pseudonym]]
    # The officer finds the alert by the MRN and, opening it, sees the MRN.
    by_mrn = cli("monitor", "alerts", "--patient", c["mrn"], "--format", "json", *h, env=env)
    assert [a["alert_id"] for a in json.loads(by_mrn.stdout)] == [queue[0]["alert_id"]]
    shown = cli("monitor", "show", queue[0]["alert_id"], *h, env=env)
    assert shown.returncode == 0 and f"source id of {pseudonym}: {c['mrn']}" in shown.stdout
    rule = cli(
        "monitor",
        "suppress",
        "--detector",
        "terminated-user",
        "--patient",
        c["mrn"],
        "--days",
        "3",
        *h,
        env=env,
        stdin="known to HR\n",
    )
    assert rule.returncode == 0 and "1 queued alert(s) suppressed" in rule.stdout, rule.stderr
    rules = json.loads(ok(seen, env, "monitor", "suppressions", "--format", "json", *h))
    assert [r["patient_id"] for r in rules] == [pseudonym]
    # Listings never print the MRN; only opening the alert does.
    assert [hit for _, out in seen.outputs for hit in find(out.encode(), c)] == []
    found = scan_tree(layout.home, {"mrn": c["mrn"]})
    assert found == [], "the MRN is at rest in the home"
