"""chatlane worker: arq drain jobs that answer chat turns under a per-session lease."""

from worker.settings import WorkerSettings

__all__ = ["WorkerSettings"]
