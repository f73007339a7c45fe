"""`convnet serve`: the local web explorer."""

from __future__ import annotations

import socket
import sys

from convnet.cli import add_command

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "serve", "Open the web explorer of a run (or of a fresh model): layers and "
        "their arithmetic, activation maps and receptive fields, filters, saliency, live "
        "training. Binds to 127.0.0.1 only unless --allow-remote.",
        "convnet serve runs/lenet                 # then open http://127.0.0.1:8000/\n"
        "convnet serve --model lenet5             # an untrained zoo model; train it on the page\n"
        "convnet serve model.onnx                 # an ONNX file, its graph and units\n"
        "convnet serve --model my_model.toml --dataset mnist-5k --port 8001")
    parser.add_argument("run", metavar="RUN_FOLDER", nargs="?", default=None,
                        help="run folder, checkpoint or .onnx file [default: an untrained "
                             "--model]")
    parser.add_argument("--model", default=None,
                        help="zoo name or .toml model file when no run folder is given "
                             "[default: lenet5]")
    parser.add_argument("--dataset", default=None,
                        help="where sample images and page-started training take their data "
                             "[default: the run's own; mnist-5k for gray input]")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--checkpoint", choices=["best", "last"], default="best")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on [default: 127.0.0.1, this machine only]")
    parser.add_argument("--port", type=int, default=8000, help="[default: 8000]")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow a --host other than 127.0.0.1/localhost: anyone who can "
                             "reach it can run models and start training")
    parser.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                        help="a host name the explorer answers to besides 127.0.0.1, "
                             "localhost and [::1] (repeatable); pages that reach it under any "
                             "other name are refused (DNS rebinding)")
    parser.add_argument("--runs-dir", default="runs",
                        help="where runs started from the page are written [default: runs]")
    parser.add_argument("--max-upload-mb", type=float, default=5.0,
                        help="largest accepted image upload [default: 5]")
    parser.set_defaults(func=run_serve)


def check_host(host: str, allow_remote: bool) -> str | None:
    """None for a local address; a warning for another one when allowed; SystemExit otherwise."""
    if host in LOCAL_HOSTS:
        return None
    if not allow_remote:
        print(f"convnet: error: --host {host} would expose the explorer to other machines; "
              f"pass --allow-remote as well if that is what you want", file=sys.stderr)
        raise SystemExit(2)
    return (f"convnet: warning: listening on {host}: anyone who can reach this address can "
            f"look at the model, upload images and start training runs")


def allowed_hosts(host: str, allow_remote: bool, names: list[str]) -> tuple[list[str], str]:
    """The host names the explorer answers to (besides the loopback ones), and a warning."""
    names = list(names)
    if not allow_remote or host in LOCAL_HOSTS:
        return names, ""
    if host not in WILDCARD_HOSTS:
        return [host, *names], ""
    if names:
        return names, ""
    return ["*"], (f"convnet: warning: --host {host} without --allowed-host answers to any host "
                   f"name, so a web page that points its own name at this machine (DNS "
                   f"rebinding) can use the explorer; pass --allowed-host NAME for the names "
                   f"you open it by")


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def run_serve(args) -> int:
    warning = check_host(args.host, args.allow_remote)
    if not 0 < args.port < 65536:
        print(f"convnet: error: --port must be in 1..65535, received {args.port}",
              file=sys.stderr)
        return 2
    if not args.max_upload_mb > 0:
        print(f"convnet: error: --max-upload-mb must be more than 0, received "
              f"{args.max_upload_mb}", file=sys.stderr)
        return 2
    if args.run and args.model:
        print("convnet: error: give a RUN_FOLDER or --model, not both", file=sys.stderr)
        return 2
    import uvicorn

    from convnet.web.app import create_app

    hosts, host_warning = allowed_hosts(args.host, args.allow_remote, args.allowed_host)
    try:
        app = create_app(args.run, model_name=args.model, dataset=args.dataset,
                         data_dir=args.data_dir, checkpoint=args.checkpoint,
                         runs_dir=args.runs_dir,
                         max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                         allowed_hosts=hosts)
    except ValueError as error:
        print(f"convnet: error: {error}", file=sys.stderr)
        return 1
    if not port_free(args.host, args.port):
        print(f"convnet: error: port {args.port} on {args.host} is in use; pass --port "
              f"{args.port + 1} (or stop the other server)", file=sys.stderr)
        return 1
    for text in (warning, host_warning):
        if text:
            print(text, file=sys.stderr)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"convnet explorer: http://{shown}:{args.port}/  (Ctrl-C to stop)", file=sys.stderr,
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
                timeout_graceful_shutdown=2)
    return 0
