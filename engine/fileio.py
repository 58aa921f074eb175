"""Writing files that must never be lost or left half-written (weights, snapshots, solver states,
databases' companions): the content goes to a temporary file beside the target, is flushed to
disk, and only then renamed over the target."""
import os
import uuid

from .errors import CremaError


def atomic_write(path, writer, error_cls=CremaError, what="write"):
    """Call writer(tmp_path) and move the result to `path` atomically. An OSError becomes
    `error_cls` (an exception class, or a callable making the exception) naming the path ("cannot <what>: ..."); any failure removes the temp file and
    leaves an existing `path` untouched."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    try:
        while True:
            tmp = os.path.join(directory, f".{base}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
            try:
                # O_EXCL: never clobber another writer's temp file; mode 0o666 lets the umask
                # give the file the permissions a plain open() would.
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                break
            except FileExistsError:
                continue
        os.close(fd)
    except OSError as exc:
        raise error_cls(f"{path}: cannot {what}: {exc.strerror or exc}") from None
    try:
        writer(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise error_cls(f"{path}: cannot {what}: {exc.strerror or exc}") from None
        raise
