"""The explorer lets in only its own page: a real `convnet serve` on loopback, spoken to with
raw HTTP whose Host and Origin headers are forged as a rebinding or cross-site page's would be;
uploads that would flood its memory are turned away at once; a stopping server saves the run
its page started. The same checks through the test client cover every state-changing endpoint.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convnet.io import checkpoint
from convnet.web import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette asks for httpx2; httpx works the same
    from fastapi.testclient import TestClient

TREE = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`convnet serve --model lenet5` in its own process, on 127.0.0.1:port."""

    def __init__(self, runs: Path, *extra: str):
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": f"{TREE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "convnet", "serve", "--model", "lenet5", "--port",
             str(self.port), "--runs-dir", str(runs), *extra],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _, _ = self.request("GET", "/api/train")
                if status == 200:
                    break
            except OSError:
                pass
            assert self.process.poll() is None, self.process.stderr.read()
            assert time.monotonic() < deadline, "the explorer did not start"
            time.sleep(0.1)
        page = self.request("GET", "/")[2].decode()
        self.token = page.split('name="convnet-token" content="')[1].split('"')[0]

    def request(self, method, path, body=b"", host=None, timeout=30, **headers):
        """(status, headers, body) of one request; Host as given (forged) or 127.0.0.1:port."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            connection.putheader("Host", host or f"127.0.0.1:{self.port}")
            for name, value in headers.items():
                connection.putheader(name.replace("_", "-"), value)
            connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def own(self, method, path, body=b"", **headers):
        """A request as the explorer's own page sends it."""
        return self.request(method, path, body, Origin=f"http://127.0.0.1:{self.port}",
                            Sec_Fetch_Site="same-origin", X_Convnet_Token=self.token, **headers)

    def stop(self, sig=signal.SIGINT, timeout=90) -> tuple[int, str]:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        _, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, err


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    serving = Server(tmp_path_factory.mktemp("served"))
    yield serving
    serving.stop()


def multipart(content: bytes, name: str = "big.png") -> tuple[bytes, str]:
    boundary = "convnet-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\""
            f"\r\nContent-Type: image/png\r\n\r\n").encode() + content + \
        f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


# -- 5. DNS rebinding -----------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["evil.example:{port}", "evil.example", "127.0.0.1.evil.example",
                                  "localhost.evil.example:{port}", ""])
def test_a_rebinding_page_is_refused_on_every_path(server, host):
    host = host.format(port=server.port)
    for method, path in (("GET", "/"), ("GET", "/api/model"), ("GET", "/api/images/val-0.png"),
                         ("GET", "/static/app.js"), ("POST", "/api/train/stop")):
        status, _, body = server.request(method, path, host=host or " ")
        assert status == 421, (method, path, status)
        assert "answers only to 127.0.0.1, ::1, localhost" in json.loads(body)["detail"]


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}",
                                  "[::1]:{port}", "127.0.0.1"])
def test_the_loopback_names_are_served(server, host):
    status, _, body = server.request("GET", "/api/model", host=host.format(port=server.port))
    assert status == 200 and json.loads(body)["input_shape"] == [1, 28, 28]


# -- 6. cross-site requests -----------------------------------------------------------------------

def test_a_cross_site_form_post_cannot_stop_a_run_or_upload(server):
    # What a plain HTML form on another site sends: no token, its own Origin, cross-site.
    form = {"Origin": "http://evil.example", "Sec_Fetch_Site": "cross-site",
            "Content_Type": "application/x-www-form-urlencoded"}
    status, _, body = server.request("POST", "/api/train/stop", b"x=1", **form)
    assert status == 403 and "another site (cross-site)" in json.loads(body)["detail"]
    upload, kind = multipart(png(np.zeros((28, 28), np.uint8)))
    status, _, _ = server.request("POST", "/api/images", upload, Origin="http://evil.example",
                                  Content_Type=kind)
    assert status == 403
    # Older browsers send no Sec-Fetch-Site: the Origin alone is enough to refuse.
    status, _, body = server.request("POST", "/api/train", b'{"epochs": 1}',
                                     Origin="http://evil.example",
                                     Content_Type="application/json")
    assert status == 403 and "from http://evil.example is refused" in json.loads(body)["detail"]
    # A script on another local port (same site, other origin) is refused as well.
    status, _, _ = server.request("POST", "/api/train", b'{"epochs": 1}',
                                  Origin=f"http://127.0.0.1:{server.port + 1}",
                                  Sec_Fetch_Site="same-site", X_Convnet_Token=server.token,
                                  Content_Type="application/json")
    assert status == 403
    # No Origin (curl, a script), but no token: refused.
    status, _, body = server.request("POST", "/api/train/stop")
    assert status == 403 and "X-Convnet-Token" in json.loads(body)["detail"]
    status, _, _ = server.request("POST", "/api/train/stop", X_Convnet_Token="guessed")
    assert status == 403
    # Another site's page cannot make the server compute for it either (an <img> of saliency).
    status, _, _ = server.request("GET", "/api/explain/val-0", Sec_Fetch_Site="cross-site")
    assert status == 403
    # The explorer's own page gets through (409: there is no run to stop).
    status, _, body = server.own("POST", "/api/train/stop")
    assert status == 409 and "no training run" in json.loads(body)["detail"]
    status, _, _ = server.own("POST", "/api/images", upload, Content_Type=kind)
    assert status == 200


def test_the_docs_page_is_off_and_nothing_loads_from_the_internet(server):
    for path in ("/api/docs", "/docs", "/redoc"):
        assert server.request("GET", path)[0] == 404
    page = server.request("GET", "/")[2].decode()
    assert "http://" not in page and "https://" not in page


# -- 7. uploads that would flood the memory -------------------------------------------------------

def png(pixels: np.ndarray) -> bytes:
    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_forty_concurrent_large_uploads_are_bounded_and_answered_quickly(server):
    # A 6300x6300 RGB picture (under the 40M-pixel limit) compresses to a small PNG and
    # decodes to 119 MB; forty of them at once took the server from 0.5 to 6.8 GB.
    pixels = np.zeros((6300, 6300, 3), np.uint8)
    pixels[::7] = 200
    upload, kind = multipart(png(pixels))
    assert len(upload) < 5 * 1024 * 1024
    before = peak_rss_mb(server.process.pid)
    results = []

    def send():
        started = time.monotonic()
        status, headers, _ = server.own("POST", "/api/images", upload, Content_Type=kind,
                                        timeout=120)
        results.append((status, time.monotonic() - started, headers.get("retry-after")))

    threads = [threading.Thread(target=send) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(150)
    statuses = sorted(status for status, _, _ in results)
    assert len(results) == 40 and set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 1 and statuses.count(503) >= 20, statuses
    busy = [seconds for status, seconds, _ in results if status == 503]
    assert sorted(busy)[len(busy) // 2] < 2.0, busy  # turned away at once, not after a queue
    assert all(retry == "1" for status, _, retry in results if status == 503)
    grown = peak_rss_mb(server.process.pid) - before
    assert grown < 600, f"the server's peak memory grew by {grown:.0f} MB"


# -- a stopping server saves the run its page started ---------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stopping_the_server_saves_the_page_started_run(tmp_path, sig):
    serving = Server(tmp_path / "runs")
    try:
        status, _, body = serving.own("POST", "/api/train",
                                      b'{"epochs": 200, "batch_size": 8, "dataset": "mnist-5k"}',
                                      Content_Type="application/json")
        assert status == 202, body
        out = Path(json.loads(body)["out_dir"])
        deadline = time.monotonic() + 60
        while json.loads(serving.request("GET", "/api/train")[2])["session"]["step"] < 3:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        code, err = serving.stop(sig)
    # uvicorn ends by raising the signal again once it has shut down: the status says so.
    assert code in (0, 128 + sig, -sig) and "Traceback" not in err, err
    state = checkpoint.checkpoint_state(out / "checkpoints" / "last.safetensors")
    assert state["global_step"] >= 3, err
    assert "stopped (the explorer is shutting down)" in err


# -- the same checks through the test client, for every state-changing endpoint ---------------

def test_every_state_changing_endpoint_needs_the_token(tmp_path):
    app = create_app(model_name="lenet5", runs_dir=tmp_path)
    posts = [route.path for route in app.routes if "POST" in getattr(route, "methods", ())]
    assert sorted(posts) == ["/api/images", "/api/train", "/api/train/lr", "/api/train/stop"]
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        for path in posts:
            response = client.post(path, json={})
            assert response.status_code == 403, path
            assert "X-Convnet-Token" in response.json()["detail"]
        assert client.get("/api/model", headers={"Host": "attacker.example"}).status_code == 421
        page = client.get("/").text
        assert f'content="{app.state.token}"' in page


def test_allowed_hosts_add_names_and_a_star_allows_any(tmp_path):
    from convnet.cli.serve import allowed_hosts

    assert allowed_hosts("127.0.0.1", False, []) == ([], "")
    assert allowed_hosts("10.0.0.5", True, []) == (["10.0.0.5"], "")
    assert allowed_hosts("0.0.0.0", True, ["lab.example"]) == (["lab.example"], "")
    names, warning = allowed_hosts("0.0.0.0", True, [])
    assert names == ["*"] and "DNS rebinding" in warning
    app = create_app(model_name="lenet5", runs_dir=tmp_path, allowed_hosts=["lab.example"])
    with TestClient(app, base_url="http://lab.example:8000") as client:
        assert client.get("/api/model").status_code == 200
        assert client.get("/api/model", headers={"Host": "other.example"}).status_code == 421
