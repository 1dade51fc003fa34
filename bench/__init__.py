"""phiguard benchmarks: encryption cost measured against a plaintext baseline.

Every benchmark builds the same kind of store twice in one run, once sealing with
the keyring (AES-256-GCM per patient key) and once with
``PlaintextCipherForBenchmarks``, and reports medians and encrypted/plaintext ratios
together with the machine it ran on.  Run ``python -m bench --help``.
"""
