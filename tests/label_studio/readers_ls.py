"""How a reader gets into Label Studio in the tests: exactly as in production, through the
platform's one-time sign-in link, never with a password, and with the browser session only
(readers cannot fetch an API token)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import requests

from annotations.errors import DomainError
from annotations.services import label_studio_sync as sync


def sign_in(workspace) -> requests.Session:
    """A browser-like session of the workspace's reader, signed in by the platform."""
    session = requests.Session()
    url = sync.workspace_sign_in_url(workspace=workspace, reader=workspace.reader)
    response = session.get(url, allow_redirects=False, timeout=10)
    assert response.status_code == 302, response.text
    assert response.headers["Location"].endswith(f"/projects/{workspace.ls_project_id}/data")
    return session


def stored_token(label_studio, workspace) -> str:
    """The legacy token Label Studio keeps for the reader user (it makes one for every user).

    Readers cannot fetch it (the bridge refuses ``/api/current-user/token``); the attack
    tests read it from Label Studio's database to show it would open nothing more anyway.
    """
    db = Path(label_studio.server.data_dir) / "label_studio.sqlite3"
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT key FROM authtoken_token WHERE user_id = ?",
                           (workspace.ls_reader_user_id,)).fetchone()
    assert row is not None
    return str(row[0])


class ReaderSession:
    """What the labeling screen does, as the signed-in reader (session cookie, JSON)."""

    def __init__(self, label_studio, workspace) -> None:
        self.url = label_studio.url
        self.session = sign_in(workspace)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        response = self.session.request(method, self.url + path, json=body, timeout=10)
        if response.status_code >= 400:
            raise DomainError("label_studio_error", f"{method} {path}: {response.status_code}",
                              status=502, detail={"status": response.status_code})
        return response.json() if response.content else None

    def create_annotation(self, task_id: int, result: Sequence[Mapping[str, Any]]) -> dict:
        return self._call("POST", f"/api/tasks/{task_id}/annotations/",
                          {"result": list(result)})

    def update_annotation(self, annotation_id: int, result: Sequence[Mapping[str, Any]]
                          ) -> None:
        self._call("PATCH", f"/api/annotations/{annotation_id}/", {"result": list(result)})

    def delete_annotation(self, annotation_id: int) -> None:
        self._call("DELETE", f"/api/annotations/{annotation_id}/")


def reader_client(label_studio, reader, kind: str = "reading") -> ReaderSession:
    return ReaderSession(label_studio, reader.workspaces.get(kind=kind))
