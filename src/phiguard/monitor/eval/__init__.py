"""Measured evaluation of detection against synthetic traffic with injected misuse.

``generate`` builds the traffic and its ground truth; ``metrics`` scores a scan
against it; ``tuning`` picks thresholds on tuning seeds and runs the
leave-one-kind-out check; ``report`` renders tables.  Seeds are fixed and kept
apart: see ``TUNING_SEEDS`` and ``HELD_OUT_SEED`` in ``metrics``.
"""
