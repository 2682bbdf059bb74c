"""Server mode: the preferences' server settings, `vggt.test_server` (Test Connection), and the remote job the
Reconstruct operator runs instead of a local one (jobs/remote.py; the scene is built the same way)."""

from __future__ import annotations

import os

import bpy

from ..tasks import one_line
from ..vggt_blender.jobs.http_client import ServiceClient, ServiceError
from ..vggt_blender.jobs.remote import RemoteJob

TOKEN_ENV = "VGGT_SERVER_TOKEN"
TEST_TIMEOUT = 5.0  # seconds: Test Connection waits this long at most (it runs on the main thread)
# The last Test Connection: (url, ok, text), shown under the button.
_last_check: dict[str, object] = {}


def server_token(prefs) -> str | None:  # noqa: ANN001 - the add-on preferences
    return prefs.server_token.strip() or os.environ.get(TOKEN_ENV, "").strip() or None


def remote_job(prefs, request: dict, log_path: str) -> RemoteJob:  # noqa: ANN001
    return RemoteJob(prefs.server_url.strip(), server_token(prefs), request, log_path=log_path)


def check_server(url: str, token: str | None, timeout: float = TEST_TIMEOUT) -> str:
    """One line describing the server; ServiceError when it cannot be used (unreachable, wrong token...)."""
    client = ServiceClient(url, token, timeout=timeout)
    health = client.health()
    client.check_token()
    devices = ", ".join(d.get("device", "?") for d in health.get("devices") or []) or health.get("device") or "?"
    text = f"{health.get('status', '?')}: {health.get('model', '?')} on {devices}, {health.get('queue_length', 0)} " \
           "job(s) waiting"
    if health.get("status") == "error" and health.get("error"):
        raise ServiceError(f"the server cannot run jobs: {health['error'].get('message', '')}")
    return text


def draw_server(layout: bpy.types.UILayout, prefs) -> None:  # noqa: ANN001
    layout.prop(prefs, "server_url")
    layout.prop(prefs, "server_token")
    row = layout.row(align=True)
    row.operator("vggt.test_server", icon="URL")
    if _last_check.get("url") == prefs.server_url.strip():
        row.label(text=str(_last_check.get("text", "")), icon="CHECKMARK" if _last_check.get("ok") else "ERROR")


class VGGT_OT_test_server(bpy.types.Operator):
    """Check that the reconstruction server answers and accepts the token"""

    bl_idname = "vggt.test_server"
    bl_label = "Test Connection"

    def execute(self, context: bpy.types.Context) -> set[str]:
        from .. import runtime

        prefs = runtime.get_prefs(context)
        if prefs is None:
            self.report({"ERROR"}, "VGGT: the add-on preferences are not available")
            return {"CANCELLED"}
        url = prefs.server_url.strip()
        try:
            text = check_server(url, server_token(prefs))
        except ServiceError as exc:
            _last_check.update(url=url, ok=False, text=one_line(exc.message))
            self.report({"ERROR"}, f"VGGT: {one_line(exc.message)}")
            return {"CANCELLED"}
        _last_check.update(url=url, ok=True, text=text)
        self.report({"INFO"}, f"VGGT server {url}: {text}")
        return {"FINISHED"}


classes = (VGGT_OT_test_server,)
