"""A local HTTP server that answers like the Hugging Face hub for one repository (enough for
`huggingface_hub.snapshot_download`): the revision and tree APIs and file downloads."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def serve_repository(repo_id: str, files: dict[str, Path]) -> tuple[ThreadingHTTPServer, list[str]]:
    """Start the server; returns it and the list of paths it was asked for."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

        def _send(self, body: bytes, content_type: str, etag: str | None = None, head: bool = False) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Repo-Commit", COMMIT)
            if etag:
                self.send_header("ETag", f'"{etag}"')
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _route(self, head: bool) -> None:
            asked.append(self.path)
            path = self.path.split("?")[0]
            if path.startswith(f"/api/models/{repo_id}/revision/"):
                info = {"id": repo_id, "sha": COMMIT, "siblings": [{"rfilename": name} for name in files]}
                self._send(json.dumps(info).encode(), "application/json", head=head)
                return
            if path.startswith(f"/api/models/{repo_id}/tree/"):
                tree = [
                    {"type": "file", "path": name, "size": f.stat().st_size, "oid": COMMIT}
                    for name, f in files.items()
                ]
                self._send(json.dumps(tree).encode(), "application/json", head=head)
                return
            prefix = f"/{repo_id}/resolve/"
            if path.startswith(prefix):
                name = path[len(prefix) :].split("/", 1)[1]
                if name in files:
                    body = files[name].read_bytes()
                    self._send(body, "application/octet-stream", hashlib.sha256(body).hexdigest(), head)
                    return
            self.send_response(404)
            self.end_headers()

        def do_GET(self) -> None:
            self._route(head=False)

        def do_HEAD(self) -> None:
            self._route(head=True)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, asked
