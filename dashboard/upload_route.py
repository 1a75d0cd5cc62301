"""The upload endpoint: ``POST /_upload/<target>`` streams a dataset file to disk.

``dcc.Upload`` would send the file base64-encoded inside a callback's JSON body, which
costs the server about six times the file in memory. The Model page's drop zones instead
send the file itself as the body of one request (``assets/dashboard.js``); this route copies
it to disk in chunks (:func:`dashboard.backend.uploads.receive_upload`), starts the job
that checks it (:meth:`~dashboard.backend.background.BackgroundJobs.submit_upload`: read
in a capped child process, then given its name) and answers ``{"upload": job id}``. A file
refused on arrival (too large, empty, a wrong suffix) gets a job record too, failed with
the reason, so the page reads every outcome the same way: from the job, which only its
owner can see (a forged id or another user's reads as "unknown upload").

The route sits behind the same basic auth as every other route (a ``before_request`` hook).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from dashboard.backend.errors import BackendError
from dashboard.backend.owner import current_owner, upload_area
from dashboard.backend.uploads import UPLOAD_TARGETS, clean_stale_uploads, receive_upload

if TYPE_CHECKING:
    from flask import Flask

    from dashboard.backend.service import AnalysisService

log = logging.getLogger(__name__)

#: URL of the endpoint (``<target>`` is ``dataset`` or ``query``).
ROUTE = "/_upload/<target>"


def upload_folder(service: AnalysisService) -> Path:
    """The folder the current owner's uploads are stored in (``<data_dir>/uploads/<ws>``)."""
    return upload_area(service.settings.data_dir, current_owner())


def install_upload_route(server: Flask, service: AnalysisService) -> None:
    """Add :data:`ROUTE` to ``server``. Temporary uploads left by a crash are removed now."""
    from flask import jsonify, request

    base = upload_area(service.settings.data_dir, None)
    areas = [base, *(p for p in base.iterdir() if p.is_dir())] if base.is_dir() else []
    removed = sum(clean_stale_uploads(area) for area in areas)
    if removed:
        log.info("uploads: removed %d temporary file(s) left by an earlier run", removed)

    def receive(target: str) -> Any:
        if target not in UPLOAD_TARGETS:
            return jsonify(error="unknown upload target"), 404
        limit = int(service.settings.max_upload_bytes)
        filename = unquote(request.headers.get("X-Filename", ""), errors="replace")[:300]
        declared = request.content_length
        request.max_content_length = limit + 1  # receive_upload's own check speaks first
        try:
            arrived = receive_upload(
                # a body declared too large is refused unread (receive_upload checks first)
                request.stream if declared is None or declared <= limit else None,
                filename,
                upload_folder(service),
                max_bytes=limit,
                declared_bytes=declared,
            )
            job = service.submit_upload(target, arrived)
            log.info("uploads: %s arrived (%s); checking it in job %s", arrived.name, target, job)
        except BackendError as err:
            job = service.refuse("upload", str(err), target=target, file=filename)
        except OSError as err:  # the disk is full, the client went away
            log.warning("uploads: %r not stored (%s)", filename, type(err).__name__)
            line = f"{filename}: the upload did not complete"
            job = service.refuse("upload", line, target=target, file=filename)
        return jsonify(upload=job)

    server.add_url_rule(ROUTE, "totalvi_upload", receive, methods=["POST"])
