"""Where PDFs go: a local directory (atomic writes) or S3 (``pdftasks.storage.s3.S3Storage``).

A job's PDF is stored under a key the server chooses (``storage_key``):
``<namespace>/<owner>/<job id>/<output_filename>``, where the owner is the API tenant of the
job or ``_`` for jobs submitted without one. The caller's ``output_filename`` is only the last
part of the key and the download name, so no caller can reach, overwrite or guess another
tenant's (or namespace's) file by name.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pdftasks.errors import StorageError, UnsafePathError

if TYPE_CHECKING:
    from pdftasks.settings import Settings

#: Output names: one path component, ending in .pdf, no hidden files.
_OUTPUT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._ ()+@,=-]{0,195}\.pdf\Z", re.IGNORECASE)
#: One segment of a storage key: a namespace, tenant or job id (no dots first, no slashes).
_KEY_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
#: The owner segment of jobs that have no tenant (tenant names start with a letter or digit).
NO_TENANT = "_"
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


def storage_key(namespace: str, job_id: str, filename: str, tenant: str | None = None) -> str:
    """The server-chosen key of a job's PDF: ``<namespace>/<tenant or _>/<job_id>/<filename>``.

    Raises:
        UnsafePathError: a part is not a plain name (the job id and tenant come from the job
            record; a message that bypassed the client may carry anything).
    """
    for kind, value in (("namespace", namespace), ("job id", job_id), ("tenant", tenant)):
        if value is None and kind == "tenant":
            continue
        if not isinstance(value, str) or not _KEY_SEGMENT.match(value):
            raise UnsafePathError(f"{kind} {str(value)[:80]!r} cannot be part of a storage key")
    return f"{namespace}/{tenant or NO_TENANT}/{job_id}/{check_output_filename(filename)}"


def check_key(key: object) -> str:
    """Return ``key`` if it is a relative storage key: plain segments, the last one a safe
    output file name (``name.pdf`` alone is a key too)."""
    if not isinstance(key, str) or not key:
        raise UnsafePathError("the storage key must be a non-empty string")
    *dirs, name = key.split("/")
    for part in dirs:
        if part != NO_TENANT and not _KEY_SEGMENT.match(part):
            raise UnsafePathError(f"storage key {key[:200]!r} has an unsafe part {part[:80]!r}")
    check_output_filename(name)
    return key


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
    """Writes PDFs into one directory tree, atomically (temporary file + rename)."""

    def __init__(self, output_dir: str | os.PathLike[str]) -> None:
        self.output_dir = Path(output_dir).expanduser().resolve()

    def path_for(self, key: str) -> Path:
        """The file of storage key ``key`` (a plain output name is a key too); symlinks
        that lead out of the output directory are refused."""
        path = (self.output_dir / check_key(key)).resolve()
        if path != self.output_dir / key:
            raise UnsafePathError(f"storage key {key!r} resolves outside the output directory")
        return path

    def write(self, key: str, data: bytes) -> Path:
        """Write ``data`` as ``key``; readers never see a partial file.

        Raises:
            StorageError: the directory is missing, not writable, or the disk is full
                (transient: the job is retried).
        """
        path = self.output_dir / check_key(key)
        name = path.name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path = self.path_for(key)  # after mkdir: no directory on the way is a symlink
            write_atomic(path, data, tmp_prefix=f".{name}.{_HOST}-{os.getpid()}.")
        except OSError as exc:
            raise StorageError(
                f"cannot write {name!r} to the output directory: {exc.strerror or exc}"
            ) from exc
        return path

    def delete(self, keys: Iterable[str]) -> None:
        """Delete the files of storage ``keys`` (missing ones are fine), and their folders
        left empty."""
        for key in keys:
            path = self.path_for(key)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # only when empty

    def discard_stale_temps(self, key: str) -> list[Path]:
        """Delete temporary files of ``key`` whose writer on this host has died.

        A writer killed between creating its temporary file and renaming it (SIGKILL, out
        of memory, hard time limit) leaves ``.<filename>.<host>-<pid>.<random>.tmp``
        behind. The job is delivered again and calls this first. Files of live writers and
        of other hosts are kept; ``delete_older_than`` removes old ones.
        """
        folder = (self.output_dir / check_key(key)).parent
        pattern = re.compile(rf"\.{re.escape(Path(key).name)}"
                             rf"\.{re.escape(_HOST)}-(\d+)\.\w+\.tmp")
        removed = []
        with contextlib.suppress(OSError), os.scandir(folder) as entries:
            for entry in entries:
                match = pattern.fullmatch(entry.name)
                if match is None or process_alive(int(match.group(1))):
                    continue
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
        return removed

    def delete_older_than(self, cutoff: float, dry_run: bool = False) -> list[Path]:
        """Delete PDFs in the output directory tree modified before ``cutoff`` (epoch s),
        then the job folders left empty.

        Only regular files: symlinks are never followed or touched. Returns what was (or,
        with ``dry_run``, would be) deleted.
        """
        deleted: list[Path] = []
        if not self.output_dir.is_dir():
            return deleted
        for folder, _dirs, files in os.walk(self.output_dir, topdown=False):
            for name in files:
                path = Path(folder) / name
                if not name.lower().endswith((".pdf", ".tmp")) or path.is_symlink():
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if path.lstat().st_mtime >= cutoff:
                        continue
                    if not dry_run:
                        path.unlink()
                    deleted.append(path)
            if not dry_run and Path(folder) != self.output_dir:
                with contextlib.suppress(OSError):
                    os.rmdir(folder)  # only when empty
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
    endpoint from ``settings``, required then), anything else → ``LocalStorage`` of that
    directory.

    Both have ``write(filename, data)`` (returning the ``Path`` or the ``s3://`` URI that
    becomes the job's ``result_path``) and ``delete_older_than(cutoff, dry_run)``.
    """
    if isinstance(target, str) and target.startswith("s3://"):
        from pdftasks.storage.s3 import S3Storage

        if settings is None:
            raise ValueError(f"the S3 storage {target!r} needs settings (its region and "
                             "endpoint): pass them, e.g. PDFServiceConfig(settings=...) or "
                             "PDFServiceConfig.from_settings(settings)")
        return S3Storage(target, settings)
    return LocalStorage(target)


def storage_for(settings: Settings) -> Any:
    """The storage configured by ``PDFTASKS_STORAGE`` (else ``PDFTASKS_OUTPUT_DIR``)."""
    return make_storage(settings.storage or settings.output_dir, settings)
