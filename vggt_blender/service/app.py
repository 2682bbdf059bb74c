"""The HTTP API, version 1 (docs/SERVICE.md): a FastAPI app over a `Service`.

`create_app(get_service)` takes a function returning the process's Service, so that the same app serves from
uvicorn (server.py) and from every Ray Serve replica (ray_app.py), each with its own runners.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from typing import Any, Callable, Optional

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import RequestError
from . import store as st
from .job_options import parse_options
from .service import Service
from .uploads import ApiError, receive, verify_photos

API_VERSION = "1"
SSE_INTERVAL = 0.25  # seconds between looks at a job's status for its event stream
SSE_KEEPALIVE = 15.0


# ---- response shapes (for the OpenAPI document) ----

class ErrorDetail(BaseModel):
    code: str
    message: str
    file: Optional[str] = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class JobUrls(BaseModel):
    status: str
    events: str
    result: str
    cancel: str


class Accepted(BaseModel):
    id: str
    state: str
    position: Optional[int] = None
    urls: JobUrls


class JobStatus(BaseModel):
    id: str
    state: str
    stage: str
    progress: float
    message: str
    messages: list[dict[str, Any]]
    position: Optional[int] = None
    created: float
    started: Optional[float] = None
    finished: Optional[float] = None
    photos: list[str]
    error: Optional[ErrorDetail] = None
    result: Optional[dict[str, Any]] = None
    runner: Optional[str] = None
    version: int
    cancel_requested: bool = False


class Health(BaseModel):
    status: str
    api: str
    model: str
    device: Optional[str] = None
    devices: list[dict[str, Any]]
    queue_length: int
    auth: bool
    error: Optional[dict[str, Any]] = None
    limits: dict[str, Any]


def _errors(*codes: int) -> dict:
    return {code: {"model": ErrorBody} for code in codes}


UPLOAD_BODY = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object",
        "properties": {
            "photos": {"type": "array", "items": {"type": "string", "format": "binary"},
                       "description": "one part per photo (or per chosen frame of an image sequence), in order"},
            "video": {"type": "string", "format": "binary",
                      "description": "one video file instead of photos (a shot: every, start, end, max_frames "
                                     "in options)"},
            "options": {"type": "string", "description": "JSON object: precision, mode, fast_path, refine, "
                                                         "images (the client's path of each photo, or of the "
                                                         "video), output; for a shot every, start, end, "
                                                         "max_frames, chunk_size, overlap, fps; for sequence "
                                                         "frames sequence_frames"},
        },
    }}},
}
# What a client does next with a job it submitted (OpenAPI links: also what a stateful fuzzer follows).
JOB_LINKS = {name: {"operationId": operation, "parameters": {"job_id": "$response.body#/id"}}
             for name, operation in (("status", "get_job"), ("events", "job_events"), ("result", "job_result"),
                                     ("cancel", "cancel_job"))}


def create_app(get_service: Callable[[], Service], title: str = "VGGT reconstruction service") -> FastAPI:
    app = FastAPI(title=title, version=API_VERSION, openapi_url="/v1/openapi.json", docs_url="/v1/docs",
                  redoc_url=None)
    bearer = HTTPBearer(auto_error=False, description="the server's token (--token-file or VGGT_SERVER_TOKEN)")

    # ---- errors: always {"error": {"code", "message"}} ----

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            # Every method of every route on this path (Starlette names only the first route's).
            allowed = set()
            for route in app.router.routes:
                regex = getattr(route, "path_regex", None)
                if regex is not None and regex.match(request.url.path):
                    allowed |= set(getattr(route, "methods", None) or ())
            headers["Allow"] = ", ".join(sorted(allowed))
        return JSONResponse({"error": {"code": codes.get(exc.status_code, "http_error"), "message": str(exc.detail)}},
                            status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": {"code": "bad_request", "message": f"{where}: {first.get('msg', 'invalid')}"}},
                            status_code=422)

    # ---- helpers ----

    def authorise(credentials: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> None:
        token = get_service().config.token
        if not token:
            return
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8")):
            raise ApiError(401, "unauthorized", "a valid 'Authorization: Bearer <token>' header is needed",
                           headers={"WWW-Authenticate": "Bearer"})

    def job_status(job_id: str) -> dict:
        status = get_service().store.read(job_id)
        if status is None:
            raise ApiError(404, "not_found", f"no job {job_id} (it may have expired)")
        return status

    def urls(job_id: str) -> dict:
        base = f"/v1/jobs/{job_id}"
        return {"status": base, "events": f"{base}/events", "result": f"{base}/result", "cancel": base}

    def check_accepting(service: Service) -> None:
        if service.state != "ready":
            error = service.first_error()
            if error:
                raise ApiError(503, str(error.get("code", "internal")), f"the server cannot run jobs: "
                                                                        f"{error.get('message', '')}")
            raise ApiError(503, "loading", "the model is still loading; try again shortly",
                           headers={"Retry-After": "5"})
        if service.store.queue_length() >= service.config.max_queue:
            raise ApiError(429, "queue_full", f"the queue is full ({service.config.max_queue} jobs waiting); try "
                                              "again later", headers={"Retry-After": "10"})

    # ---- routes ----

    @app.get("/v1/health", response_model=Health, tags=["service"], operation_id="health")
    def health() -> dict:
        """Whether the server can take jobs (no token needed)."""
        return get_service().health()

    @app.get("/v1/auth", dependencies=[Depends(authorise)], tags=["service"], operation_id="check_token",
             responses=_errors(401))
    def check_token() -> dict:
        """200 when the token is right (the extension's Test Connection)."""
        return {"ok": True, "auth": get_service().config.auth_required}

    @app.post("/v1/jobs", status_code=202, response_model=Accepted, dependencies=[Depends(authorise)],
              openapi_extra={"requestBody": UPLOAD_BODY}, tags=["jobs"], operation_id="submit_job",
              responses={202: {"links": JOB_LINKS}, **_errors(400, 401, 413, 422, 429, 503)})
    async def submit(request: Request) -> JSONResponse:
        """Upload photos (repeated `photos` parts) or one `video`, and `options`; the job is queued."""
        service = get_service()
        check_accepting(service)  # before a byte of the body is read
        folder = service.store.new_upload()
        try:
            upload = await receive(request.headers.get("content-type"), request.headers.get("content-length"),
                                   request.stream(), folder, service.config.max_upload_bytes,
                                   service.config.max_photos)
            try:
                options = parse_options(upload.options, upload.photos, service.config.model, upload.video)
            except RequestError as exc:
                raise ApiError(422, exc.code, exc.message) from None
            await run_in_threadpool(verify_photos, upload, options["sequence"] is not None)
            check_accepting(service)  # the queue may have filled while this upload arrived
            sent, stored = (upload.photos, upload.stored) if upload.video is None else \
                ([upload.video], [str(upload.video_stored)])
            job_id = service.store.submit(folder, sent, stored, options)
        except BaseException:
            service.store.discard_upload(folder)
            raise
        service.wake()
        position = service.store.read(job_id) or {}
        return JSONResponse({"id": job_id, "state": st.QUEUED, "position": position.get("position"),
                             "urls": urls(job_id)}, status_code=202, headers={"Location": f"/v1/jobs/{job_id}"})

    @app.get("/v1/jobs/{job_id}", response_model=JobStatus, dependencies=[Depends(authorise)], tags=["jobs"],
             operation_id="get_job", responses=_errors(401, 404))
    def get_job(job_id: str) -> dict:
        """The job's state, stage, progress, messages and queue position."""
        return job_status(job_id)

    @app.get("/v1/jobs/{job_id}/events", dependencies=[Depends(authorise)], tags=["jobs"], operation_id="job_events",
             responses={200: {"content": {"text/event-stream": {}}}, **_errors(401, 404)})
    async def job_events(job_id: str, request: Request) -> StreamingResponse:
        """Server-sent events: a `status` event (the job's status) whenever it changes, until it ends."""
        job_status(job_id)
        store = get_service().store

        async def stream():
            seen = -1
            last_sent = time.monotonic()
            while True:
                status = store.read(job_id)
                if status is None:
                    yield 'event: error\ndata: {"error": {"code": "not_found", "message": "the job is gone"}}\n\n'
                    return
                if status["version"] != seen:
                    seen = status["version"]
                    last_sent = time.monotonic()
                    yield f"id: {seen}\nevent: status\ndata: {json.dumps(status, ensure_ascii=True)}\n\n"
                    if status["state"] in st.FINAL_STATES:
                        return
                elif time.monotonic() - last_sent > SSE_KEEPALIVE:
                    last_sent = time.monotonic()
                    yield ": keep-alive\n\n"
                if await request.is_disconnected():
                    return
                await asyncio.sleep(SSE_INTERVAL)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def finished_file(job_id: str, relative: str | None) -> FileResponse:
        status = job_status(job_id)
        if status["state"] != st.DONE:
            raise ApiError(409, "not_done", f"the job is {status['state']}; its result exists once it is done")
        files = status["result"]["files"]
        entry = files[0] if relative is None else next((f for f in files if f["path"] == relative), None)
        if entry is None:
            raise ApiError(404, "not_found", f"the job has no file {relative!r}")
        out = get_service().store.out_folder(job_id)
        path = (out / entry["path"]).resolve()
        if out.resolve() not in path.parents or not path.is_file():
            raise ApiError(404, "not_found", f"the job's file {entry['path']} is gone")
        return FileResponse(path, media_type="application/octet-stream", filename=path.name)

    @app.get("/v1/jobs/{job_id}/result", dependencies=[Depends(authorise)], tags=["jobs"], operation_id="job_result",
             responses={200: {"content": {"application/octet-stream": {}}}, **_errors(401, 404, 409)})
    def job_result(job_id: str) -> FileResponse:
        """The reconstruction file (.npz), its photo paths set to the client's own (`options.images`)."""
        return finished_file(job_id, None)

    @app.get("/v1/jobs/{job_id}/files/{path:path}", dependencies=[Depends(authorise)], tags=["jobs"],
             operation_id="job_file",
             responses={200: {"content": {"application/octet-stream": {}}}, **_errors(401, 404, 409)})
    def job_file(job_id: str, path: str) -> FileResponse:
        """Another file of the result (an upright copy of a rotated photo), as listed in `result.files`."""
        return finished_file(job_id, path)

    @app.delete("/v1/jobs/{job_id}", response_model=JobStatus, dependencies=[Depends(authorise)], tags=["jobs"],
                operation_id="cancel_job", responses={202: {"model": JobStatus}, **_errors(401, 404)})
    def cancel_job(job_id: str) -> JSONResponse:
        """Cancel: a queued job at once, a running one as soon as its worker stops (202 until then)."""
        job_status(job_id)
        status = get_service().store.request_cancel(job_id) or job_status(job_id)
        if status["state"] not in st.FINAL_STATES:
            status["cancel_requested"] = True
        return JSONResponse(status, status_code=200 if status["state"] in st.FINAL_STATES else 202)

    return app
