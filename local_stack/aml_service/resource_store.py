"""SQLite state of the local Azure ML endpoint: one row per ARM resource, keyed by its path.

A restart of the service keeps every workspace resource (datastores, code, components,
environments, computes, jobs, endpoints).
"""
from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any


class ResourceStore:
    """ARM resources as JSON documents, keyed by their path below the workspace (lower-cased)."""

    def __init__(self, db_path: Path) -> None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS resources (key TEXT PRIMARY KEY, kind TEXT NOT NULL, body TEXT NOT NULL)"
        )
        self._lock = threading.Lock()

    @staticmethod
    def key(path: str) -> str:
        return path.strip("/").lower()

    def get(self, path: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM resources WHERE key = ?", (self.key(path),)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, path: str, kind: str, body: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO resources (key, kind, body) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET body = excluded.body, kind = excluded.kind",
                (self.key(path), kind, json.dumps(body)),
            )

    def delete(self, path: str) -> bool:
        with self._lock:
            cursor = self._db.execute("DELETE FROM resources WHERE key = ?", (self.key(path),))
        return cursor.rowcount > 0

    def list(self, kind: str, prefix: str = "") -> list[dict[str, Any]]:
        """Resources of one kind whose path starts with prefix."""
        like = self.key(prefix).replace("%", r"\%").replace("_", r"\_") + "%"
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM resources WHERE kind = ? AND key LIKE ? ESCAPE '\\' ORDER BY rowid",
                (kind, like),
            ).fetchall()
        return [json.loads(row[0]) for row in rows]

    def close(self) -> None:
        self._db.close()
