"""``mumu_build_info``: which version of mumu each process runs (1 per process).

Every process exports it (stages, gateway, exporter), so a rolling upgrade is visible as
``count by (version) (mumu_build_info)`` and alerts can join on it.
"""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Gauge

from mumu import __version__

BUILD_INFO = "mumu_build_info"


def register_build_info(registry: CollectorRegistry, component: str) -> Gauge:
    """Add ``mumu_build_info{component, version, python}`` = 1 to ``registry``."""
    gauge = Gauge(
        BUILD_INFO, "The mumu version this process runs (always 1)",
        ["component", "version", "python"], registry=registry,
    )
    gauge.labels(component, __version__, platform.python_version()).set(1)
    return gauge
