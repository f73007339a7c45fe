"""Regenerate the README's pictures in docs/ from a real training run.

    .venv/bin/python scripts/make_docs_images.py              # trains LeNet-5 on mnist-5k
    .venv/bin/python scripts/make_docs_images.py --run runs/lenet   # reuse a trained run

Writes docs/filters.png, docs/activations.png, docs/curves.png, docs/saliency.png and, when
/usr/bin/chromium is installed, screenshots of `convnet serve`: docs/explorer.png (the page),
docs/unit.png (inside one unit), docs/playground.png and docs/network.png (a graph model); it
prints the page's first load time. Every PNG is reduced to a palette so that each stays well
under 150 KB.
"""

from __future__ import annotations

import argparse
import io
import os
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
                             class_names=loaded.class_names,
                             title=f"activation maps of LeNet-5 for a validation "
                                   f"'{loaded.class_names[validation.labels[index]]}'")
    small_png(figure_png(fig, dpi=70), DOCS / "activations.png")
    predicted = int(loaded.scores(image[None])[0].argmax())
    fig = explanation_figure(image, saliency_map(loaded.model, x, predicted),
                             grad_cam(loaded.model, x, predicted), loaded.class_names[predicted])
    small_png(figure_png(fig, dpi=70), DOCS / "saliency.png")


def _serve(app):
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)

    def stop():
        server.should_exit = True
        thread.join(10)

    return f"http://127.0.0.1:{port}/", stop


def _clip(page, first: str, last: str, margin: int = 8) -> dict:
    """The page area from the top of one element to the bottom of another (for a full-page
    screenshot: in page coordinates)."""
    top, bottom = page.locator(first).bounding_box(), page.locator(last).bounding_box()
    scroll_x, scroll_y = page.evaluate("[window.scrollX, window.scrollY]")  # boxes: viewport
    left = min(top["x"], bottom["x"]) - margin
    right = max(top["x"] + top["width"], bottom["x"] + bottom["width"]) + margin
    return {"x": max(left + scroll_x, 0), "y": max(top["y"] + scroll_y - margin, 0),
            "width": right - left,
            "height": bottom["y"] + bottom["height"] - top["y"] + 2 * margin}


def explorer_screenshots(run: Path) -> None:
    """docs/explorer.png (the page), docs/unit.png (inside a unit of conv2), docs/playground.png
    and docs/network.png (a graph model); prints the first load time of the page."""
    if not CHROMIUM.exists():
        print(f"skipping the explorer's pictures: {CHROMIUM} is not installed", file=sys.stderr)
        return
    from playwright.sync_api import sync_playwright

    from convnet.web import create_app

    with tempfile.TemporaryDirectory() as runs, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update"])
        url, stop = _serve(create_app(run, runs_dir=runs))
        page = browser.new_page(viewport={"width": 1280, "height": 1120})
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']")
        page.click("#gallery img[data-id='val-3']")
        page.wait_for_function("document.querySelector('#input-caption').textContent"
                               ".startsWith('sample 3')")
        page.click("#layers tr[data-layer='conv2']")
        page.click(".map-layer[data-layer='pool2'] .map[data-map='1'] canvas",
                   position={"x": 30, "y": 18})
        page.wait_for_selector("#rf-box", state="visible")
        page.click("#window-play")  # freeze the sliding window for the picture
        page.evaluate("window.scrollTo(0, 0)")
        page.wait_for_timeout(300)
        small_png(page.screenshot(), DOCS / "explorer.png", colours=96)

        # Inside a unit of conv2: its 6 depth slices, the window on pool1, the field.
        page.click(".map-layer[data-layer='conv2'] .map[data-map='4'] canvas",
                   position={"x": 25, "y": 25})
        page.wait_for_selector("#unit-panel[data-layer='conv2']")
        page.locator("#unit-panel .unit-slice[data-channel='2'] td[data-u='2'][data-v='2']") \
            .first.hover()
        page.locator(".map-layer[data-layer='conv2']").scroll_into_view_if_needed()
        page.wait_for_timeout(200)
        small_png(page.screenshot(full_page=True, clip=_clip(
            page, ".map-layer[data-layer='conv2']", "#unit-panel")), DOCS / "unit.png",
            colours=128)

        # The playground on a window that does not fit: the engine's refusal and fixes.
        for name, value in (("n", 7), ("f", 3), ("s", 3), ("p", 0), ("d", 1)):
            page.fill(f"#pg-{name}", str(value))
        page.wait_for_selector("#pg-error:not([hidden])")
        page.click("#pg-step")
        page.locator("#playground-panel").scroll_into_view_if_needed()
        small_png(page.locator("#playground-panel").screenshot(), DOCS / "playground.png")

        timings = []
        for _ in range(5):
            fresh = browser.new_page(viewport={"width": 1280, "height": 1120})
            fresh.goto(url)
            fresh.wait_for_selector("body[data-ready='1']")
            timings.append(float(fresh.get_attribute("body", "data-ready-at")))
            fresh.close()
        timings.sort()
        print(f"first load of the LeNet-5 page to ready, loopback: median {timings[2]:.0f} ms "
              f"(5 loads: {', '.join(f'{t:.0f}' for t in timings)}; load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
        page.close()
        stop()

        # A graph model: inception-mini's network, one module open, a concatenation chosen.
        url, stop = _serve(create_app(model_name="inception-mini", dataset="mnist-5k",
                                      runs_dir=runs))
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']")
        page.click("#network-collapse")
        page.wait_for_selector("#network-svg g.node.block[data-id='block2']")
        page.fill("#network-search", "mixed4a_concat")
        page.press("#network-search", "Enter")  # opens the mixed4a module, selects its concat
        page.wait_for_selector(".map-layer[data-layer='mixed4a_concat'] .map canvas")
        page.evaluate("centreOn('mixed4a_3x3')")
        for _ in range(2):
            page.click("#network-zoom-out")  # the whole module in view
        page.wait_for_timeout(200)
        small_png(page.locator("#network-panel").screenshot(), DOCS / "network.png")
        browser.close()
        stop()


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
        explorer_screenshots(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
