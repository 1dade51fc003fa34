"""The patient's access report: who looked at my record (HIPAA 164.528 and beyond).

For one patient and a period: every recorded access with date and time, the person
(name, and role and department where the directory knows them), the action, the
kinds of data, the purpose of use and break-the-glass marks; and, separately, the
accounting of disclosures recorded as such.  Rendered as HTML, PDF or a FHIR Bundle
of AuditEvents; every report produced is itself recorded in the ledger.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from phiguard.clock import isoformat
from phiguard.store.engine import from_us, now_us

from .balp import to_audit_event
from .ledger import Ledger

ACTION_WORDS = {
    "read": "viewed",
    "vread": "viewed an earlier version of",
    "search": "found in a search",
    "everything": "opened the whole record of",
    "history": "viewed the history of",
    "create": "created",
    "update": "changed",
    "delete": "deleted",
    "import": "imported",
    "shred": "destroyed",
    "disclosure": "disclosed",
    "access-index-rebuild": "derived the care-relationship facts from",
}


# Events about the audit trail itself (reports, audit searches): in the ledger, but
# not accesses to the patient's record.
META_ACTIONS = frozenset({"access-report", "audit-search"})


@dataclass(frozen=True)
class Person:
    name: str
    role: str = ""
    department: str = ""


Directory = Callable[[str], Person]


def plain_directory(principal: str) -> Person:
    kind, _, ident = principal.partition("/")
    if kind == "system":
        return Person("phiguard (automated process)")
    if kind == "operator":
        return Person(f"operator token '{ident}'", "system operator")
    return Person(ident or principal)


@dataclass
class AccessRow:
    when: str
    person: Person
    principal: str
    action: str
    data: str
    purpose: str
    break_glass: bool
    outcome: str
    seq: int


@dataclass
class AccessReport:
    patient_id: str
    since: dt.date
    until: dt.date
    generated: str
    rows: list[AccessRow] = field(default_factory=list)
    disclosures: list[dict[str, Any]] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)


def build(
    ledger: Ledger,
    patient_id: str,
    since: dt.date,
    until: dt.date,
    *,
    directory: Directory = plain_directory,
) -> AccessReport:
    start = dt.datetime(since.year, since.month, since.day, tzinfo=dt.UTC)
    end = dt.datetime(until.year, until.month, until.day, tzinfo=dt.UTC) + dt.timedelta(days=1)
    _total, entries = ledger.search(
        patient=patient_id, since_us=now_us(start), until_us=now_us(end), count=10**9
    )
    report = AccessReport(patient_id, since, until, isoformat(ledger.clock.now()))
    for e in entries:
        if e.get("action") in META_ACTIONS:
            continue
        if e.get("action") == "disclosure":
            detail = e.get("detail") or {}
            report.disclosures.append(
                {
                    "when": isoformat(from_us(int(e["t"]))),
                    "recipient": detail.get("recipient", ""),
                    "description": detail.get("description", ""),
                    "purpose": e.get("purpose", ""),
                    "by": directory(str(e.get("who", ""))).name,
                    "seq": e["seq"],
                }
            )
            continue
        report.entries.append(e)
        report.rows.append(
            AccessRow(
                when=isoformat(from_us(int(e["t"]))),
                person=directory(str(e.get("who", ""))),
                principal=str(e.get("who", "")),
                action=ACTION_WORDS.get(str(e.get("action")), str(e.get("action"))),
                data=_data_kinds(e),
                purpose=str(e.get("purpose", "")),
                break_glass=bool(e.get("btg")) or e.get("purpose") in ("BTG", "ETREAT"),
                outcome=str(e.get("outcome", "")),
                seq=int(e["seq"]),
            )
        )
    return report


def _data_kinds(e: dict[str, Any]) -> str:
    detail = e.get("detail") or {}
    types = detail.get("types")
    if isinstance(types, dict):
        return ", ".join(sorted(types))
    return str(e.get("type") or "record")


_env = Environment(
    loader=PackageLoader("phiguard.web", "templates"),
    autoescape=select_autoescape(["html"]),
)


def render_html(report: AccessReport) -> str:
    return _env.get_template("access_report.html").render(report=report)


def to_bundle(report: AccessReport) -> dict[str, Any]:
    entries = [{"resource": to_audit_event(e)} for e in report.entries]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": report.generated,
        "meta": {"tag": [{"system": "urn:phiguard:report", "code": "patient-access-report"}]},
        "entry": entries,
    }


def render_pdf(report: AccessReport) -> bytes:
    from fpdf import FPDF

    pdf = FPDF(orientation="L", format="A4")
    pdf.set_title("Record access report")
    pdf.set_creator("phiguard")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 15)
    pdf.cell(0, 10, "Who looked at this record", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    pdf.cell(
        0,
        6,
        f"Patient {report.patient_id}; {report.since} to {report.until}; "
        f"generated {report.generated}",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.ln(3)
    widths = (42, 58, 30, 30, 45, 22, 18, 22)
    header = (
        "When (UTC)",
        "Person",
        "Role",
        "Department",
        "Action / data",
        "Purpose",
        "Emerg.",
        "Outcome",
    )
    pdf.set_font("Helvetica", "B", 9)
    for w, h in zip(widths, header, strict=True):
        pdf.cell(w, 7, h, border=1)
    pdf.ln()
    pdf.set_font("Helvetica", size=8)
    for r in report.rows:
        cells = (
            r.when[:19].replace("T", " "),
            r.person.name,
            r.person.role,
            r.person.department,
            f"{r.action} {r.data}",
            r.purpose,
            "yes" if r.break_glass else "",
            r.outcome,
        )
        for w, text in zip(widths, cells, strict=True):
            pdf.cell(w, 6, _latin1(text)[: int(w / 1.6)], border=1)
        pdf.ln()
    if not report.rows:
        pdf.cell(
            0,
            7,
            "No access to this record was recorded in this period.",
            new_x="LMARGIN",
            new_y="NEXT",
        )
    pdf.ln(4)
    pdf.set_font("Helvetica", "B", 12)
    pdf.cell(0, 8, "Accounting of disclosures (45 CFR 164.528)", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=9)
    if not report.disclosures:
        pdf.cell(
            0, 6, "No disclosures were recorded in this period.", new_x="LMARGIN", new_y="NEXT"
        )
    for d in report.disclosures:
        pdf.multi_cell(
            0,
            6,
            _latin1(
                f"{d['when'][:19].replace('T', ' ')}: to {d['recipient']} "
                f"for {d['purpose']}: {d['description']} (by {d['by']})"
            ),
            new_x="LMARGIN",
            new_y="NEXT",
        )
    return bytes(pdf.output())


def _latin1(text: str) -> str:
    """The core PDF fonts speak Latin-1 only."""
    return text.encode("latin-1", "replace").decode("latin-1")
