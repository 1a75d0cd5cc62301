"""The upload endpoint: ``POST /_upload/<target>`` streams a dataset file to disk.

``dcc.Upload`` would send the file base64-encoded inside a callback's JSON body, which
costs the server about six times the file in memory. The Model page's drop zones instead
send the file itself as the body of one request (``assets/dashboard.js``); this route copies
it to disk in chunks (:func:`dashboard.backend.uploads.store_upload`), has it validated
in a child process, and answers ``{"upload": token}``. The page's callback then renders the
outcome it finds under that token (:func:`outcome`): the browser never says what was stored
where, it only carries an unguessable token, and a token of another server or a forged
one reads as "unknown upload".

The route sits behind the same basic auth as every other route (a ``before_request`` hook).
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from dashboard.backend.errors import BackendError
from dashboard.backend.owner import current_owner, upload_area
from dashboard.backend.uploads import clean_stale_uploads, store_upload

if TYPE_CHECKING:
    from flask import Flask

    from dashboard.backend.service import AnalysisService

log = logging.getLogger(__name__)

#: URL of the endpoint (``<target>`` is ``dataset`` or ``query``).
ROUTE = "/_upload/<target>"
#: Outcomes kept for the page to pick up (oldest forgotten first).
KEPT = 256


@dataclass(frozen=True)
class UploadOutcome:
    """What became of one upload: the stored path and what reading it found, or why it
    was refused (one line)."""

    target: str
    path: Path | None = None
    data: Any = None
    error: str = ""
    kind: str = field(default="", compare=False)  # the refusal's error class name
    owner: str | None = field(default=None, compare=False)  # whose upload it is


_outcomes: OrderedDict[str, UploadOutcome] = OrderedDict()
_lock = threading.Lock()


def remember(outcome: UploadOutcome) -> str:
    """Keep ``outcome`` under a new unguessable token (bounded: :data:`KEPT`)."""
    token = secrets.token_urlsafe(16)
    with _lock:
        _outcomes[token] = outcome
        while len(_outcomes) > KEPT:
            _outcomes.popitem(last=False)
    return token


def outcome(token: Any, target: str) -> UploadOutcome | None:
    """The outcome of the upload ``token`` to ``target``; ``None`` when unknown or made by
    another owner (a token is no way into someone else's upload)."""
    if not isinstance(token, str):
        return None
    with _lock:
        found = _outcomes.get(token)
    owner = current_owner()  # None: not a request (the server itself, tests)
    if found is None or found.target != target or (owner is not None and found.owner != owner):
        return None
    return found


def upload_folder(service: AnalysisService) -> Path:
    """The folder the current owner's uploads are stored in (``<data_dir>/uploads/<ws>``)."""
    return upload_area(service.settings.data_dir, current_owner())


def install_upload_route(
    server: Flask,
    service: AnalysisService,
    validators: dict[str, Callable[[Path, str], Any]],
) -> None:
    """Add :data:`ROUTE` to ``server``; ``validators[target](path, shown_name)`` checks a
    file for that target. Temporary uploads left by a crash are removed now."""
    from flask import jsonify, request

    base = upload_area(service.settings.data_dir, None)
    areas = [base, *(p for p in base.iterdir() if p.is_dir())] if base.is_dir() else []
    removed = sum(clean_stale_uploads(area) for area in areas)
    if removed:
        log.info("uploads: removed %d temporary file(s) left by an earlier run", removed)

    def receive(target: str) -> Any:
        validate = validators.get(target)
        if validate is None:
            return jsonify(error="unknown upload target"), 404
        limit = int(service.settings.max_upload_bytes)
        filename = unquote(request.headers.get("X-Filename", ""), errors="replace")[:300]
        declared = request.content_length
        request.max_content_length = limit + 1  # store_upload's own check speaks first
        try:
            path, data = store_upload(
                # a body declared too large is refused unread (store_upload checks first)
                request.stream if declared is None or declared <= limit else None,
                filename,
                upload_folder(service),
                max_bytes=limit,
                validate=validate,
                declared_bytes=declared,
            )
            found = UploadOutcome(target, path=path, data=data, owner=current_owner())
            log.info("uploads: stored %s (%s)", path.name, target)
        except BackendError as err:
            found = UploadOutcome(
                target, error=str(err), kind=type(err).__name__, owner=current_owner()
            )
        except OSError as err:  # the disk is full, the client went away
            log.warning("uploads: %r not stored (%s)", filename, type(err).__name__)
            found = UploadOutcome(
                target, error=f"{filename}: the upload did not complete", owner=current_owner()
            )
        return jsonify(upload=remember(found))

    server.add_url_rule(ROUTE, "totalvi_upload", receive, methods=["POST"])
