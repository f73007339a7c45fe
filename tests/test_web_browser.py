"""The explorer end to end in a real headless Chromium (Debian's /usr/bin/chromium driven by
Playwright): load the page, upload an image and read the prediction, click a layer and a unit
and see its receptive field, start training and watch the live updates, stop a run.

Screenshots go to tests/screenshots/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_web_support import make_run, png_bytes
from tiny_data import bar_image

from convnet.io.checkpoint import load

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"]
SCREENSHOTS = Path(__file__).parent / "screenshots"
TIMEOUT_MS = 20_000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(browser, tmp_path_factory):
    import uvicorn

    from convnet.web import create_app

    base = tmp_path_factory.mktemp("browser")
    run = make_run(base)
    app = create_app(run, runs_dir=base / "runs", report=False)
    port = free_port()
    uvicorn_server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                                   log_level="warning",
                                                   timeout_graceful_shutdown=1))
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not uvicorn_server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the explorer server did not start")
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}/", "run": run}
    uvicorn_server.should_exit = True
    thread.join(10)


@pytest.fixture
def page(browser, server):
    SCREENSHOTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    problems = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda message: problems.append(f"console: {message.text}")
            if message.type == "error" else None)
    page.goto(server["url"])
    page.wait_for_selector("body[data-ready='1']")
    page.problems = problems
    yield page
    page.close()


def box(page, selector):
    return page.locator(selector).bounding_box()


def test_upload_predict_layer_arithmetic_and_receptive_field(page, server):
    # Served from a run folder, the page follows it (as if `convnet train` were writing it).
    page.wait_for_function("document.querySelector('#train-status').textContent"
                           ".startsWith('watching')")
    page.wait_for_function("document.querySelector('#train-step').textContent === 'epoch 3 / 3'")
    assert page.locator("#acc-chart circle.val-dot").count() == 3
    rows = page.locator("#layers tbody tr")
    assert rows.count() == 7
    assert page.locator("#layers tr[data-layer='conv1'] td").nth(2).inner_text() == \
        "4 x (3*3*1 + 1) = 40"
    assert page.locator("#gallery img").count() == 10
    page.screenshot(path=str(SCREENSHOTS / "explorer-loaded.png"), full_page=True)

    image = bar_image("vertical", 6, np.random.default_rng(3))
    page.set_input_files("#upload-input", files=[{"name": "vbar.png", "mimeType": "image/png",
                                                  "buffer": png_bytes(image)}])
    page.wait_for_function("document.querySelector('#input-caption').textContent"
                           ".startsWith('vbar.png')")
    loaded = load(server["run"])
    probabilities = loaded.predict_proba(image[None, None])[0]
    best = int(probabilities.argmax())
    assert page.inner_text("#prediction li.top1 .name") == loaded.class_names[best]
    shown = page.inner_text("#prediction li.top1 .p").rstrip("%")
    # The page gives one decimal, or none at or above 99.5% (app.js pct): "99.7%" reads "100%".
    decimals = len(shown.partition(".")[2])
    assert decimals == (0 if probabilities[best] >= 0.995 else 1)
    assert float(shown) == pytest.approx(100 * probabilities[best], abs=0.5 * 10**-decimals + 0.01)
    assert page.locator(".map-layer").count() == 7

    page.click("#layers tr[data-layer='conv1']")
    assert "(12 - 3 + 2*1)/1 + 1 = 12" in page.inner_text("#arithmetic")
    assert "N = 12, F = 3, S = 1, P = 1" in page.inner_text("#arithmetic")
    assert page.locator("#window-svg #window-rect").count() == 1
    assert page.locator("#layers tr.selected").get_attribute("data-layer") == "conv1"

    # pool1 maps are 6x6 drawn 10 pixels per unit: (35, 5) is unit (row 0, col 3).
    page.click(".map-layer[data-layer='pool1'] .map[data-map='0'] canvas",
               position={"x": 35, "y": 5})
    page.wait_for_selector("#rf-box", state="visible")
    caption = page.inner_text("#rf-caption")
    assert "pool1 map 0, unit (0, 3) sees input rows -1…2, cols 5…8 (4×4)" in caption
    frame, rf = box(page, "#input-frame"), box(page, "#rf-box")
    pixel = frame["width"] / 12
    assert rf["x"] - frame["x"] == pytest.approx(5 * pixel, abs=2)
    assert rf["y"] - frame["y"] == pytest.approx(0, abs=2)
    assert rf["width"] == pytest.approx(4 * pixel, abs=2)
    assert rf["height"] == pytest.approx(3 * pixel, abs=2)  # the row above is padding
    assert page.locator(".map-layer[data-layer='pool1'] .map[data-map='0'] .unit").count() == 1
    assert page.locator("#layers tr.selected").get_attribute("data-layer") == "pool1"
    assert page.get_attribute("#saliency-img", "src").startswith("data:image/png;base64,")
    page.click("#filters-grid .filter[data-index='1']")
    page.wait_for_selector("#top-images figure img")
    page.locator("#input-panel").scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "explorer-receptive-field.png"), full_page=True)
    assert page.problems == []


def test_a_bad_upload_shows_the_reason_and_the_page_keeps_working(page):
    page.set_input_files("#upload-input", files=[{"name": "notes.png", "mimeType": "image/png",
                                                  "buffer": b"not an image at all"}])
    page.wait_for_selector("#error-banner", state="visible")
    assert "notes.png is not an image Pillow can read" in page.inner_text("#error-banner")
    page.screenshot(path=str(SCREENSHOTS / "explorer-upload-error.png"))
    page.click("#gallery img[data-id='val-2']")
    page.wait_for_function("document.querySelector('#input-caption').textContent"
                           ".startsWith('sample 2')")
    assert [p for p in page.problems if "422" not in p] == []  # the refused upload only


def test_live_training_updates_and_stop(page):
    page.fill("#train-epochs", "3")
    page.fill("#train-batch", "4")
    page.click("#train-start")
    page.wait_for_function("document.querySelector('#train-status').textContent"
                           ".startsWith('finished')")
    assert page.inner_text("#train-step").endswith("(epoch 3)")
    assert page.locator("#loss-chart path.train").count() == 1
    assert page.locator("#acc-chart circle.val-dot").count() == 3
    assert page.inner_text("#val-acc").endswith("%")
    page.wait_for_function("document.querySelector('#model-badge').textContent"
                           ".startsWith('run web-tiny-')")
    assert "epoch 3/3  train loss" in page.inner_text("#train-log")
    page.locator("#training-panel").scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "explorer-training.png"), full_page=True)

    page.fill("#train-epochs", "200")
    page.fill("#train-batch", "2")
    page.click("#train-start")
    page.wait_for_function("/^\\d+ \\//.test(document.querySelector('#train-step').textContent)"
                           " && document.querySelector('#train-status').textContent"
                           ".startsWith('training')")
    page.click("#train-stop")
    try:
        page.wait_for_function("document.querySelector('#train-status').textContent"
                               ".startsWith('stopped')")
    except Exception:
        print("STATUS", page.inner_text("#train-status"), page.inner_text("#train-step"),
              page.inner_text("#error-banner"), page.problems, page.inner_text("#train-log"))
        raise
    assert page.is_enabled("#train-start") and not page.is_enabled("#train-stop")
    assert page.problems == []
