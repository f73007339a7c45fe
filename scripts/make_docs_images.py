"""Regenerate the README's pictures in docs/ from a real training run.

    .venv/bin/python scripts/make_docs_images.py              # trains LeNet-5 on mnist-5k
    .venv/bin/python scripts/make_docs_images.py --run runs/lenet   # reuse a trained run

Writes docs/filters.png, docs/activations.png, docs/curves.png, docs/saliency.png and, when
/usr/bin/chromium is installed, docs/explorer.png (a screenshot of `convnet serve`). Every
PNG is reduced to a palette so that each stays well under 150 KB.
"""

from __future__ import annotations

import argparse
import io
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CHROMIUM = Path("/usr/bin/chromium")
LIMIT = 150 * 1024


def small_png(data: bytes, path: Path, colours: int = 128) -> None:
    """Write PNG bytes as a palette PNG (shrinks screenshots and plots several times)."""
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    image.quantize(colours, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    size = path.stat().st_size
    print(f"{path.relative_to(ROOT)}: {image.width}x{image.height}, {size / 1024:.0f} KB")
    if size > LIMIT:
        print(f"warning: {path.name} is over {LIMIT // 1024} KB", file=sys.stderr)


def train(folder: Path, epochs: int) -> Path:
    from convnet.training.trainer import TrainConfig, Trainer

    run = folder / "lenet5"
    Trainer(TrainConfig(model="lenet5", dataset="mnist-5k", epochs=epochs), run,
            progress=False).fit()
    return run


def pictures(run: Path) -> None:
    from convnet.viz import (
        activations_figure,
        curves_figure,
        figure_png,
        filters_figure,
        grad_cam,
        read_metrics,
        saliency_map,
    )
    from convnet.viz.run import open_run
    from convnet.viz.saliency import explanation_figure

    opened = open_run(run)
    loaded = opened.loaded
    validation = opened.validation()
    small_png(figure_png(filters_figure(loaded.model), dpi=90), DOCS / "filters.png")
    small_png(figure_png(curves_figure(read_metrics(run), title="LeNet-5 on mnist-5k"), dpi=80),
              DOCS / "curves.png")
    index = int((validation.labels == 3).argmax())  # the first 3 of the validation split
    image = validation.images[index]
    x = loaded.preprocess(image[None])
    fig = activations_figure(loaded.model, x, image, max_maps=16,
                             title=f"activation maps of LeNet-5 for a validation "
                                   f"'{loaded.class_names[validation.labels[index]]}'")
    small_png(figure_png(fig, dpi=70), DOCS / "activations.png")
    predicted = int(loaded.scores(image[None])[0].argmax())
    fig = explanation_figure(image, saliency_map(loaded.model, x, predicted),
                             grad_cam(loaded.model, x, predicted), loaded.class_names[predicted])
    small_png(figure_png(fig, dpi=70), DOCS / "saliency.png")


def explorer_screenshot(run: Path) -> None:
    if not CHROMIUM.exists():
        print(f"skipping docs/explorer.png: {CHROMIUM} is not installed", file=sys.stderr)
        return
    import uvicorn
    from playwright.sync_api import sync_playwright

    from convnet.web import create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as runs:
        server = uvicorn.Server(uvicorn.Config(create_app(run, runs_dir=runs), host="127.0.0.1",
                                               port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM),
                args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update"])
            page = browser.new_page(viewport={"width": 1280, "height": 1120})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("body[data-ready='1']")
            page.click("#gallery img[data-id='val-3']")
            page.wait_for_function("document.querySelector('#input-caption').textContent"
                                   ".startsWith('sample 3')")
            page.click("#layers tr[data-layer='conv2']")
            page.click(".map-layer[data-layer='pool2'] .map[data-map='1'] canvas",
                       position={"x": 30, "y": 18})
            page.wait_for_selector("#rf-box", state="visible")
            page.click("#window-play")  # freeze the sliding window for the picture
            page.wait_for_timeout(300)
            small_png(page.screenshot(), DOCS / "explorer.png", colours=96)
            browser.close()
        server.should_exit = True
        thread.join(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None,
                        help="a trained LeNet-5 run folder [default: train one now]")
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    DOCS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        run = args.run or train(Path(folder), args.epochs)
        pictures(run)
        explorer_screenshot(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
