"""The HTTP API and the page: a FastAPI app around one loaded :class:`~maskformer.predict.Predictor`.

``POST /predict`` takes an image (multipart field ``image``, or the raw file as the body) and answers the
segments as JSON, each with its class, score, area, box and COCO RLE mask, and optionally the label /
panoptic PNG; ``GET /models`` describes the model; ``GET /health`` answers while the server runs; ``GET /``
is the page; ``/docs`` the OpenAPI page.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.formparsers import MultiPartParser
from starlette.status import HTTP_401_UNAUTHORIZED

from ..data.io import ImageTooLarge, coco_panoptic_json, decode_image
from ..model.config import InferenceConfig
from ..predict import Predictor
from ..predict.checks import TASKS
from ..predict.inputs import LoadedImage
from ..predict.predictor import with_thresholds
from ..predict.results import InstanceResult, PanopticResult, Result
from ..predict.writers import (
    SegmentRecord,
    categories,
    category_id,
    instance_records,
    panoptic_png,
    panoptic_record,
    segment_records,
    semantic_png,
)
from ..predict.zoo import known_model
from .batcher import Batcher, QueueFull
from .config import ServeConfig
from .examples import example_images

PAGE = Path(str(resources.files(__package__) / "page"))
RAW_BODY = "the request body"


TaskParam = Annotated[Literal["semantic", "panoptic", "instance"], Query(description="what to segment")]
ScoreParam = Annotated[
    float | None, Query(ge=0, le=1, description="panoptic, instance: drop queries scoring at most this (default: "
                        "the model's)")
]  # fmt: skip
OverlapParam = Annotated[
    float | None, Query(ge=0, le=1, description="panoptic: keep segments with at least this share of their mask "
                        "visible (default: the model's)")
]  # fmt: skip
PngParam = Annotated[
    bool, Query(description="also answer the label PNG (semantic) or panoptic PNG, in base64; the instance task "
                "has none (instances overlap) and answers 422")
]  # fmt: skip
CocoParam = Annotated[
    bool, Query(description="also answer the COCO JSON `maskformer predict` writes: the panoptic JSON (its PNG "
                "named NAME_panoptic.png after the upload's name) or the instance results")
]  # fmt: skip
PREDICT_PARAMS = {"task", "score_threshold", "overlap_threshold", "png", "coco"}


class Prediction(BaseModel):
    task: str
    width: int
    height: int
    segments: list[SegmentRecord]
    png: str | None = None
    coco: dict | list[dict] | None = None


class Models(BaseModel):
    models: list[dict]


def model_task(predictor: Predictor, source: str) -> str:
    """The task the model was made for: its known checkpoint's, else by its classes (things and stuff:
    panoptic; things alone: instance; no things: semantic)."""
    known = known_model(source)
    if known:
        return known.task
    things = predictor.metadata.thing_classes
    if not things:
        return "semantic"
    return "instance" if len(things) == predictor.model.config.num_classes else "panoptic"


def model_card(predictor: Predictor, source: str) -> dict:
    """What ``GET /models`` says of the loaded model: its name, family, classes and licence."""
    meta, config = predictor.metadata, predictor.model.config
    known = known_model(source)
    things = meta.thing_classes
    classes = [
        {"id": i, "category_id": category_id(meta, i), "name": name, "isthing": things is None or i in things,
         "color": list(meta.colors[i])}
        for i, name in enumerate(meta.class_names)
    ]  # fmt: skip
    return {
        "name": known.name if known else source,
        "source": source,
        "family": config.family,
        "dataset": known.dataset if known else meta.dataset,
        "licence": known.licence if known else "not stated: the licence is that of the weights' source",
        "tasks": list(TASKS),
        "task": model_task(predictor, source),
        "num_classes": config.num_classes,
        "classes": classes,
        "device": str(predictor.device),
        "precision": predictor.precision,
    }


def _one_line(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ())[1:]) or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


async def _read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    too_large = HTTPException(413, f"the request is larger than the limit of {limit:,} bytes (--max-request-mb)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _image_bytes(request: Request, limit: int) -> tuple[bytes, str]:
    """The uploaded image and a name for it: a multipart ``image`` field (or the only file sent), else the
    raw body."""
    body = await _read_body(request, limit)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return body, RAW_BODY

    async def stream() -> AsyncIterator[bytes]:
        yield body

    try:
        form = await MultiPartParser(request.headers, stream()).parse()
    except Exception as err:
        raise HTTPException(400, f"malformed multipart body ({err})") from None
    files = [(key, value) for key, value in form.multi_items() if hasattr(value, "read")]
    chosen = [value for key, value in files if key == "image"] or [value for _, value in files]
    if len(chosen) != 1:
        raise HTTPException(400, f"expected one file in the multipart field 'image', got {len(chosen)}")
    upload = chosen[0]
    return await upload.read(), upload.filename or "the uploaded file"


def create_app(predictor: Predictor, config: ServeConfig, source: str = "model") -> FastAPI:
    """The app serving ``predictor`` under ``config``'s limits, ``config.max_batch`` images per forward
    call (a copy of the predictor, sharing its model, does the work). Its worker thread starts and stops
    with the app; a stop finishes the queued requests first."""
    predictor = copy.copy(predictor)
    predictor.batch_size = config.max_batch
    base_inference = predictor.model.config.inference

    def predict(images: Sequence[LoadedImage], task: str, inference: InferenceConfig) -> list[Result]:
        return [r for _, r in predictor.predict_loaded(images, task, inference=inference)]

    batcher = Batcher(predict, config.max_batch, config.batch_wait_ms / 1000, config.max_queue)
    card = model_card(predictor, source)
    examples = example_images()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await run_in_threadpool(batcher.stop)

    # The /docs page's scripts and styles come from the fastapi-offline package, not from a CDN, so that it
    # works where the server has no internet.
    app = FastAPIOffline(
        title="maskformer",
        summary=f"{card['name']}: semantic, panoptic and instance segmentation",
        lifespan=lifespan,
        favicon_url="/favicon.ico",
    )

    def authorize(request: Request) -> None:
        if config.token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(value.strip().encode(), config.token.encode()):
            detail = "a wrong token" if given else "no token"
            raise HTTPException(
                HTTP_401_UNAUTHORIZED,
                f"{detail}: send 'Authorization: Bearer TOKEN' with the server's --token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.exception_handler(RequestValidationError)
    async def one_line_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(exc)}, status_code=422)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(PAGE / "index.html")

    app.mount("/page", StaticFiles(directory=PAGE), name="page")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(PAGE / "favicon.png", media_type="image/png")

    def known_parameters(request: Request) -> None:
        # FastAPI ignores query parameters it does not know: a misspelt one (?tsk=panoptic) would be lost.
        unknown = sorted(set(request.query_params) - PREDICT_PARAMS)
        if unknown:
            raise HTTPException(
                422, f"unknown query parameter(s) {', '.join(unknown)}; expected {', '.join(sorted(PREDICT_PARAMS))}"
            )

    @app.get("/health")
    def health() -> dict:
        """The server is up; how many requests wait and run."""
        return {"status": "ok", **batcher.stats()}

    @app.get("/models", dependencies=[Depends(authorize)])
    def models() -> Models:
        """The loaded model: name, family, dataset, licence, tasks, the task it was made for, and classes
        (id, name, thing, colour)."""
        return Models(models=[card])

    @app.get("/examples")
    def example_list() -> list[dict]:
        """Example images for the page."""
        return [{"name": name, "url": f"/examples/{name}.png"} for name in examples]

    @app.get("/examples/{name}.png", response_class=Response)
    def example(name: str) -> Response:
        if name not in examples:
            raise HTTPException(404, f"no example {name!r}; GET /examples lists them")
        return Response(examples[name], media_type="image/png")

    body_doc = {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": {"image": {"type": "string", "format": "binary"}}}
                },
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }

    @app.post(
        "/predict",
        dependencies=[Depends(authorize), Depends(known_parameters)],
        openapi_extra=body_doc,
        response_model_exclude_none=True,  # png and coco only when asked for
    )
    async def predict_endpoint(
        request: Request,
        task: TaskParam = "semantic",
        score_threshold: ScoreParam = None,
        overlap_threshold: OverlapParam = None,
        png: PngParam = False,
        coco: CocoParam = False,
    ) -> Prediction:
        """Segment one image: multipart field ``image``, or the image file as the raw body."""
        started = time.monotonic()
        if png and task == "instance":
            raise HTTPException(422, "png: the instance task has no PNG (instances overlap); their RLE masks are "
                                     "in segments")  # fmt: skip
        data, name = await _image_bytes(request, config.max_request_bytes)
        try:
            image = await run_in_threadpool(decode_image, data, name)
        except ImageTooLarge as err:
            raise HTTPException(413, str(err)) from None
        except ValueError as err:
            raise HTTPException(400, str(err)) from None
        inference = with_thresholds(base_inference, score_threshold, overlap_threshold)
        try:
            future = batcher.submit(LoadedImage(image, "request"), task, inference)
        except QueueFull as err:
            raise HTTPException(503, f"busy: {err}; retry shortly", headers={"Retry-After": "1"}) from None
        left = config.timeout_s - (time.monotonic() - started)
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(future), timeout=max(left, 0.001))
        except asyncio.TimeoutError:
            raise HTTPException(504, f"no result within the limit of {config.timeout_s:g} s (--timeout)") from None
        except Exception as err:
            raise HTTPException(500, f"prediction failed: {str(err).splitlines()[0] if str(err) else err!r}") from None
        return await run_in_threadpool(_answer, result, task, png, coco, name)

    return app


def _answer(result: Result, task: str, png: bool, coco: bool, name: str) -> Prediction:
    h, w = result.image_size
    answer = Prediction(task=task, width=w, height=h, segments=segment_records(result))
    if png:
        data = semantic_png(result) if task == "semantic" else panoptic_png(result)
        answer.png = base64.b64encode(data).decode("ascii")
    if coco and isinstance(result, PanopticResult):
        stem = Path(name).stem if name != RAW_BODY else "image"
        image = {"id": 1, "file_name": f"{stem}.png", "width": w, "height": h}
        record = panoptic_record(result, 1, f"{stem}_panoptic.png")
        answer.coco = coco_panoptic_json([image], [record], categories(result.metadata))
    elif coco and isinstance(result, InstanceResult):
        answer.coco = instance_records(result, 1)
    return answer
