"""Small built-in clinical terminology tables (SNOMED CT conditions, LOINC observations).

Real codes keep the synthetic data usable by FHIR tooling and let access-control and
monitoring code key sensitivity off the code itself, as a real deployment would.
Prevalences are rough per-patient probabilities for the study year, tuned for
plausible variety rather than epidemiological accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Sensitivity = Literal["mental-health", "hiv", "substance-use", "reproductive"]
ObservationCategory = Literal["vital-signs", "laboratory"]

SNOMED: Final = "http://snomed.info/sct"
LOINC: Final = "http://loinc.org"
UCUM: Final = "http://unitsofmeasure.org"


@dataclass(frozen=True, slots=True)
class ConditionCode:
    code: str
    display: str
    department: str
    """Department code that treats it; children are redirected to Pediatrics."""
    prevalence: float
    min_age: int = 0
    max_age: int = 200
    female_only: bool = False
    chronic: bool = False
    onset_days_before: tuple[int, int] = (0, 3)
    """Range of days between onset and the encounter at which it is recorded."""
    sensitivity: Sensitivity | None = None
    follow_up: float = 0.0
    """Probability of a second encounter in the same department."""


@dataclass(frozen=True, slots=True)
class ObservationCode:
    code: str
    display: str
    category: ObservationCategory
    unit: str
    """UCUM code, also used as the human-readable unit."""
    mean: float
    sd: float
    low: float
    high: float
    decimals: int = 0
    sensitivity: Sensitivity | None = None


_YEARS: Final = (365, 15 * 365)

PHARYNGITIS: Final = ConditionCode("195662009", "Acute viral pharyngitis", "ED", 0.10)
BRONCHITIS: Final = ConditionCode("10509002", "Acute bronchitis", "IM", 0.05)

CONDITIONS: Final[tuple[ConditionCode, ...]] = (
    ConditionCode(
        "38341003",
        "Hypertensive disorder, systemic arterial",
        "CARD",
        0.22,
        min_age=30,
        chronic=True,
        onset_days_before=_YEARS,
        follow_up=0.4,
    ),
    ConditionCode(
        "44054006",
        "Diabetes mellitus type 2",
        "IM",
        0.09,
        min_age=30,
        chronic=True,
        onset_days_before=_YEARS,
        follow_up=0.5,
    ),
    ConditionCode(
        "55822004", "Hyperlipidemia", "IM", 0.12, min_age=35, chronic=True, onset_days_before=_YEARS
    ),
    ConditionCode(
        "195967001", "Asthma", "IM", 0.07, chronic=True, onset_days_before=_YEARS, follow_up=0.2
    ),
    ConditionCode(
        "13645005",
        "Chronic obstructive lung disease",
        "IM",
        0.04,
        min_age=40,
        chronic=True,
        onset_days_before=_YEARS,
        follow_up=0.3,
    ),
    ConditionCode(
        "49436004",
        "Atrial fibrillation",
        "CARD",
        0.03,
        min_age=50,
        chronic=True,
        onset_days_before=_YEARS,
        follow_up=0.4,
    ),
    ConditionCode(
        "84114007",
        "Heart failure",
        "CARD",
        0.02,
        min_age=50,
        chronic=True,
        onset_days_before=_YEARS,
        follow_up=0.6,
    ),
    ConditionCode("22298006", "Myocardial infarction", "CARD", 0.015, min_age=40, follow_up=0.8),
    ConditionCode(
        "363346000",
        "Malignant neoplastic disease",
        "ONC",
        0.03,
        min_age=30,
        chronic=True,
        onset_days_before=(30, 3 * 365),
        follow_up=0.9,
    ),
    ConditionCode(
        "396275006",
        "Osteoarthritis",
        "ORTH",
        0.08,
        min_age=50,
        chronic=True,
        onset_days_before=_YEARS,
        follow_up=0.2,
    ),
    ConditionCode("125605004", "Fracture of bone", "ORTH", 0.04, follow_up=0.5),
    PHARYNGITIS,
    BRONCHITIS,
    ConditionCode("233604007", "Pneumonia", "ED", 0.025, follow_up=0.3),
    ConditionCode(
        "35489007",
        "Depressive disorder",
        "PSY",
        0.07,
        min_age=12,
        chronic=True,
        onset_days_before=(30, 5 * 365),
        sensitivity="mental-health",
        follow_up=0.6,
    ),
    ConditionCode(
        "197480006",
        "Anxiety disorder",
        "PSY",
        0.05,
        min_age=10,
        chronic=True,
        onset_days_before=(30, 5 * 365),
        sensitivity="mental-health",
        follow_up=0.4,
    ),
    ConditionCode(
        "66590003",
        "Alcohol dependence",
        "PSY",
        0.025,
        min_age=18,
        chronic=True,
        onset_days_before=(180, 10 * 365),
        sensitivity="substance-use",
        follow_up=0.5,
    ),
    ConditionCode(
        "86406008",
        "Human immunodeficiency virus infection",
        "IM",
        0.005,
        min_age=16,
        chronic=True,
        onset_days_before=(180, 10 * 365),
        sensitivity="hiv",
        follow_up=0.8,
    ),
    ConditionCode(
        "72892002",
        "Normal pregnancy",
        "OBS",
        0.12,
        min_age=18,
        max_age=44,
        female_only=True,
        chronic=True,
        onset_days_before=(42, 200),
        sensitivity="reproductive",
        follow_up=0.9,
    ),
)

SINUSITIS: Final = ConditionCode("444814009", "Viral sinusitis", "IM", 0.0)
OTITIS_MEDIA: Final = ConditionCode("65363002", "Otitis media", "PED", 0.0, max_age=12)
ANKLE_SPRAIN: Final = ConditionCode("44465007", "Sprain of ankle", "ORTH", 0.0)
LOW_BACK_PAIN: Final = ConditionCode("279039007", "Low back pain", "ORTH", 0.0, min_age=16)
UTI: Final = ConditionCode("68566005", "Urinary tract infectious disease", "IM", 0.0)
GASTROENTERITIS: Final = ConditionCode("25374005", "Gastroenteritis", "ED", 0.0)
HEADACHE: Final = ConditionCode("25064002", "Headache", "ED", 0.0)

VISIT_DIAGNOSES: Final[dict[str, tuple[ConditionCode, ...]]] = {
    "ED": (PHARYNGITIS, ANKLE_SPRAIN, GASTROENTERITIS, HEADACHE, UTI, LOW_BACK_PAIN),
    "IM": (BRONCHITIS, SINUSITIS, UTI, LOW_BACK_PAIN, PHARYNGITIS, HEADACHE),
    "PED": (OTITIS_MEDIA, PHARYNGITIS, GASTROENTERITIS, SINUSITIS, ANKLE_SPRAIN),
    "ORTH": (ANKLE_SPRAIN, LOW_BACK_PAIN),
}
"""Acute problems diagnosed at general (not condition-driven) visits, by department."""

CONDITION_BY_CODE: Final = {
    c.code: c for table in (CONDITIONS, *VISIT_DIAGNOSES.values()) for c in table
}


def _obs(
    code: str,
    display: str,
    category: ObservationCategory,
    unit: str,
    mean: float,
    sd: float,
    low: float,
    high: float,
    decimals: int = 0,
    sensitivity: Sensitivity | None = None,
) -> ObservationCode:
    return ObservationCode(
        code, display, category, unit, mean, sd, low, high, decimals, sensitivity
    )


HEART_RATE: Final = _obs("8867-4", "Heart rate", "vital-signs", "/min", 76, 11, 40, 180)
SYSTOLIC_BP: Final = _obs(
    "8480-6", "Systolic blood pressure", "vital-signs", "mm[Hg]", 121, 13, 80, 220
)
DIASTOLIC_BP: Final = _obs(
    "8462-4", "Diastolic blood pressure", "vital-signs", "mm[Hg]", 78, 9, 45, 130
)
BODY_WEIGHT: Final = _obs("29463-7", "Body weight", "vital-signs", "kg", 78, 16, 2.5, 220, 1)
BODY_TEMPERATURE: Final = _obs(
    "8310-5", "Body temperature", "vital-signs", "Cel", 37.0, 0.6, 35.0, 41.5, 1
)
RESPIRATORY_RATE: Final = _obs("9279-1", "Respiratory rate", "vital-signs", "/min", 16, 3, 8, 40)
OXYGEN_SATURATION: Final = _obs(
    "59408-5",
    "Oxygen saturation in Arterial blood by Pulse oximetry",
    "vital-signs",
    "%",
    97,
    1.6,
    80,
    100,
)
GLUCOSE: Final = _obs(
    "2339-0", "Glucose [Mass/volume] in Blood", "laboratory", "mg/dL", 98, 14, 50, 450
)
HBA1C: Final = _obs(
    "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "laboratory", "%", 5.5, 0.4, 4.0, 14.0, 1
)
CHOLESTEROL: Final = _obs(
    "2093-3",
    "Cholesterol [Mass/volume] in Serum or Plasma",
    "laboratory",
    "mg/dL",
    190,
    30,
    100,
    400,
)
HEMOGLOBIN: Final = _obs(
    "718-7", "Hemoglobin [Mass/volume] in Blood", "laboratory", "g/dL", 14.0, 1.4, 6.0, 20.0, 1
)
CREATININE: Final = _obs(
    "2160-0",
    "Creatinine [Mass/volume] in Serum or Plasma",
    "laboratory",
    "mg/dL",
    0.95,
    0.2,
    0.3,
    8.0,
    2,
)
LEUKOCYTES: Final = _obs(
    "6690-2",
    "Leukocytes [#/volume] in Blood by Automated count",
    "laboratory",
    "10*3/uL",
    7.0,
    1.8,
    1.0,
    30.0,
    1,
)
HIV_VIRAL_LOAD: Final = _obs(
    "20447-9",
    "HIV 1 RNA [#/volume] (viral load) in Serum or Plasma by NAA with probe detection",
    "laboratory",
    "{copies}/mL",
    400,
    300,
    20,
    100000,
    sensitivity="hiv",
)

OBSERVATIONS: Final[tuple[ObservationCode, ...]] = (
    HEART_RATE,
    SYSTOLIC_BP,
    DIASTOLIC_BP,
    BODY_WEIGHT,
    BODY_TEMPERATURE,
    RESPIRATORY_RATE,
    OXYGEN_SATURATION,
    GLUCOSE,
    HBA1C,
    CHOLESTEROL,
    HEMOGLOBIN,
    CREATININE,
    LEUKOCYTES,
    HIV_VIRAL_LOAD,
)

ROUTINE_LABS: Final = (GLUCOSE, HEMOGLOBIN, CREATININE, LEUKOCYTES)
