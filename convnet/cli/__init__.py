"""The `convnet` command: train, evaluate, predict, summarize and calculate from the shell.

Exit codes follow Unix habits: 0 success, 1 failure (a clear message on stderr), 2 usage
error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from convnet.training.user_errors import user_errors

# Subcommand modules, each with register(subparsers); imported lazily by name so that
# `convnet --help` stays fast.
COMMAND_MODULES = [
    "convnet.cli.train",
    "convnet.cli.evaluate",
    "convnet.cli.inspect",
    "convnet.cli.demo",
]
OPTIONAL_COMMAND_MODULES = [
    "convnet.cli.onnx",
    "convnet.cli.visualize",
    "convnet.cli.serve",
]


class OutputError(ValueError):
    """An output path a command refuses (convnet.cli.outputs); the message says what to pass."""


class ArgumentError(ValueError):
    """An argument value the command cannot use; the message says what it accepts."""


def require(ok: bool, message: str) -> None:
    """A command's check of its own arguments: one line and exit 1 when `ok` is false."""
    if not ok:
        raise ArgumentError(message)


class ExampleFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of examples in epilogs."""


def build_parser() -> argparse.ArgumentParser:
    from convnet.version import __version__

    parser = argparse.ArgumentParser(
        prog="convnet", formatter_class=ExampleFormatter,
        description="Convolutional networks you can see through (CS231n lecture 5).",
        epilog="examples:\n  convnet demo\n  convnet calc 32x32x3 --filter 5 --stride 1 --pad 2 "
               "--filters 10\n  convnet train --model lenet5 --epochs 5\n"
               "  convnet summary lenet5\n\nRun `convnet COMMAND --help` for each command.")
    parser.add_argument("--version", action="version", version=f"convnet {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    for name in OPTIONAL_COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name and name.startswith(error.name):
                continue  # that part of convnet is not installed in this tree
            raise
        module.register(subparsers)
    return parser


def add_command(subparsers, name: str, help_text: str, example: str) -> argparse.ArgumentParser:
    """A subcommand whose --help ends with a worked example."""
    return subparsers.add_parser(name, help=help_text, description=help_text,
                                 epilog="example:\n  " + example.strip().replace("\n", "\n  "),
                                 formatter_class=ExampleFormatter)


def add_cache_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", default=None,
                        help="where downloaded datasets are kept [default: $CONVNET_CACHE or "
                             "~/.cache/convnet]")


def apply_cache_dir(args) -> None:
    if getattr(args, "cache_dir", None):
        os.environ["CONVNET_CACHE"] = args.cache_dir


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    apply_cache_dir(args)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("convnet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0  # `convnet models | head`: the reader left, nothing is wrong
    except (*user_errors(), OutputError, ArgumentError, OSError) as error:
        message = str(error)
        if isinstance(error, OSError) and error.filename:
            message = f"{error.filename}: {error.strerror}"
        print(f"convnet: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
