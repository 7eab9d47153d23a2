"""Checkpoints: atomic writes, safe loading, retention.

Format
------
A checkpoint is a ``torch.save`` zip file holding **only tensors and plain containers**
(dict, list, tuple, str, int, float, bool, None), loaded back with
``torch.load(weights_only=True)``. The restricted unpickler of ``weights_only`` refuses any other
Python object, so opening a checkpoint can never execute code; a file that tries is reported as
a :class:`CheckpointError`. Only files with the zip header reach ``torch.load``: random bytes and
raw pickles are described from their :mod:`pickletools` opcodes (read, never run), and no message
suggests ``weights_only=False``. The top-level mapping is::

    format        "tensorfield.checkpoint"
    version       1
    method        registered method name
    model         model.state_dict()               (tensors)
    shape_state   json.dumps(model.shape_state())  (str; see Field.prepare_for_state)
    optimizer     optimizer.state_dict()           (tensors + plain containers)
    trainer       trainer state (step, schedule base step, RNG states as uint8 tensors,
                  batch-source state, ...; see Trainer.trainer_state)
    config        the resolved config as a plain dict
    torch_version str

Models therefore must not put arbitrary Python objects into their ``state_dict`` (e.g. through
``get_extra_state``); structure goes into :meth:`Field.shape_state` as JSON.

Writes are atomic: the payload goes to a temporary file in the destination directory, is
flushed and fsync'ed, then renamed over the destination with :func:`os.replace`; a crash at any
point leaves earlier checkpoints untouched and no partial ``step_*.ckpt``. Run directories keep
their checkpoints as ``checkpoints/step_NNNNNN.ckpt``; after each write the oldest are deleted so
that ``config.keep_checkpoints`` remain (never the one just written; ``0`` keeps all).

Choosing: :func:`resolve_checkpoint` maps a run and ``--checkpoint step_N`` (or a path) to a file;
:func:`open_checkpoint` loads it and, if it is unreadable, either falls back to the newest readable
earlier one (a resume) or raises one line naming the intact earlier ones (eval, render, export).
"""

from __future__ import annotations

import json
import os
import pickle
import pickletools
import re
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from tensorfield.engine.config import config_to_dict

FORMAT = "tensorfield.checkpoint"
VERSION = 1
CHECKPOINT_DIR = "checkpoints"
_STEP_NAME = re.compile(r"^step_(\d+)\.ckpt$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read, described in one line naming the file."""


def checkpoint_name(step: int) -> str:
    """File name of the checkpoint written after ``step`` optimisation steps."""
    return f"step_{step:06d}.ckpt"


def save_checkpoint(path: str | os.PathLike, *, model, optimizer, trainer_state: dict, config) -> Path:
    """Write a checkpoint atomically and prune old ones beside it.

    Args:
        path: destination file. If its name is ``step_NNNNNN.ckpt``, older ``step_*.ckpt`` files
            in the same directory beyond ``config.keep_checkpoints`` are deleted afterwards.
        model: the :class:`~tensorfield.fields.base.Field` (its ``state_dict`` and ``shape_state``).
        optimizer: a ``torch.optim.Optimizer`` or ``None``.
        trainer_state: plain containers and tensors only (see module docstring).
        config: the resolved method config.

    Returns:
        The written path.

    Raises:
        CheckpointError: the file could not be written (earlier checkpoints are intact).
    """
    path = Path(path)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "method": str(config.method),
        "model": model.state_dict(),
        "shape_state": json.dumps(model.shape_state()),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "trainer": trainer_state,
        "config": config_to_dict(config),
        "torch_version": str(torch.__version__),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot write checkpoint ({_one_line(err)})") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise CheckpointError(f"{path}: cannot write checkpoint ({_one_line(err)})") from None
        raise
    _fsync_directory(path.parent)
    keep = int(config.keep_checkpoints or 0)
    if _STEP_NAME.match(path.name) and keep > 0:
        prune_checkpoints(path.parent, keep, protect=path)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors on the CPU).

    The file is inspected before ``torch.load`` sees it: anything that is not a zip archive (what
    ``torch.save`` writes) is reported without being unpickled, and a raw pickle is scanned with
    :mod:`pickletools` (which reads opcodes, never runs them) to say whether it would need
    executing code. No message ever suggests loading with ``weights_only=False``.

    Raises:
        CheckpointError: missing, empty, truncated or corrupt file, a file holding pickled Python
            objects (refused, never executed), or not a tensorfield checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with path.open("rb") as handle:
            head = handle.read(len(_ZIP_MAGIC))
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read checkpoint ({_one_line(err)})") from None
    if not head:
        raise CheckpointError(f"{path}: corrupt checkpoint (empty file)")
    if head != _ZIP_MAGIC:
        raise CheckpointError(f"{path}: {_describe_foreign(path)}")
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols of foreign files; the error below says it all
            warnings.simplefilter("ignore", UserWarning)
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        culprit = re.search(r"GLOBAL ([\w.]+)", text)
        if culprit or re.search(r"\bglobal\b", text, re.IGNORECASE):
            what = f" ({culprit.group(1)})" if culprit else ""
            raise CheckpointError(f"{path}: {_REFUSED}{what}; {_ONLY_DATA}") from None
        raise CheckpointError(f"{path}: corrupt checkpoint (its pickled data cannot be read)") from None
    except Exception:  # noqa: BLE001 - any failure to parse the archive means a damaged file
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint (the zip archive cannot be read)") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a tensorfield checkpoint (a torch file of another program)")
    if data.get("version") != VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint version {data.get('version')!r} (expected {VERSION})")
    missing = [key for key in ("model", "shape_state", "trainer", "config") if key not in data]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    try:
        data["shape_state"] = json.loads(data["shape_state"])
    except (TypeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: bad shape_state ({_one_line(err)})") from None
    return data


_ZIP_MAGIC = b"PK\x03\x04"
_REFUSED = "refused: loading it would need executing pickled code"
_ONLY_DATA = "tensorfield checkpoints hold only tensors and plain data"
# opcodes that import a name or call one: a pickle using them runs code when loaded
_CODE_OPCODES = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD", "EXT1", "EXT2", "EXT4"}


def _describe_foreign(path: Path) -> str:
    """Why a file without the zip header is no checkpoint, from its opcodes (never unpickled)."""
    try:
        with path.open("rb") as handle:
            opcodes = [(op.name, arg) for op, arg, _ in pickletools.genops(handle)]
    except Exception:  # noqa: BLE001 - not even a pickle stream: random or foreign bytes
        return "not a tensorfield checkpoint (not a torch zip archive)"
    calls = [(name, arg) for name, arg in opcodes if name in _CODE_OPCODES]
    if not calls:
        return "not a tensorfield checkpoint (a raw pickle, not a torch zip archive)"
    culprit = _first_global(opcodes)
    return f"{_REFUSED}{f' ({culprit})' if culprit else ''}; {_ONLY_DATA}"


def _first_global(opcodes: list[tuple[str, Any]]) -> str | None:
    """The first imported name (``module.name``) of a pickle's opcodes, for the message."""
    strings: list[str] = []
    for name, arg in opcodes:
        if name == "GLOBAL" or name == "INST":
            return str(arg).replace(" ", ".")
        if name == "STACK_GLOBAL" and len(strings) >= 2:
            return f"{strings[-2]}.{strings[-1]}"
        if isinstance(arg, str):
            strings.append(arg)
    return None


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of the ``step_*.ckpt`` files in ``directory``, oldest first.

    Temporary files of interrupted writes (``.step_*.tmp``) are ignored.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        match = _STEP_NAME.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """Newest ``checkpoints/step_*.ckpt`` of a run directory (or of a checkpoints folder), or None."""
    run_dir = Path(run_dir)
    directory = run_dir / CHECKPOINT_DIR if (run_dir / CHECKPOINT_DIR).is_dir() else run_dir
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The step of a ``step_NNNNNN.ckpt`` name, else ``None``."""
    match = _STEP_NAME.match(Path(path).name)
    return int(match.group(1)) if match else None


def resolve_checkpoint(run: str | os.PathLike, choice: str | os.PathLike | None = None) -> Path:
    """The checkpoint file meant by a run folder (or file) and an optional choice.

    Args:
        run: a run folder, its ``checkpoints`` folder, or a checkpoint file.
        choice: ``None`` (``run`` itself if a file, else the newest checkpoint), a checkpoint path,
            or a name in the run: ``step_50``, ``step_000050``, ``step_000050.ckpt`` or ``50``.

    Raises:
        CheckpointError: no such checkpoint (the message lists the run's checkpoints).
    """
    run = Path(run)
    if choice is None:
        if run.is_file():
            return run
        found = latest_checkpoint(run)
        if found is None:
            raise CheckpointError(f"{run}: no checkpoint found (expected {run}/{CHECKPOINT_DIR}/step_*.ckpt)")
        return found
    if Path(choice).is_file():
        return Path(choice)
    directory = _checkpoint_dir(run)
    match = _CHOICE.match(str(choice))
    available = ", ".join(p.stem for _, p in list_checkpoints(directory)) or "none"
    if match is None:
        raise CheckpointError(f"--checkpoint {choice}: not a file nor a checkpoint name like step_50 (run {run} has: {available})")
    path = directory / checkpoint_name(int(match.group(1)))
    if not path.is_file():
        raise CheckpointError(f"{run}: no checkpoint {choice} (has: {available})")
    return path


def open_checkpoint(
    run: str | os.PathLike, choice: str | os.PathLike | None = None, fallback: bool = False
) -> tuple[Path, dict[str, Any], list[tuple[Path, str]]]:
    """Load the checkpoint meant by ``run`` and ``choice`` (see :func:`resolve_checkpoint`).

    Args:
        run: run folder or checkpoint file.
        choice: which checkpoint (``None``: the newest).
        fallback: if the chosen one is unreadable, load the newest readable earlier one instead
            (what a resume does); otherwise the error names the intact earlier checkpoints.

    Returns:
        ``(path loaded, its data, [(unreadable path, reason), ...] skipped on the way)``.

    Raises:
        CheckpointError: the checkpoint (and, with ``fallback``, every earlier one) is unreadable.
    """
    path = resolve_checkpoint(run, choice)
    try:
        return path, load_checkpoint(path), []
    except CheckpointError as err:
        reason = str(err).removeprefix(f"{path}: ")
        step = checkpoint_step(path)
        earlier = [p for s, p in reversed(list_checkpoints(path.parent)) if step is not None and s < step]
        if fallback:
            skipped = [(path, reason)]
            for candidate in earlier:
                try:
                    return candidate, load_checkpoint(candidate), skipped
                except CheckpointError as later_err:
                    skipped.append((candidate, str(later_err).removeprefix(f"{candidate}: ")))
            raise CheckpointError(f"{path}: {reason}; no readable earlier checkpoint to fall back to") from None
        intact = [p.stem for p in earlier if _looks_intact(p)][:3]
        if not intact:
            raise
        raise CheckpointError(
            f"{path}: {reason.split(' (')[0]}; intact earlier: {', '.join(intact)} (use --checkpoint {intact[0]})"
        ) from None


def set_aside(path: str | os.PathLike, suffix: str) -> Path:
    """Rename a checkpoint to ``<name>.<suffix>`` so that no listing, resume or pruning sees it
    any more, keeping its bytes (e.g. a damaged newest checkpoint a resume falls back past)."""
    path = Path(path)
    target = path.with_name(f"{path.name}.{suffix}")
    counter = 1
    while target.exists():
        target = path.with_name(f"{path.name}.{suffix}{counter}")
        counter += 1
    os.replace(path, target)
    return target


def _checkpoint_dir(run: Path) -> Path:
    if run.is_file():
        return run.parent
    return run / CHECKPOINT_DIR if (run / CHECKPOINT_DIR).is_dir() else run


def _looks_intact(path: Path) -> bool:
    """The zip archive's directory is readable (a cut-short file loses it); cheap, reads no tensors."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


_CHOICE = re.compile(r"^(?:step_)?0*(\d+)(?:\.ckpt)?$")


def prune_checkpoints(directory: str | os.PathLike, keep: int, protect: str | os.PathLike | None = None) -> list[Path]:
    """Delete all but the newest ``keep`` step checkpoints in ``directory``; never ``protect``.

    Returns:
        The deleted paths.
    """
    found = list_checkpoints(directory)
    protected = Path(protect).resolve() if protect is not None else None
    deleted = []
    for _, path in found[: max(len(found) - keep, 0)]:
        if protected is not None and path.resolve() == protected:
            continue
        path.unlink(missing_ok=True)
        deleted.append(path)
    return deleted


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform, hence best effort.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__
