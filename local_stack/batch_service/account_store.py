"""SQLite persistence: every pool, node, job and task document, written through.

The engine keeps its working state in memory and saves each changed document
here, so a restarted service reloads exactly what the last one knew.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pools (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (pool_id TEXT, id TEXT, doc TEXT NOT NULL, PRIMARY KEY (pool_id, id));
CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (job_id TEXT, id TEXT, seq INTEGER, doc TEXT NOT NULL, PRIMARY KEY (job_id, id));
"""


class Store:
    """A small document store over one SQLite file (safe to call from any thread)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def save_pool(self, pool: dict) -> None:
        self._exec("INSERT OR REPLACE INTO pools VALUES (?, ?)", (pool["id"], json.dumps(pool)))

    def delete_pool(self, pool_id: str) -> None:
        self._exec("DELETE FROM pools WHERE id = ?", (pool_id,))
        self._exec("DELETE FROM nodes WHERE pool_id = ?", (pool_id,))

    def save_node(self, pool_id: str, node: dict) -> None:
        self._exec("INSERT OR REPLACE INTO nodes VALUES (?, ?, ?)", (pool_id, node["id"], json.dumps(node)))

    def delete_node(self, pool_id: str, node_id: str) -> None:
        self._exec("DELETE FROM nodes WHERE pool_id = ? AND id = ?", (pool_id, node_id))

    def save_job(self, job: dict) -> None:
        self._exec("INSERT OR REPLACE INTO jobs VALUES (?, ?)", (job["id"], json.dumps(job)))

    def delete_job(self, job_id: str) -> None:
        self._exec("DELETE FROM jobs WHERE id = ?", (job_id,))
        self._exec("DELETE FROM tasks WHERE job_id = ?", (job_id,))

    def save_tasks(self, job_id: str, tasks: list[dict]) -> None:
        """Save several tasks in one transaction (an add collection is one commit)."""
        rows = [(job_id, t["id"], t["_seq"], json.dumps(t)) for t in tasks]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO tasks VALUES (?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")

    def delete_task(self, job_id: str, task_id: str) -> None:
        self._exec("DELETE FROM tasks WHERE job_id = ? AND id = ?", (job_id, task_id))

    def load(self) -> tuple[list[dict], list[tuple[str, dict]], list[dict], list[tuple[str, dict]]]:
        """Everything saved: pools, (pool id, node), jobs, (job id, task) in creation order."""
        with self._lock:
            pools = [json.loads(r[0]) for r in self._db.execute("SELECT doc FROM pools")]
            nodes = [(r[0], json.loads(r[1])) for r in self._db.execute("SELECT pool_id, doc FROM nodes ORDER BY id")]
            jobs = [json.loads(r[0]) for r in self._db.execute("SELECT doc FROM jobs")]
            tasks = [(r[0], json.loads(r[1])) for r in self._db.execute("SELECT job_id, doc FROM tasks ORDER BY seq")]
        return pools, nodes, jobs, tasks

    def _exec(self, sql: str, args: tuple) -> None:
        with self._lock:
            self._db.execute(sql, args)
