"""Process-wide tuning applied once a service has started."""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("dvc766.process")


def tune_garbage_collector(young_threshold: int) -> None:
    """Freeze what start-up built and collect the young generation less often.

    The hot paths allocate many short-lived objects per event; with Python's default threshold (700)
    the collector ran so often that full collections over every long-lived object took ~30 µs per
    applied event (measured: bench/README.md). Objects alive after start-up (modules, settings, the
    unit tree, the calendar) are moved out of the collector's sight with ``gc.freeze``. 0 leaves the
    defaults.
    """
    if young_threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young_threshold, older, oldest)
    log.debug("garbage collector tuned", extra={"young_threshold": young_threshold})
