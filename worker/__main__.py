"""``python -m worker``: run one chatlane worker process (see ``worker.runner``)."""

from worker.runner import main

main()
