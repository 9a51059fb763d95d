"""Small primitives the harness needs in many places, each with one home here: atomic file
writes (a reader never sees half a file, a crash never leaves one in place), canonical JSON
and content hashes (run ids, configuration ids, split manifests), and whether a process is
alive (stale claims and locks)."""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable


def canonical_json(obj: Any) -> str:
    """Compact JSON with sorted keys: the same content always gives the same text (hashes
    are taken over it). Values JSON cannot hold are written as ``str(value)``."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def content_hash(obj: Any, length: int = 16) -> str:
    """The first ``length`` hex digits of the sha256 of ``obj``'s canonical JSON (a string
    is hashed as it is)."""
    text = obj if isinstance(obj, str) else canonical_json(obj)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def dump_json(obj: Any) -> str:
    """Readable JSON (indented, sorted keys, newline-terminated) for files people open."""
    return json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n"


def temp_path(path: Path) -> Path:
    """A unique hidden sibling of ``path`` to build it under before :func:`os.replace`."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def fsync_dir(path: Path) -> None:
    """Make a rename inside folder ``path`` durable (best effort where folders cannot be
    opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path | str, content: str | bytes) -> Path:
    """Write ``content`` to ``path`` through a temporary file that is flushed, fsynced and
    renamed into place: readers see the old file or the whole new one, never a part."""
    return atomic_write_with(path, lambda tmp: _write_file(tmp, content))


def atomic_write_with(path: Path | str, writer: Callable[[Path], None]) -> Path:
    """Like :func:`atomic_write` for a ``writer(tmp_path)`` that produces the file itself
    (``np.save``, ``fig.savefig``, pandas' ``to_csv``); the temporary file is removed when
    it fails."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        writer(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(path.parent)
    return path


def _write_file(path: Path, content: str | bytes) -> None:
    with open(path, "wb" if isinstance(content, bytes) else "w") as fh:
        fh.write(content)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def write_files(folder: Path, files: dict[str, str | bytes]) -> None:
    """Write each ``name: content`` into ``folder`` (made if missing), fsynced: the files
    of a folder that is renamed into place afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        with open(folder / name, "wb" if isinstance(content, bytes) else "w") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())


def pid_alive(pid: int) -> bool:
    """Whether a process with id ``pid`` runs on this host (a process we may not signal
    counts as alive)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (OSError, ValueError, TypeError, OverflowError):
        return isinstance(pid, int) and pid > 0
    return True


def replace_dir(tmp: Path, final: Path) -> Path:
    """Move the finished folder ``tmp`` to ``final``, replacing an older ``final``: the old
    one is moved aside first and put back if the rename fails, so ``final`` is always one
    whole folder (the old or the new)."""
    import shutil

    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
        try:
            os.replace(tmp, final)
        except OSError:
            os.replace(old, final)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_dir(final.parent)
    return final
