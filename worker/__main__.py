"""``python -m worker``: run one chatlane worker process (settings from ``CHATLANE_*``)."""

from chatlane.settings import get_settings
from worker.resilient import run_worker

run_worker(get_settings())
