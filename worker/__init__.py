"""chatlane worker: arq drain jobs that answer chat turns under a per-session lease.

``worker.WorkerSettings`` (for ``arq worker.WorkerSettings``) is built on first access from the
``CHATLANE_*`` settings, so importing this package reads nothing from the environment.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "WorkerSettings":
        from chatlane.settings import get_settings
        from worker.arq_settings import worker_settings

        return worker_settings(get_settings())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
