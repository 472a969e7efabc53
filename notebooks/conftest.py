"""nbval runs every chapter in the ``ci`` profile; each kernel keeps its throw-away runs under one temporary
root that it removes at exit. A kernel that is killed at shutdown cannot, so the session removes the roots
of processes that are gone once the notebooks have run (``jebm_lite.io.clean_temp_roots``)."""

from __future__ import annotations


def pytest_sessionfinish(session, exitstatus):
    import time

    from jebm_lite.io import clean_temp_roots

    time.sleep(1.0)  # let the last kernels exit
    clean_temp_roots()
