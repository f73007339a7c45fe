"""The package as a user gets it. `python -m build` makes the sdist and, from it, the wheel; on
each Python people have (3.11, 3.12, 3.13) the wheel goes into a fresh virtual environment
outside the source tree, and the README's commands run there from an unrelated folder: the
version, calc, the summary of every zoo model, one epoch of training on the embedded MNIST
sample, ONNX export and import, and the explorer answering its page and assets over HTTP on
loopback. Package data left out of the wheel (the page, the sample) fails here.

Each fresh environment installs convnet's runtime dependencies from the registry, or from
pip's cache once they have been downloaded (`pip cache dir`): about a minute and a half per
Python with a warm cache. The environment of the Python running the tests shares the session's
kernel cache; the other two compile the kernels their training needs from the installed wheel.
All of it runs in a thread from the start of the session (`Early`). `pytest -m "not wheel"`
leaves these tests out.

The interpreters: $CONVNET_TEST_PYTHON_3_12 (and _3_11, _3_13) when set, else python3.12 on
PATH, else pyenv's versions folder ($PYENV_ROOT or ~/.pyenv). One that is not found is skipped
with the reason, or fails when CONVNET_REQUIRE_PYTHONS=1 (CI sets it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pytest

from convnet.core.files import cache_root
from convnet.io import zoo
from convnet.version import __version__

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "convnet"
STATIC = PACKAGE / "web" / "static"
PYTHONS = ("3.11", "3.12", "3.13")

pytestmark = [pytest.mark.slow, pytest.mark.wheel]


def find_python(version: str) -> tuple[str | None, str]:
    """(path, "") of a working pythonX.Y with venv and ensurepip, or (None, why not)."""
    variable = f"CONVNET_TEST_PYTHON_{version.replace('.', '_')}"
    if os.environ.get(variable):
        candidates = [os.environ[variable]]
    else:
        pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
        candidates = [shutil.which(f"python{version}"),
                      *sorted(map(str, pyenv.glob(f"{version}.*/bin/python{version}")))]
    tried = []
    for exe in filter(None, candidates):
        try:
            answer = subprocess.run(
                [exe, "-c", "import sys, venv, ensurepip; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True, text=True, timeout=60)
        except OSError as error:
            tried.append(f"{exe} ({error.strerror})")
            continue
        if answer.returncode == 0 and answer.stdout.strip() == version:
            return exe, ""
        said = (answer.stdout + answer.stderr).strip().splitlines()
        tried.append(f"{exe} ({said[0] if said else f'exit {answer.returncode}'})")
    return None, (f"no working python{version} with venv and ensurepip (tried: "
                  f"{'; '.join(tried) or 'nothing on PATH or under pyenv'}); name one in "
                  f"{variable}=/path/to/python{version}")


class Children:
    """The processes this module starts, so that a session stopped early (Ctrl-C, SIGTERM,
    -x) ends them instead of leaving pip, `convnet train` and `convnet serve` running on:
    `stop` terminates those running and refuses new ones."""

    def __init__(self):
        self.lock, self.running, self.stopping = threading.Lock(), set(), False

    def start(self, args: list[str], **options) -> subprocess.Popen:
        with self.lock:
            if self.stopping:
                raise subprocess.SubprocessError(f"the session is stopping: {args[0]} not run")
            process = subprocess.Popen(args, **options)
            self.running.add(process)
        return process

    def run(self, args: list[str], timeout: float, **options) -> subprocess.CompletedProcess:
        """As subprocess.run(args, capture_output=True, text=True, timeout=timeout)."""
        process = self.start(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             **options)
        try:
            out, err = process.communicate(timeout=timeout)
        except BaseException:
            process.kill()
            process.communicate()
            raise
        finally:
            self.finished(process)
        return subprocess.CompletedProcess(args, process.returncode, out, err)

    def finished(self, process: subprocess.Popen) -> None:
        with self.lock:
            self.running.discard(process)

    def stop(self) -> None:
        """SIGTERM to each (convnet's commands save and end their compile-ahead children),
        SIGKILL to what is still running 20 s later."""
        with self.lock:
            self.stopping = True
            running = list(self.running)
        for process in running:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + 20
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


children = Children()


class Steps:
    """Runs commands in one folder and environment, keeping how long each took."""

    def __init__(self, cwd: Path, env: dict):
        self.cwd, self.env, self.log = cwd, env, []

    def __call__(self, *args, timeout: float = 300) -> str:
        """The command's stdout, or an AssertionError with the command and what it said."""
        started = time.perf_counter()
        done = children.run([str(a) for a in args], cwd=self.cwd, env=self.env,
                            timeout=timeout)
        took = time.perf_counter() - started
        shown = " ".join(Path(str(a)).name if i == 0 else str(a) for i, a in enumerate(args))
        self.log.append(f"{took:6.1f} s  {shown[:100]}")
        assert done.returncode == 0, (
            f"`{shown}` in {self.cwd} exited {done.returncode} after {took:.1f} s\n"
            f"--- stdout ---\n{done.stdout[-3000:]}\n--- stderr ---\n{done.stderr[-3000:]}")
        return done.stdout


def package_files() -> set[str]:
    """Every file of the source package as a wheel names it, caches left out."""
    return {path.relative_to(ROOT).as_posix() for path in PACKAGE.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts}


def git_untracked() -> set[str] | None:
    """Files git shows as new in the source tree (ignored ones left out); None outside git."""
    try:
        done = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain",
                               "--untracked-files=all"], capture_output=True, text=True,
                              timeout=60)
    except OSError:
        return None
    if done.returncode != 0:
        return None
    return {line[3:] for line in done.stdout.splitlines() if line.startswith("??")}


class Built(NamedTuple):
    folder: Path  # the sdist and the wheel
    left_in_tree: set[str] | None  # new files the build left in the source tree, for git


def build_dist(out: Path) -> Built:
    """The sdist and the wheel, built as `python -m build` builds them (wheel from the sdist)."""
    try:
        import build  # noqa: F401
    except ImportError:
        pytest.fail("the `build` package is missing from this environment: "
                    "pip install -e '.[dev]' (make test does)")
    before = git_untracked()
    Steps(out, dict(os.environ))(sys.executable, "-m", "build", "--outdir", out, ROOT,
                                 timeout=600)
    after = git_untracked()
    return Built(out, None if before is None or after is None else after - before)


class Early:
    """This module's work (the build, then each Python's check) in a thread of its own from
    the start of the session (conftest.py starts it when these tests are selected): most of it
    waits on pip and on processes, and the rest of the suite leaves a core idle for much of
    its time. The fixtures take its results."""

    def __init__(self, root: Path, check: bool):
        self.built, self.outcomes = Future(), Future()
        self.thread = threading.Thread(target=self._run, args=(root, check), daemon=True)
        self.thread.start()

    def _run(self, root: Path, check: bool) -> None:
        try:
            (root / "dist").mkdir()
            built = build_dist(root / "dist")
        except BaseException as error:  # noqa: BLE001 (both fixtures raise it)
            self.built.set_exception(error)
            self.outcomes.set_exception(error)
            return
        self.built.set_result(built)
        if not check:  # (only the build's tests selected)
            self.outcomes.cancel()
            return
        try:
            self.outcomes.set_result(check_every_python(built.folder, root))
        except BaseException as error:  # noqa: BLE001
            self.outcomes.set_exception(error)


early: list[Early] = []


def start_early(root: Path, selected: list[str]) -> None:
    """Start this module's work in folders under root; the Pythons' checks only where
    `selected` (the names of this module's tests the session runs) holds their test."""
    early.append(Early(root, any(name.startswith(
        test_the_wheel_installed_in_a_fresh_environment_runs_the_commands.__name__)
        for name in selected)))


def stop_early() -> None:
    """At the end of a session, or its interruption: what is still running is ended, and the
    thread waited for."""
    children.stop()
    for started in early:
        started.thread.join()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    if early:
        return early[0].built.result()
    return build_dist(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def dist(built) -> Path:
    return built.folder


def the_one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {folder}, found {found}"
    return found[0]


def test_the_wheel_and_the_sdist_carry_every_file_of_the_package(dist):
    wheel = the_one(dist, "convnet-*.whl")
    sdist = the_one(dist, "convnet-*.tar.gz")
    assert wheel.name == f"convnet-{__version__}-py3-none-any.whl"
    assert sdist.name == f"convnet-{__version__}.tar.gz"
    expected = package_files()
    assert {"convnet/data/samples/mnist_5k.csv.gz", "convnet/data/samples/README.md",
            "convnet/web/static/index.html"} <= expected
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(f"convnet-{__version__}.dist-info/METADATA").decode()
    assert expected - names == set(), "files of convnet/ missing from the wheel"
    assert f"\nVersion: {__version__}\n" in metadata
    assert "\nLicense-Expression: MIT AND CC-BY-SA-3.0\n" in metadata
    assert f"convnet-{__version__}.dist-info/licenses/convnet/data/samples/README.md" in names
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert expected - in_sdist == set(), "files of convnet/ missing from the sdist"


def test_building_leaves_nothing_new_for_git_and_the_outputs_are_ignored(built):
    if built.left_in_tree is None:
        pytest.skip(f"{ROOT} is not a git checkout")
    assert built.left_in_tree == set(), "build outputs that .gitignore does not cover"
    outputs = [".venv/", "build/", "dist/", "convnet.egg-info/", ".venv/pip.log"]
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", *outputs],
                             capture_output=True, text=True, timeout=60)
    assert ignored.stdout.split() == outputs


PORT_ATTEMPTS = 5


def _get(base: str, path: str) -> bytes:
    with urllib.request.urlopen(base + path, timeout=30) as response:
        assert response.status == 200, f"GET {path}: {response.status}"
        return response.read()


def _first_page(server, base: str, log: Path) -> str | None:
    """The page at base/ once the server answers (90 s at most), or None where it exited
    because its port was in use; any other exit fails."""
    deadline = time.monotonic() + 90
    while True:
        if server.poll() is not None:
            text = log.read_text()
            assert "is in use" in text, f"convnet serve exited {server.returncode}:\n{text}"
            return None
        try:
            return _get(base, "/").decode()
        except OSError:
            assert time.monotonic() < deadline, \
                f"no answer on {base}/ in 90 s:\n{log.read_text()}"
            time.sleep(0.3)


def _stop(server: subprocess.Popen) -> None:
    """SIGINT (the server's own shutdown), SIGKILL 30 s later if it still runs."""
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    children.finished(server)


def serve_and_fetch(convnet: Path, run_folder: str, steps: Steps) -> None:
    """`convnet serve` on a free loopback port: the page, every asset it names (the same bytes
    as in the source tree), the model, the sample digits and one of them as a PNG. A port
    found free can be taken before the server binds it (the other Pythons' runs open
    connections meanwhile): where the server says so, it starts again on another."""
    log = steps.cwd / "serve.log"
    started = time.perf_counter()
    for _ in range(PORT_ATTEMPTS):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        with open(log, "wb") as sink:
            server = children.start([str(convnet), "serve", run_folder, "--port", str(port)],
                                    cwd=steps.cwd, env=steps.env, stdout=sink,
                                    stderr=subprocess.STDOUT)
        try:
            page = _first_page(server, base, log)
        except BaseException:
            _stop(server)
            raise
        if page is not None:
            break
        children.finished(server)  # it exited: the port was taken
    else:
        raise AssertionError(f"{PORT_ATTEMPTS} ports taken before the server bound them:\n"
                             f"{log.read_text()}")
    try:
        def get(path: str) -> bytes:
            return _get(base, path)

        assets = re.findall(r'(?:src|href)="/static/([^"]+)"', page)
        assert sorted(assets) == sorted(p.name for p in STATIC.iterdir() if p.is_file()
                                        and p.name != "index.html")
        for name in assets:
            assert get(f"/static/{name}") == (STATIC / name).read_bytes(), name
        assert json.loads(get("/api/model"))["input_shape"] == [1, 28, 28]
        samples = json.loads(get("/api/samples"))  # digits of the embedded sample
        assert samples["count"] > 0
        assert get(f"/api/images/{samples['items'][0]['id']}.png")[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        _stop(server)
    steps.log.append(f"{time.perf_counter() - started:6.1f} s  convnet serve {run_folder} "
                     f"--port {port}: /, {len(assets)} assets, /api/model, /api/samples, a PNG")


def check_installed_wheel(python: str, wheel: Path, tmp: Path, shared_cache: bool = False
                          ) -> list[str]:
    """Installs the wheel into a fresh environment under tmp and runs the commands there;
    the steps and how long each took, or an AssertionError. shared_cache: convnet's cache
    folder is this session's (the same Python and Numba: a kernel module either compiles, the
    other loads, each under its lock), else a fresh one."""
    venv = tmp / "venv"
    elsewhere = tmp / "elsewhere"  # an unrelated folder: no convnet source in sight
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env.update(CONVNET_CACHE=str(cache_root() if shared_cache else tmp / "cache"),
               MPLCONFIGDIR=str(tmp / "mpl"))
    steps = Steps(elsewhere, env)
    steps(python, "-m", "venv", venv, timeout=300)
    python = venv / "bin" / "python"
    convnet = venv / "bin" / "convnet"
    # --no-compile: the dependencies' .pyc files are not what is tested here, and writing them
    # took 14 s of a 32 s install on this 2-core machine.
    steps(python, "-m", "pip", "install", "--quiet", "--no-compile",
          "--disable-pip-version-check", wheel, timeout=1800)

    where = steps(python, "-c", "import importlib.metadata as m, convnet; "
                  "print(convnet.__file__, convnet.__version__, m.version('convnet'))").split()
    assert Path(where[0]).is_relative_to(venv), where
    assert where[1:] == [__version__, __version__], where
    assert steps(convnet, "--version").strip() == f"convnet {__version__}"
    assert "output   32x32x10" in steps(convnet, "calc", "32x32x3", "--filter", "5",
                                        "--stride", "1", "--pad", "2", "--filters", "10")
    listed = json.loads(steps(convnet, "models", "--json"))
    assert [m["name"] for m in listed] == zoo.names()
    for entry in listed:
        assert f"Total params: {entry['params']:,}" in steps(convnet, "summary", entry["name"])

    steps(convnet, "train", "--model", "lenet5", "--dataset", "mnist-5k", "--epochs", "1",
          "--out", "run", "--no-progress", timeout=900)
    assert len((elsewhere / "run" / "metrics.jsonl").read_text().splitlines()) == 1
    assert "wrote model.onnx" in steps(convnet, "export", "run", "-o", "model.onnx")
    assert "-> imported" in steps(convnet, "import", "model.onnx", "-o", "imported")
    assert "Total params: 61,706" in steps(convnet, "summary", "imported")

    serve_and_fetch(convnet, "run", steps)
    return steps.log


def check_every_python(dist: Path, root: Path) -> dict[str, tuple[str, str]]:
    """Each Python's check, the three at once (most of each is waiting on pip and on one
    process), in folders under root: version -> ("passed", steps), ("skipped", why) or
    ("failed", what)."""
    wheel = the_one(dist, "convnet-*.whl")
    # The environment of this session's Python shares its kernel cache (what either compiles,
    # the other loads): the other two compile every kernel their training needs from the
    # installed wheel (two minutes each on two cores).
    this_python = f"{sys.version_info[0]}.{sys.version_info[1]}"

    def one(version: str) -> tuple[str, str]:
        python, why_not = find_python(version)
        if python is None:
            return "skipped", why_not
        folder = root / f"py{version}"
        folder.mkdir()
        try:
            steps = check_installed_wheel(python, wheel, folder,
                                          shared_cache=version == this_python)
        except (AssertionError, OSError, subprocess.SubprocessError) as error:
            return "failed", f"{type(error).__name__}: {error}"
        return "passed", "\n".join(steps)

    with ThreadPoolExecutor(len(PYTHONS)) as pool:
        return dict(zip(PYTHONS, pool.map(one, PYTHONS), strict=True))


@pytest.fixture(scope="module")
def outcomes(dist, tmp_path_factory) -> dict[str, tuple[str, str]]:
    if early:
        return early[0].outcomes.result()
    return check_every_python(dist, tmp_path_factory.mktemp("pythons"))


@pytest.mark.parametrize("version", PYTHONS)
def test_the_wheel_installed_in_a_fresh_environment_runs_the_commands(version, outcomes):
    state, text = outcomes[version]
    if state == "skipped":
        if os.environ.get("CONVNET_REQUIRE_PYTHONS") == "1":
            pytest.fail(text)
        pytest.skip(text)
    print(f"Python {version}:\n{text}")  # each step and its time, shown by pytest -s
    assert state == "passed", f"Python {version}: {text}"
