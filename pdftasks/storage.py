"""Where PDFs go: a local directory (atomic writes) or S3 (``pdftasks.aws.S3Storage``)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pdftasks.errors import StorageError, UnsafePathError

if TYPE_CHECKING:
    from pdftasks.settings import Settings

#: Output names: one path component, ending in .pdf, no hidden files.
_OUTPUT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._ ()+@,=-]{0,195}\.pdf$", re.IGNORECASE)
#: This host in temporary file names, so a writer can be recognised as dead (one output
#: directory may be shared by several hosts).
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"


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


def write_atomic(path: Path, data: bytes, tmp_prefix: str) -> None:
    """Write ``data`` as ``path`` so that readers see all of it or nothing: a temporary file
    ``<tmp_prefix><random>.tmp`` beside it, fsynced, then renamed. Raises ``OSError``; the
    temporary file is removed then."""
    fd, tmp_name = tempfile.mkstemp(prefix=tmp_prefix, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


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
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(path, data, tmp_prefix=f".{filename}.{_HOST}-{os.getpid()}.")
        except OSError as exc:
            raise StorageError(
                f"cannot write {filename!r} to {self.output_dir}: {exc.strerror or exc}"
            ) from exc
        return path

    def discard_stale_temps(self, filename: str) -> list[Path]:
        """Delete temporary files of ``filename`` whose writer on this host has died.

        A writer killed between creating its temporary file and renaming it (SIGKILL, out
        of memory, hard time limit) leaves ``.<filename>.<host>-<pid>.<random>.tmp``
        behind. The job is delivered again and calls this first. Files of live writers and
        of other hosts are kept; ``delete_older_than`` removes old ones.
        """
        pattern = re.compile(rf"\.{re.escape(check_output_filename(filename))}"
                             rf"\.{re.escape(_HOST)}-(\d+)\.\w+\.tmp")
        removed = []
        with contextlib.suppress(OSError), os.scandir(self.output_dir) as entries:
            for entry in entries:
                match = pattern.fullmatch(entry.name)
                if match is None or process_alive(int(match.group(1))):
                    continue
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
        return removed

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


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        pass
    with contextlib.suppress(OSError, IndexError):
        # A killed process that nobody reaped yet (a zombie) is dead too.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def make_storage(target: str | os.PathLike[str], settings: Settings | None = None) -> Any:
    """The storage for ``target``: ``s3://bucket/prefix`` → ``S3Storage`` (region and
    endpoint from ``settings``), anything else → ``LocalStorage`` of that directory.

    Both have ``write(filename, data)`` (returning the ``Path`` or the ``s3://`` URI that
    becomes the job's ``result_path``) and ``delete_older_than(cutoff, dry_run)``.
    """
    if isinstance(target, str) and target.startswith("s3://"):
        from pdftasks.aws import S3Storage

        return S3Storage(target, settings)
    return LocalStorage(target)


def storage_for(settings: Settings) -> Any:
    """The storage configured by ``PDFTASKS_STORAGE`` (else ``PDFTASKS_OUTPUT_DIR``)."""
    return make_storage(settings.storage or settings.output_dir, settings)
