"""``python -m worker``: run one chatlane worker process (settings from ``CHATLANE_*``)."""

from chatlane.startup import StartupError, fail, load_settings
from worker.resilient import run_worker
from worker.startup import PROGRAM

try:
    settings = load_settings()
except StartupError as e:
    fail(PROGRAM, e)
run_worker(settings)
