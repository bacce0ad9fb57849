"""How a reader gets into Label Studio in the tests: exactly as in production, through the
platform's one-time sign-in link, never with a password."""

from __future__ import annotations

import requests

from annotations.label_studio.client import LabelStudioClient
from annotations.services import label_studio_sync as sync


def sign_in(workspace) -> requests.Session:
    """A browser-like session of the workspace's reader, signed in by the platform."""
    session = requests.Session()
    url = sync.workspace_sign_in_url(workspace=workspace, reader=workspace.reader)
    response = session.get(url, allow_redirects=False, timeout=10)
    assert response.status_code == 302, response.text
    assert response.headers["Location"].endswith(f"/projects/{workspace.ls_project_id}/data")
    return session


def reader_token(label_studio, workspace) -> str:
    """The legacy API token a signed-in reader can fetch for themselves."""
    session = sign_in(workspace)
    response = session.get(f"{label_studio.url}/api/current-user/token", timeout=10)
    response.raise_for_status()
    return str(response.json()["token"])


def reader_client(label_studio, reader, kind: str = "reading") -> LabelStudioClient:
    workspace = reader.workspaces.get(kind=kind)
    return LabelStudioClient(label_studio.url, reader_token(label_studio, workspace))
