"""Raw-SQL ceiling: a hand-written durable one-table queue with batch claiming (mysqlclient only).

Multi-row INSERT of N rows; K worker processes each loop: BEGIN; SELECT … ORDER BY id LIMIT 50
FOR UPDATE SKIP LOCKED; UPDATE … SET status='running'; COMMIT; then mark each task done with
one UPDATE per task inside one transaction per batch. `python -m bench.peers.rawsql worker`.
"""

from __future__ import annotations

import json
import os
import sys
import time

import MySQLdb

from bench import db
from bench.context import Context
from bench.procs import StepFailed, python, workers_label
from bench.stats import rate

DATABASE = "bench_raw"
TABLE = "raw_queue"
BATCH = 50
INSERT_CHUNK = 1000
SCHEMA = f"""
CREATE TABLE {TABLE} (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    status VARCHAR(16) NOT NULL DEFAULT 'pending',
    payload JSON NOT NULL,
    result JSON NULL,
    claimed_by VARCHAR(64) NOT NULL DEFAULT '',
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    started_at DATETIME(6) NULL,
    finished_at DATETIME(6) NULL,
    KEY raw_claim_idx (status, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
"""


def _connect() -> MySQLdb.Connection:
    conn = MySQLdb.connect(
        host=os.environ.get("MYSQL_HOST", "127.0.0.1"),
        port=int(os.environ.get("MYSQL_PORT", "3306")),
        user=os.environ.get("MYSQL_USERNAME", "root"),
        passwd=os.environ.get("MYSQL_PASSWORD", ""),
        db=DATABASE,
        charset="utf8mb4",
        autocommit=False,
    )
    conn.cursor().execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
    return conn


def worker() -> None:
    """Claim batches until none is left, running the no-op for each task."""
    conn = _connect()
    cursor = conn.cursor()
    me = f"raw-{os.getpid()}"
    while True:
        cursor.execute(
            f"SELECT id, payload FROM {TABLE} WHERE status = 'pending' ORDER BY id LIMIT {BATCH} FOR UPDATE SKIP LOCKED"
        )
        rows = cursor.fetchall()
        if not rows:
            conn.commit()
            break
        ids = [row[0] for row in rows]
        marks = ", ".join(["%s"] * len(ids))
        cursor.execute(
            f"UPDATE {TABLE} SET status = 'running', claimed_by = %s, started_at = NOW(6) WHERE id IN ({marks})",
            [me, *ids],
        )
        conn.commit()
        results = [(json.dumps(json.loads(payload)), task_id) for task_id, payload in rows]
        for result, task_id in results:
            cursor.execute(
                f"UPDATE {TABLE} SET status = 'succeeded', result = %s, finished_at = NOW(6) WHERE id = %s",
                [result, task_id],
            )
        conn.commit()
    conn.close()


def _insert(ctx: Context, count: int) -> float:
    """Insert `count` pending rows with multi-row INSERTs; return the seconds it took."""
    with db.connect(ctx.cfg, DATABASE, autocommit=False) as conn:
        cursor = conn.cursor()
        started = time.perf_counter()
        for start in range(0, count, INSERT_CHUNK):
            rows = [(json.dumps({"n": i}),) for i in range(start, min(start + INSERT_CHUNK, count))]
            cursor.executemany(f"INSERT INTO {TABLE} (payload) VALUES (%s)", rows)
        conn.commit()
        return time.perf_counter() - started


def run(ctx: Context) -> dict:
    """Measure the raw loop's insert and drain rates; return the raw runs."""
    cfg = ctx.cfg
    ctx.own_database(DATABASE)
    db.execute_all(cfg, DATABASE, [SCHEMA])
    env = ctx.mysql_env()
    runs = []
    for rep, workers in ctx.rounds("raw SQL", (1, 2)):
        db.truncate(cfg, DATABASE, [TABLE])
        insert_seconds = _insert(ctx, cfg.tasks)
        ctx.children.run_workers(
            python("-m", "bench.peers.rawsql", "worker"),
            env=env,
            count=workers,
            name="raw-worker",
            timeout=cfg.step_timeout(cfg.tasks),
        )
        done = db.span(cfg, DATABASE, TABLE, "status = 'succeeded'")
        if done["finished"] != cfg.tasks:
            raise StepFailed(f"raw SQL finished {done['finished']} of {cfg.tasks}")
        runs.append(
            {
                "label": workers_label(workers),
                "workers": workers,
                "rep": rep,
                "enqueue_label": "multi-row INSERT",
                "enqueue_rate": rate(cfg.tasks, insert_seconds),
                "drain_rate": rate(done["finished"], done["seconds"]),
                "drain_seconds": done["seconds"],
            }
        )
    return {"runs": runs}


if __name__ == "__main__" and sys.argv[1:] == ["worker"]:
    worker()
