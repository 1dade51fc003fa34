"""A deterministic synthetic hospital for the demo, benchmarks and monitoring evaluation.

``generate_hospital(seed)`` builds the people, their households and their care;
``to_fhir`` streams it as FHIR R4 resources; ``write_roster_csv`` flattens who is who
for monitoring work.  Nothing here touches real data: names and places are drawn from
built-in pools, and SSNs, postal codes and NPIs come from ranges never issued.
"""

from phiguard.synth.codes import CONDITIONS, OBSERVATIONS, Sensitivity
from phiguard.synth.fhir import to_fhir
from phiguard.synth.hospital import DEPARTMENTS, default_staff, generate_hospital
from phiguard.synth.model import (
    ROLES,
    Appointment,
    CareTeam,
    Condition,
    Department,
    Encounter,
    Hospital,
    Household,
    Observation,
    Patient,
    Role,
    StaffMember,
)
from phiguard.synth.roster import write_roster_csv

__all__ = [
    "CONDITIONS",
    "DEPARTMENTS",
    "OBSERVATIONS",
    "ROLES",
    "Appointment",
    "CareTeam",
    "Condition",
    "Department",
    "Encounter",
    "Hospital",
    "Household",
    "Observation",
    "Patient",
    "Role",
    "Sensitivity",
    "StaffMember",
    "default_staff",
    "generate_hospital",
    "to_fhir",
    "write_roster_csv",
]
