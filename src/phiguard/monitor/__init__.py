"""Privacy monitoring: who looked at whom without a reason, and how sure we are.

Every source (phiguard's own ledger, another EHR's CSV exports) is turned into the
same small set of Polars frames (``frames``); explanation, detectors, scoring and
cases work on those frames only, so a hospital that keeps its EHR gets the same
detection as one that keeps its data in phiguard.  See docs/monitoring.md.
"""
