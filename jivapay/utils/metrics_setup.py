"""Switches a process tree to prometheus_client's multiprocess mode before any metric exists.

Separate from `jivapay.utils.metrics` on purpose: metrics without labels get their storage when they
are defined, so the directory must be set before that module is imported.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def enable_multiprocess(directory: Path) -> None:
    """Use `directory` (emptied) for the metric files of this process and the children it forks."""
    if "jivapay.utils.metrics" in sys.modules:
        raise RuntimeError("enable_multiprocess must run before jivapay.utils.metrics is imported")
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    from prometheus_client import values

    values.ValueClass = values.get_value_class()
