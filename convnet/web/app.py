"""The explorer's HTTP API and page: `create_app(run_folder)` returns a FastAPI application.

    GET  /                              the page (static files under /static)
    GET  /api/model                     layers, shapes, parameter formulas, receptive fields,
                                        window arithmetic of conv and pool layers
    GET  /api/samples                   sample (validation) images: ids and labels
    GET  /api/images/{id}.png           one image as PNG (?scale=4 enlarges it)
    POST /api/images                    upload an image file (multipart field "file")
    GET  /api/predict/{id}              top-k probabilities and every layer's activation maps
                                        (?layers=a,b: only those; ?maps=false: none)
    GET  /api/activations/{id}          one stage's activation maps (?layer=)
    GET  /api/unit/{id}                 inside one output unit (?layer=&channel=&row=&col=)
    GET  /api/network                   a graph model's boxes and arrows (?collapsed=block1,..)
    GET  /api/arithmetic                the playground: (N - F + 2P)/S + 1 with its numbers and
                                        window positions (?n=&f=&s=&p=&d=&transposed=)
    GET  /api/samples/sprite.png        the sample thumbnails in one picture (?offset=&limit=)
    GET  /api/receptive-field           input window of one unit (?layer=&row=&col=)
    GET  /api/filters/{layer}           a conv layer's filters
    GET  /api/explain/{id}              saliency and Grad-CAM (?class_index=&layer=)
    GET  /api/segment/{id}              a segmenter's masks: input, true and predicted mask,
                                        overlay, IoU per class (this image's, the samples')
    GET  /api/top-images                samples that excite a filter most (?layer=&filter=&k=)
    GET  /api/train                     training status and the choices for a new run
    POST /api/train                     start training (JSON body)
    POST /api/train/lr                  change the learning rate of the run in progress
    POST /api/train/stop                stop after the current step, saving a checkpoint
    GET  /api/train/events              server-sent events: start, batch, epoch, snapshot, ...
                                        (for a run folder trained elsewhere: watch, epoch,
                                        snapshot as its files change)

Errors are JSON {"detail": "what was wrong and what to do"} with a 4xx status. Only the
loopback host names are answered, and POSTs need the page's token (convnet.web.guard).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import re
import threading
from importlib import resources
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile as StarletteUploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from convnet.io.checkpoint import CheckpointError, LoadedModel
from convnet.io.modelfile import spec_to_toml
from convnet.io.runlock import fresh_folder
from convnet.nn.graph import first_output_shape
from convnet.web.explorer import BadRequest, Explorer, NotFound, Samples, Source, model_label
from convnet.web.guard import Guard, new_token
from convnet.web.training import EventLog, FolderWatch, TrainingSession, sse
from convnet.web.uploads import (
    DEFAULT_MAX_BYTES,
    DecodeBudget,
    UploadError,
    busy,
    decode_upload,
)

STATIC = resources.files("convnet.web") / "static"
HEARTBEAT_S = 15.0
POLL_S = 0.2
SHUTDOWN_WAIT_S = 60.0  # how long a stopping server waits for a page-started run to save


class TrainRequest(BaseModel):
    model: str = Field("current", description="a zoo name, or 'current' for the model shown")
    dataset: str = Field("current", description="a dataset name, or 'current'")
    epochs: int = Field(1, ge=1, le=200)
    batch_size: int = Field(64, ge=1, le=4096)
    lr: float = Field(0.05, gt=0, le=10)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    val_fraction: float = Field(0.1, gt=0, lt=1)
    seed: int = Field(0, ge=0)


class LearningRate(BaseModel):
    lr: float = Field(..., gt=0, le=10, description="the new base learning rate")


def _explorer_for(run_folder, model, model_name, input_shape, class_names, normalization,
                  dataset, data_dir, samples, checkpoint) -> Explorer:
    from convnet.io import zoo
    from convnet.viz.run import open_run, open_target, sample_set

    if run_folder is not None and Path(run_folder).suffix == ".onnx":
        from convnet.io.checkpoint import load

        loaded = load(run_folder)  # a chain or, imported as one, a graph model
        source = Source("onnx", Path(run_folder).name, note="imported from ONNX")
    elif run_folder is not None:
        run = open_run(run_folder, checkpoint)
        folder = str(run.folder) if run.folder else str(run_folder)
        name = str(run.loaded.config.get("model_name") or Path(folder).name)
        source = Source("run", model_label(name), folder,
                        zoo_name=name if name in zoo.MODELS else None)
        loaded = run.loaded
        if samples is None and dataset is None:
            validation = run.validation()
            found = (Samples.from_dataset(validation, f"validation split of "
                                          f"{loaded.config.get('dataset')}")
                     if validation is not None else None)
            return Explorer(loaded, _note(source, run.validation_error), found)
    elif model is not None:
        shape = tuple(input_shape or getattr(model, "input_shape", None) or ())
        if len(shape) != 3:
            raise ValueError("create_app(model=...) needs input_shape=(C, H, W) (or a model "
                             "built with one)")
        classes = list(class_names or [str(i) for i in range(
            first_output_shape(model, shape)[0])])
        loaded = LoadedModel(model.eval(), shape, classes, normalization, {}, None)
        source = Source("python", model_name or type(model).__name__)
    else:
        run = open_target(model_name or "lenet5")
        loaded = run.loaded
        name = model_name or "lenet5"
        kind = "zoo" if name in zoo.MODELS else "file"
        source = Source(kind, model_label(name), note="untrained: fresh random weights",
                        zoo_name=name if kind == "zoo" else None)
    if samples is not None:
        found = Samples.from_dataset(samples, getattr(samples, "name", "samples"))
    else:
        from convnet.data import DataError

        try:
            dataset_found = sample_set(loaded.input_shape, dataset, data_dir,
                                       loaded.class_names if source.kind == "run" else None)
        except DataError as error:
            raise ValueError(f"samples: {error}") from None
        found = (Samples.from_dataset(dataset_found, f"test split of {dataset_found.name}")
                 if dataset_found is not None else None)
        if found is not None and source.kind != "run" and loaded.class_names == [
                str(i) for i in range(len(loaded.class_names))] and \
                len(dataset_found.class_names) == len(loaded.class_names):
            loaded.class_names = list(dataset_found.class_names)
    return Explorer(loaded, source, found)


def _note(source: Source, note: str | None) -> Source:
    source.note = note or ""
    return source


class _State:
    """The app's mutable parts: the explorer and the training session, if any."""

    def __init__(self, explorer: Explorer, runs_dir: Path, max_upload_bytes: int,
                 default_dataset: str | None):
        self.explorer = explorer
        self.runs_dir = runs_dir
        self.max_upload_bytes = max_upload_bytes
        self.default_dataset = default_dataset
        self.session: TrainingSession | None = None
        self.watch: FolderWatch | None = None
        self.decode_budget = DecodeBudget()
        self.starting = threading.Lock()  # one POST /api/train at a time checks and starts


def create_app(run_folder=None, *, model=None, model_name: str | None = None,
               input_shape=None, class_names=None, normalization=None,
               dataset: str | None = None, data_dir=None, samples=None,
               runs_dir="runs", max_upload_bytes: int = DEFAULT_MAX_BYTES,
               checkpoint: str = "best", report: bool = True,
               allowed_hosts=None) -> FastAPI:
    """The explorer for a run folder, a Sequential (`model=`), or a zoo model / model file
    (`model_name=`, untrained; lenet5 when nothing is given).

    dataset/data_dir: where sample images come from when not from the run (a Dataset can be
    passed as `samples=`). runs_dir: where runs started from the page are written.
    allowed_hosts: host names answered besides 127.0.0.1, localhost and [::1] ('*' for any);
    see convnet.web.guard. Requests that change state need the header X-Convnet-Token with
    `app.state.token`, which the page receives in its HTML.
    """
    explorer = _explorer_for(run_folder, model, model_name, input_shape, class_names,
                             normalization, dataset, data_dir, samples, checkpoint)
    config = explorer.loaded.config or {}
    default_dataset = dataset or config.get("dataset") or (
        "mnist-5k" if explorer.input_shape[0] == 1 else "cifar10")
    explorer.dataset = default_dataset
    state = _State(explorer, Path(runs_dir), int(max_upload_bytes), default_dataset)
    if explorer.source.kind == "run" and explorer.source.folder:
        state.watch = FolderWatch(explorer, explorer.source.folder)
    # No /docs page: FastAPI's loads its scripts from a CDN, and the explorer needs no network.
    app = FastAPI(title="convnet explorer", docs_url=None, redoc_url=None,
                  lifespan=_lifespan(state))
    app.state.convnet = state
    app.state.token = new_token()
    app.add_middleware(Guard, token=app.state.token, allowed_hosts=allowed_hosts)
    page = (STATIC / "index.html").read_text().replace(
        '<meta name="convnet-token" content="">',
        f'<meta name="convnet-token" content="{app.state.token}">')
    _add_error_handlers(app, state)
    _add_model_routes(app, state)
    _add_training_routes(app, state, report)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/", include_in_schema=False)
    def index():
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    return app


def _lifespan(state: _State):
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        # The server is stopping (Ctrl-C, SIGTERM): a run started from the page finishes its
        # step and saves, as `convnet train` does, instead of dying with the server's threads.
        session = state.session
        if session is not None and session.running:
            session.stop("the explorer is shutting down")
            await asyncio.to_thread(session.join, SHUTDOWN_WAIT_S)

    return lifespan


def _add_error_handlers(app: FastAPI, state: _State) -> None:
    @app.exception_handler(NotFound)
    async def not_found(request: Request, error: NotFound):
        return JSONResponse({"detail": error.args[0] if error.args else "not found"}, 404)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, error: BadRequest):
        return JSONResponse({"detail": str(error)}, 422)

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, error: UploadError):
        return JSONResponse({"detail": error.message}, error.status, headers=error.headers)



def _add_model_routes(app: FastAPI, state: _State) -> None:
    upload_limit = state.max_upload_bytes + 64 * 1024  # room for the multipart framing

    @app.get("/api/model")
    def model_info():
        return state.explorer.info()

    @app.get("/api/samples")
    def samples(offset: int = Query(0, ge=0), limit: int = Query(48, ge=1, le=500)):
        return state.explorer.sample_list(offset, limit)

    @app.get("/api/images/{image_id}.png")
    def image_png(image_id: str, scale: int = Query(1, ge=1, le=16)):
        return Response(state.explorer.image_png(image_id, scale), media_type="image/png",
                        headers={"Cache-Control": "no-store"})

    @app.post("/api/images")
    async def upload(request: Request, convert: bool = True,
                     invert: Literal["auto", "yes", "no"] = "auto",
                     centre: Literal["auto", "yes", "no"] = "auto"):
        """An image file as the multipart form field "file". invert/centre: a dark-on-light
        image is inverted for a model of light strokes on dark, and a digit centred as MNIST's
        are (auto: when the model is such a model); the notes say what was done."""
        limit = state.max_upload_bytes
        if state.decode_budget.full():  # answered before reading the body
            raise busy("all decoding slots taken")
        length = request.headers.get("content-length", "")
        if not length.isdigit():
            raise UploadError(411, "send the upload with a Content-Length header (as browsers "
                              "and HTTP clients do for a form with a file)")
        if int(length) > upload_limit:
            raise UploadError(413, f"the upload is {int(length):,} bytes, more than the "
                              f"{limit:,}-byte limit; send a smaller image")
        try:
            form = await request.form(max_files=1, max_fields=8)
        except StarletteHTTPException as error:  # the multipart parser's 400
            raise UploadError(400, f"the upload is not a readable multipart form "
                              f"({error.detail}); send the image as the field \"file\"") \
                from None
        file = form.get("file")
        if not isinstance(file, StarletteUploadFile):
            await form.close()
            raise UploadError(422, 'no image in the upload: send it as the multipart form '
                              'field "file"')
        content = await file.read(limit + 1)
        await form.close()
        explorer = state.explorer
        image, notes = await asyncio.to_thread(
            decode_upload, content, file.filename, explorer.input_shape, convert=convert,
            max_bytes=limit, budget=state.decode_budget, invert=invert, centre=centre,
            **explorer.input_habits())
        name = Path(file.filename or "upload").name
        image_id = explorer.add_upload(image, name, notes)
        return {"id": image_id, "name": name, "notes": notes, "shape": list(image.shape)}

    @app.get("/api/predict/{image_id}")
    def predict(image_id: str, top_k: int = Query(5, ge=1, le=100), maps: bool = True,
                layers: str | None = None):
        wanted = None if layers is None else [name for name in layers.split(",") if name]
        return state.explorer.predict(image_id, top_k, maps, wanted)

    @app.get("/api/activations/{image_id}")
    def activations(image_id: str, layer: str):
        return state.explorer.activations(image_id, layer)

    @app.get("/api/unit/{image_id}")
    def unit(image_id: str, layer: str, channel: int = Query(0, ge=0),
             row: int = Query(0, ge=0), col: int = Query(0, ge=0)):
        """Inside one output unit: the multiply-adds (conv), the window (pool), the largest
        contributions (fc), the branch (concat)."""
        return state.explorer.unit(image_id, layer, channel, row, col)

    @app.get("/api/network")
    def network(collapsed: str | None = None):
        """The graph model as boxes and arrows; collapsed: block ids, comma separated
        (none given: the default)."""
        blocks = None if collapsed is None else [b for b in collapsed.split(",") if b]
        return state.explorer.network(blocks)

    @app.get("/api/arithmetic")
    def arithmetic(n: int, f: int, s: int = 1, p: int = 0, d: int = 1,
                   transposed: bool = False, output_padding: int = 0):
        """The playground: output size, formula and window positions along one axis, from
        convnet.core.arithmetic (refusals and fixes included)."""
        from convnet.web.playground import PlaygroundError, transposed_play, window_play

        try:
            if transposed:
                return transposed_play(n, f, s, p, d, output_padding)
            return window_play(n, f, s, p, d)
        except PlaygroundError as error:
            raise BadRequest(str(error)) from None

    @app.get("/api/samples/sprite.png")
    def sample_sprite(offset: int = Query(0, ge=0), limit: int = Query(60, ge=1, le=500),
                      scale: int = Query(2, ge=1, le=8)):
        """The thumbnails of /api/samples in one picture (one request instead of one each)."""
        return Response(state.explorer.sprite_png(offset, limit, scale),
                        media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/api/receptive-field")
    def receptive_field(layer: str, row: int = Query(..., ge=0), col: int = Query(..., ge=0)):
        return state.explorer.receptive_field(layer, row, col)

    @app.get("/api/filters/{layer}")
    def filters(layer: str):
        return state.explorer.filters(layer)

    @app.get("/api/explain/{image_id}")
    def explain(image_id: str, class_index: int | None = Query(None, ge=0),
                layer: str | None = None):
        return state.explorer.explain(image_id, class_index, layer)

    @app.get("/api/segment/{image_id}")
    def segment(image_id: str):
        return state.explorer.segment(image_id)

    @app.get("/api/top-images")
    def top_images(layer: str, filter: int = Query(0, ge=0), k: int = Query(8, ge=1, le=64)):
        return state.explorer.top_images(layer, filter, k)


def _training_choices(state: _State) -> dict:
    from convnet import data
    from convnet.io import zoo

    explorer = state.explorer
    models = ["current", *zoo.MODELS]
    datasets = ["current", *data.DATASETS]
    return {"models": models, "datasets": datasets, "default_dataset": state.default_dataset,
            "current_model": explorer.source.name,
            "current_dataset": model_label(Path(state.default_dataset).name)}


def _resolve_training(state: _State, request: TrainRequest):
    """(model for TrainConfig, dataset, label) from a request; only names, never paths."""
    from convnet import data
    from convnet.io import zoo

    explorer = state.explorer
    dataset = state.default_dataset if request.dataset == "current" else request.dataset
    if request.dataset != "current" and request.dataset not in data.DATASETS:
        raise BadRequest(f"unknown dataset {request.dataset!r}; choose 'current' or one of "
                         f"{', '.join(data.DATASETS)}")
    if request.model != "current":
        if request.model not in zoo.MODELS:
            raise BadRequest(f"unknown model {request.model!r}; choose 'current' or one of "
                             f"{', '.join(zoo.MODELS)}")
        return request.model, dataset, request.model
    if explorer.source.zoo_name:
        return explorer.source.zoo_name, dataset, explorer.source.zoo_name
    name = explorer.source.name
    from convnet.io.spec import to_spec

    with explorer.lock:
        spec = to_spec(explorer.model, explorer.input_shape)
    label = re.sub(r"[^A-Za-z0-9_-]", "_", Path(name).stem)[:40] or "model"
    spec["name"] = label
    text = spec_to_toml(spec)
    try:
        state.runs_dir.mkdir(parents=True, exist_ok=True)
        path, index = state.runs_dir / f"{label}-{_stamp()}.toml", 1
        while True:  # created exclusively: a second server in the same second writes beside it
            try:
                with open(path, "x") as stream:
                    stream.write(text)
                break
            except FileExistsError:
                index += 1
                path = path.with_name(f"{label}-{_stamp()}-{index}.toml")
    except OSError as error:
        raise BadRequest(f"cannot write the model file into {state.runs_dir}: "
                         f"{error.strerror}") from None
    return str(path), dataset, label


def _stamp() -> str:
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def _start_training(state: _State, request: TrainRequest, report: bool) -> dict:
    """A new run for POST /api/train (called with state.starting held)."""
    from convnet.training.trainer import TrainConfig, TrainingError

    if state.session is not None and not state.session.finished:
        raise HTTPException(409, "a training run is already in progress; stop it first "
                            "(POST /api/train/stop)")
    model, dataset, label = _resolve_training(state, request)
    config = TrainConfig(model=model, dataset=dataset, epochs=request.epochs,
                         batch_size=request.batch_size, lr=request.lr,
                         optimizer=request.optimizer, val_fraction=request.val_fraction,
                         seed=request.seed)
    try:  # a folder no other run (another server on the same runs folder) has picked
        out_dir = fresh_folder(state.runs_dir / f"web-{label}-{_stamp()}")
    except OSError as error:
        raise BadRequest(f"cannot create a run folder in {state.runs_dir}: "
                         f"{error.strerror}") from None
    callbacks = []
    if report:
        from convnet.viz.report import ReportCallback

        callbacks.append(ReportCallback())
    try:
        session = TrainingSession(state.explorer, config, out_dir, label=label,
                                  callbacks=callbacks)
    except (TrainingError, CheckpointError) as error:
        raise BadRequest(str(error)) from None
    state.session = session
    session.start()
    return session.status()


def _add_training_routes(app: FastAPI, state: _State, report: bool) -> None:
    @app.get("/api/train")
    def train_status():
        session, watch = state.session, state.watch
        return {"session": session.status() if session else None,
                "watch": watch.status() if watch and not session else None,
                "choices": _training_choices(state)}

    @app.post("/api/train", status_code=202)
    def train_start(request: TrainRequest):
        with state.starting:  # two at once would start two runs, one out of the page's reach
            return _start_training(state, request, report)

    @app.post("/api/train/lr")
    def train_lr(request: LearningRate):
        """Change the learning rate of the run in progress (from its next step)."""
        from convnet.training.trainer import TrainingError

        session = state.session
        if session is None or not session.running:
            raise HTTPException(409, "no training run is in progress; the learning rate of a "
                                "new run is set when starting it")
        try:
            session.set_lr(request.lr)
        except TrainingError as error:
            raise BadRequest(str(error)) from None
        return session.status()

    @app.post("/api/train/stop")
    def train_stop():
        session = state.session
        if session is None or not session.running:
            raise HTTPException(409, "no training run is in progress")
        session.stop()
        return session.status()

    @app.get("/api/train/events")
    async def train_events(request: Request, since: int = Query(0, ge=0),
                           timeout: float | None = Query(None, gt=0, le=86400)):
        """The training run's events; for a run folder trained elsewhere, its epochs and
        checkpoints as they appear. `timeout` ends the stream after that many seconds."""
        header = request.headers.get("last-event-id", "")
        last = int(header) if header.isdigit() else since
        return StreamingResponse(_event_stream(state, request, last, timeout),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})


async def _event_stream(state: _State, request: Request, last: int, timeout: float | None):
    session = state.session or state.watch
    if session is None:
        yield sse(0, "idle", {"message": "no training run yet"})
        return
    log: EventLog = session.events
    quiet = 0.0
    ends = None if timeout is None else asyncio.get_running_loop().time() + timeout
    yield "retry: 2000\n\n"
    while True:
        if isinstance(session, FolderWatch):
            await asyncio.to_thread(session.poll)
        events = log.after(last)
        for event_id, name, data in events:
            yield sse(event_id, name, data)
            last = event_id
        if events:
            quiet = 0.0
        if session.finished and not log.after(last):
            return
        if await request.is_disconnected():
            return
        if ends is not None and asyncio.get_running_loop().time() >= ends:
            return
        await asyncio.sleep(POLL_S)
        quiet += POLL_S
        if quiet >= HEARTBEAT_S:
            quiet = 0.0
            yield ": keep-alive\n\n"
