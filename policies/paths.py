"""Checks at the boundary for the files maskpolicy reads and writes.

Every command checks where it will write *before* any work starts (a run that trains for
an hour and then fails at its first checkpoint on an unwritable directory is the failure
this prevents), and reads text files as UTF-8 with one clear error naming the file when
they are not. They live in the lowest layer, next to the errors, so that every layer and
the command line share one wording.
"""
from __future__ import annotations

import codecs
import contextlib
import os
import tempfile

from .errors import ArtifactError, DataError, MaskpolicyError


def _first_existing_parent(path: str) -> str:
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.exists(parent):
        up = os.path.dirname(parent)
        if up == parent:
            break
        parent = up
    return parent


def _check_writable_dir(directory: str, what: str) -> None:
    """``directory`` exists: refuse unless a file can really be created in it (os.access
    answers for the permission bits only, not for read-only mounts or root-squashed shares)."""
    if not os.path.isdir(directory):
        raise ArtifactError(f"{what}: {directory} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".tmp-write-check-")
    except OSError as err:
        raise ArtifactError(f"{what}: cannot write in {directory} ({err.strerror or err})") from None
    os.close(fd)
    os.remove(probe)


def check_output_dir(path: str, what: str = "--out") -> str:
    """Refuse an output directory that names an existing file or cannot be created or
    written; creates nothing. Returns the absolute path."""
    if not path:
        raise ArtifactError(f"{what}: an output directory is required")
    full = os.path.abspath(path)
    if os.path.exists(full):
        if not os.path.isdir(full):
            raise ArtifactError(f"{what}: {path} exists and is not a directory")
        _check_writable_dir(full, what)
    else:
        parent = _first_existing_parent(full)
        if not os.path.isdir(parent):
            raise ArtifactError(f"{what}: cannot create {path}: {parent} is not a directory")
        _check_writable_dir(parent, what)
    return full


def check_output_file(path: str, what: str = "--out") -> str:
    """Refuse an output file path that names a directory, or whose directory cannot be
    created or written; creates nothing. Returns the absolute path."""
    if not path:
        raise ArtifactError(f"{what}: an output file is required")
    full = os.path.abspath(path)
    if os.path.isdir(full) or path.endswith(os.sep):
        raise ArtifactError(f"{what}: {path} is a directory; give a file path")
    parent = os.path.dirname(full)
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise ArtifactError(f"{what}: cannot write {path}: {parent} is not a directory")
    check_output_dir(parent, what)
    return full


def _locate_undecodable(path: str) -> tuple[int, int, int] | None:
    """``(offset, line, byte)`` of the first byte of ``path`` that is not UTF-8, read from the
    file itself: a decode error raised while streaming counts offsets from the start of its
    buffer, not of the file. Reads in chunks, so a large corpus is not held in memory."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, line = 0, 1  # offset of the first byte not yet given to the decoder
    try:
        with open(path, "rb") as fh:
            while True:
                chunk = fh.read(1 << 20)
                pending = decoder.getstate()[0]  # an unfinished multi-byte character (never a newline)
                data = pending + chunk
                try:
                    decoder.decode(chunk, final=not chunk)
                except UnicodeDecodeError as err:
                    start = min(err.start, len(data) - 1)
                    return offset - len(pending) + start, line + data.count(b"\n", 0, start), data[start]
                if not chunk:
                    return None
                offset += len(chunk)
                line += chunk.count(b"\n")
    except OSError:
        return None


def not_utf8(path: str, err: UnicodeDecodeError, fix: str = "re-save it as UTF-8",
             error: type[MaskpolicyError] = DataError) -> MaskpolicyError:
    """The one error for a file that is not UTF-8 text (raise it ``from None``): names the file,
    the first undecodable byte and its line, and ``fix``."""
    where = _locate_undecodable(path)
    if where is None:  # the file changed or vanished since: say what the decoder saw
        detail = f"undecodable byte 0x{err.object[err.start]:02x}"
    else:
        offset, line, byte = where
        detail = f"undecodable byte 0x{byte:02x} on line {line}, byte offset {offset}"
    return error(f"{path} is not UTF-8 text ({detail}); {fix}")


def read_text(path: str, fix: str = "re-save it as UTF-8", error: type[MaskpolicyError] = DataError) -> str:
    """A whole UTF-8 text file, or one clear error (``error``, default ``DataError``) when it
    is not UTF-8 or cannot be read."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except UnicodeDecodeError as err:
        raise not_utf8(path, err, fix, error) from None
    except OSError as err:
        raise error(f"cannot read {path}: {err.strerror or err}") from None


@contextlib.contextmanager
def utf8_errors(path: str, fix: str = "re-save it as UTF-8", error: type[MaskpolicyError] = DataError):
    """Turn a ``UnicodeDecodeError`` raised while streaming ``path`` into ``not_utf8``."""
    try:
        yield
    except UnicodeDecodeError as err:
        raise not_utf8(path, err, fix, error) from None
