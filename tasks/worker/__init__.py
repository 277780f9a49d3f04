"""The worker: `Worker` claims tasks, runs their handlers in child processes and records the outcomes.

loop.py is the algorithm; the other modules are named for what they hold (see loop.py's docstring).
"""

from tasks.worker.db import UnsupportedDatabase
from tasks.worker.loop import Worker

__all__ = ["UnsupportedDatabase", "Worker"]
