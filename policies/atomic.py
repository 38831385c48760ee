"""Atomic writes: a file or directory appears complete under its final name, or not at all.

Everything is written to a hidden temporary (``.tmp-*``) next to its final place and moved
there with ``os.replace`` (atomic on one filesystem). ``tempfile`` creates its files 0600
and its directories 0700, which would make results private whatever the user's umask
says; every temporary is given the mode an ordinary ``open``/``mkdir`` would have given it
before it is moved into place. A process killed mid-write leaves only a ``.tmp-*`` behind,
which ``remove_stale_temporaries`` clears at the next start of a run (under its lock).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

TMP_PREFIX = ".tmp-"
_STALE_PREFIXES = (TMP_PREFIX, ".old-")


def current_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def honour_umask(path: str, directory: bool = False) -> None:
    """Give a ``tempfile``-made path the mode ``open``/``mkdir`` would have given it."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def honour_umask_tree(root: str) -> None:
    """``honour_umask`` for a directory and everything in it: libraries that write through
    their own temporaries (safetensors writes 0600 files) would otherwise leave results
    private whatever the umask says."""
    honour_umask(root, directory=True)
    for parent, dirs, files in os.walk(root):
        for name in dirs:
            honour_umask(os.path.join(parent, name), directory=True)
        for name in files:
            path = os.path.join(parent, name)
            if not os.path.islink(path):
                honour_umask(path)


def write_text_atomic(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=TMP_PREFIX)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        honour_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json_atomic(path: str, data) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def save_directory_atomic(final_dir: str, write) -> None:
    """Call ``write(tmp_dir)`` then move the finished directory to ``final_dir`` (an older
    ``final_dir`` is replaced only once the new one is complete)."""
    parent = os.path.dirname(os.path.abspath(final_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=TMP_PREFIX)
    try:
        write(tmp)
        honour_umask_tree(tmp)
        replace_directory(tmp, final_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_directory(src: str, final_dir: str) -> None:
    """Move the finished directory ``src`` to ``final_dir``, replacing an older one.

    ``os.replace`` cannot overwrite a non-empty directory, so the old one is first moved
    aside (and moved back if the second rename fails), deleted only once the new one is in
    place."""
    if not os.path.exists(final_dir):
        os.replace(src, final_dir)
        return
    aside = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(final_dir)), prefix=".old-")
    old = os.path.join(aside, "x")
    os.replace(final_dir, old)
    try:
        os.replace(src, final_dir)
    except BaseException:
        os.replace(old, final_dir)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def remove_stale_temporaries(directory: str) -> list[str]:
    """Remove the ``.tmp-*`` / ``.old-*`` entries a killed writer left in ``directory``.
    Only call it while holding the directory's run lock (another run's temporaries are
    not stale). Returns the names removed."""
    if not os.path.isdir(directory):
        return []
    removed = []
    for name in sorted(os.listdir(directory)):
        if not name.startswith(_STALE_PREFIXES):
            continue
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
        removed.append(name)
    return removed
