"""Files the commands write (`export -o`, `visualize -o`, `report -o`): checked before any work.

A run folder's own files (config.json, metrics.jsonl, .lock and everything under checkpoints/)
are never written over, --force or not; a file name must end in what the command writes; an
existing file is replaced only with --force.
"""

from __future__ import annotations

from pathlib import Path

from convnet.cli import OutputError


def run_file(path: Path) -> tuple[Path, str] | None:
    """(run folder, what the file is to it) when `path` is, or is inside, a run's own files."""
    from convnet.io.checkpoint import CHECKPOINTS, CONFIG, METRICS
    from convnet.io.runlock import LOCK

    path = path.resolve()
    own = {CONFIG: "configuration", METRICS: "metrics log", LOCK: "lock"}
    for folder in path.parents:
        is_run = (folder / CONFIG).is_file() and ((folder / CHECKPOINTS).is_dir() or
                                                  (folder / METRICS).is_file())
        if not is_run:
            continue
        relative = path.relative_to(folder)
        if relative.parts[0] == CHECKPOINTS:
            return folder, "checkpoints"
        if len(relative.parts) == 1 and relative.name in own:
            return folder, own[relative.name]
    return None


def checked_output(name: str, suffixes: tuple[str, ...], *, force: bool, what: str,
                   option: str = "-o", replaceable: Path | None = None) -> Path:
    """The path to write `what` to, or OutputError. `replaceable`: a file the command may
    replace without --force (the report it writes into a run folder by default)."""
    path = Path(name)
    if path.is_dir():
        raise OutputError(f"{option} {name} is a folder; give a file name ending in "
                          f"{suffixes[0]}, e.g. {path / ('out' + suffixes[0])}")
    if path.suffix.lower() not in suffixes:
        raise OutputError(f"{option} {name}: expected a file name ending in "
                          f"{' or '.join(suffixes)} ({what}), received {path.suffix or 'none'}")
    owned = run_file(path)
    if owned is not None:
        folder, kind = owned
        where = ("into the checkpoints folder" if kind == "checkpoints" else f"over the {kind}")
        raise OutputError(f"{option} {name} would write {where} of the run in {folder}; a run's "
                          f"own files are never replaced: choose another file")
    if path.exists() and not force and not (replaceable is not None and
                                            path.resolve() == replaceable.resolve()):
        raise OutputError(f"{option} {name} exists; pass --force to replace it, or choose "
                          f"another file")
    return path


def add_force(parser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="replace the output file if it exists (a run's own config, "
                             "metrics and checkpoints are never replaced)")
