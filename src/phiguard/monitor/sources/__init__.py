"""Where monitoring data comes from: CSV exports of another EHR (``csv``, read through
a column ``mapping``) and phiguard's own audit ledger and vault (``ledger``).  Every
source yields the frames of ``phiguard.monitor.frames``."""
