"""Where PDFs go. Local directory storage with atomic writes."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

from pdftasks.errors import StorageError, UnsafePathError

#: Output names: one path component, ending in .pdf, no hidden files.
_OUTPUT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._ ()+@,=-]{0,195}\.pdf$", re.IGNORECASE)


def check_output_filename(name: object) -> str:
    """Return ``name`` if it is a safe output file name, else raise ``UnsafePathError``."""
    if not isinstance(name, str) or not name:
        raise UnsafePathError("output_filename must be a non-empty string")
    if "/" in name or "\\" in name or "\x00" in name:
        raise UnsafePathError(
            f"output_filename {name!r} must be a plain file name without a path separator"
        )
    if ".." in name:
        raise UnsafePathError(f"output_filename {name!r} must not contain '..'")
    if not _OUTPUT_NAME.match(name):
        raise UnsafePathError(
            f"output_filename {name!r} must end with .pdf, start with a letter, digit or '_', "
            "and use only letters, digits, spaces and ._()+@,=- (at most 200 characters)"
        )
    return name


class LocalStorage:
    """Writes PDFs into one directory, atomically (temporary file + rename)."""

    def __init__(self, output_dir: str | os.PathLike[str]) -> None:
        self.output_dir = Path(output_dir).expanduser().resolve()

    def path_for(self, filename: str) -> Path:
        path = (self.output_dir / check_output_filename(filename)).resolve()
        if path.parent != self.output_dir:
            raise UnsafePathError(f"output_filename {filename!r} resolves outside the output dir")
        return path

    def write(self, filename: str, data: bytes) -> Path:
        """Write ``data`` as ``filename``; readers never see a partial file.

        Raises:
            StorageError: the directory is missing, not writable, or the disk is full
                (transient: the job is retried).
        """
        path = self.path_for(filename)
        tmp_name = None
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".tmp",
                                            dir=self.output_dir)
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(data)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.chmod(tmp_name, 0o644)
            os.replace(tmp_name, path)
            tmp_name = None
        except OSError as exc:
            raise StorageError(
                f"cannot write {filename!r} to {self.output_dir}: {exc.strerror or exc}"
            ) from exc
        finally:
            if tmp_name is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)
        return path

    def delete_older_than(self, cutoff: float, dry_run: bool = False) -> list[Path]:
        """Delete PDFs in the output directory modified before ``cutoff`` (epoch seconds).

        Only regular files directly inside the directory: symlinks and subdirectories are
        never followed or touched. Returns what was (or, with ``dry_run``, would be) deleted.
        """
        deleted = []
        if not self.output_dir.is_dir():
            return deleted
        with os.scandir(self.output_dir) as entries:
            for entry in entries:
                if entry.is_symlink() or not entry.is_file(follow_symlinks=False):
                    continue
                if not entry.name.lower().endswith((".pdf", ".tmp")):
                    continue
                if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                    continue
                path = Path(entry.path)
                if not dry_run:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                deleted.append(path)
        return deleted
