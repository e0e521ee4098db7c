"""Driving whole runs: prepare a run directory and drive it to its end here or in a
detached process (driver), and a notebook pipeline as an HTTP endpoint (serve).
May import every engine layer below it, the backends included.
"""
