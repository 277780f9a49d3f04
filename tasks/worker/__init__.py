"""The worker: `Worker` claims tasks, runs their handlers in child processes and records the outcomes.

loop.py       the Worker: its rounds, the algorithm (start reading here)
held.py       the book of tasks it holds, in memory only
db.py         its round trips to the database, each settling the book
children.py   its child processes, the parent's side; child.py the child's side;
              messages.py what they say to each other
signals.py    SIGTERM/SIGINT as a shutdown request
row.py        its row in task_worker, for operators and the dashboard
"""

from tasks.worker.db import UnsupportedDatabase
from tasks.worker.loop import Worker

__all__ = ["UnsupportedDatabase", "Worker"]
