"""A FUSE filesystem that forgets, on command, every write that was not fsynced: a power
cut for the process above it, without a machine to switch off.

    python lossyfs.py BACKING_DIR MOUNT_POINT

It passes every operation through to BACKING_DIR, and for each file remembers how to undo
the writes (and size changes) made since that file was last fsynced. Writing anything to
``MOUNT_POINT/.power-cut`` undoes them all, newest first, as if the machine had lost its
page cache; then the filesystem carries on. Kill the process above first: it would not
survive a real power cut either.

The model is of data only. Creating, renaming and removing files are durable at once (as
if every directory were fsynced after each change), so a file created and never fsynced
survives empty. Truncations, on open or not, are undone like writes. That is lenient to the storage engine's directory handling and strict on
the thing under test: that every write acknowledged under ``--sync always`` was fsynced
(in the file it was written to) before the acknowledgement.

Needs root (or a user allowed to mount FUSE filesystems) and libfuse 3. Single-threaded:
the loads the tests put through it are small.
"""

from __future__ import annotations

import errno
import os
import sys

import mfusepy as fuse

CONTROL = "/.power-cut"


class LossyFs(fuse.Operations):
    use_ns = True

    def __init__(self, root: str):
        self.root = os.path.realpath(root)
        # backing path -> [(offset, old bytes, old size)], oldest first
        self.undo: dict[str, list[tuple[int, bytes, int]]] = {}
        self.cuts = 0

    def _real(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def _remember(self, real: str, fh: int, offset: int, length: int) -> None:
        """Saves what ``length`` bytes at ``offset`` hold now, and the size, to undo."""
        size = os.fstat(fh).st_size
        old = os.pread(fh, max(0, min(length, size - offset)), offset) if offset < size else b""
        self.undo.setdefault(real, []).append((offset, old, size))

    def power_cut(self) -> None:
        for real, entries in self.undo.items():
            try:
                fd = os.open(real, os.O_WRONLY)
            except FileNotFoundError:
                continue  # removed since: removals are durable in this model
            try:
                for offset, old, size in reversed(entries):
                    if old:
                        os.pwrite(fd, old, offset)
                    os.ftruncate(fd, size)
            finally:
                os.close(fd)
        self.undo.clear()
        self.cuts += 1

    # -- metadata -----------------------------------------------------------
    def getattr(self, path, fh=None):
        if path == CONTROL:
            return {"st_mode": 0o100600, "st_nlink": 1, "st_size": 0}
        try:
            st = os.lstat(self._real(path))
        except OSError as err:
            raise fuse.FuseOSError(err.errno) from err
        keys = ("st_gid", "st_mode", "st_nlink", "st_size", "st_uid", "st_blocks", "st_blksize")
        attrs = {k: getattr(st, k) for k in keys}
        # Times in nanoseconds (use_ns).
        attrs.update(st_atime=st.st_atime_ns, st_ctime=st.st_ctime_ns, st_mtime=st.st_mtime_ns)
        return attrs

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._real(path))

    def mkdir(self, path, mode):
        os.mkdir(self._real(path), mode)
        return 0

    def rmdir(self, path):
        os.rmdir(self._real(path))
        return 0

    def unlink(self, path):
        real = self._real(path)
        os.unlink(real)
        self.undo.pop(real, None)
        return 0

    def rename(self, old, new):
        real_old, real_new = self._real(old), self._real(new)
        os.rename(real_old, real_new)
        self.undo.pop(real_new, None)
        if real_old in self.undo:
            self.undo[real_new] = self.undo.pop(real_old)
        return 0

    def chmod(self, path, mode):
        os.chmod(self._real(path), mode)
        return 0

    def utimens(self, path, times=None):
        os.utime(self._real(path), ns=times) if times else os.utime(self._real(path))
        return 0

    def statfs(self, path):
        st = os.statvfs(self._real(path))
        return {k: getattr(st, k) for k in ("f_bavail", "f_bfree", "f_blocks", "f_bsize",
                                            "f_favail", "f_ffree", "f_files", "f_flag",
                                            "f_frsize", "f_namemax")}

    def fsyncdir(self, path, datasync, fh):
        return 0

    # -- data ----------------------------------------------------------------
    def create(self, path, mode, fi=None):
        real = self._real(path)
        fd = os.open(real, os.O_RDWR | os.O_CREAT, mode)
        # A file that is new since its last fsync is empty after a power cut.
        self.undo.setdefault(real, []).append((0, b"", 0))
        return fd

    def open(self, path, flags):
        if path == CONTROL:
            return os.open(os.devnull, os.O_WRONLY)
        truncate = bool(flags & os.O_TRUNC)
        real = self._real(path)
        # Writes are remembered through fstat/pread on this descriptor, so it must read;
        # a truncation on open is done here, so that it can be undone like any other.
        flags = (flags & ~(os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC)) | os.O_RDWR
        try:
            fd = os.open(real, flags)
        except OSError as err:
            raise fuse.FuseOSError(err.errno) from err
        if truncate:
            self._remember(real, fd, 0, os.fstat(fd).st_size)
            os.ftruncate(fd, 0)
        return fd

    def read(self, path, size, offset, fh):
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        if path == CONTROL:
            self.power_cut()
            return len(data)
        self._remember(self._real(path), fh, offset, len(data))
        return os.pwrite(fh, data, offset)

    def truncate(self, path, length, fh=None):
        if path == CONTROL:
            return 0
        real = self._real(path)
        fd = fh if fh is not None else os.open(real, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            if length < size:
                self._remember(real, fd, length, size - length)
            else:
                self.undo.setdefault(real, []).append((size, b"", size))
            os.ftruncate(fd, length)
        finally:
            if fh is None:
                os.close(fd)
        return 0

    def fallocate(self, path, mode, offset, size, fh):
        raise fuse.FuseOSError(errno.EOPNOTSUPP)

    def fsync(self, path, datasync, fh):
        real = self._real(path)
        os.fsync(fh)
        self.undo.pop(real, None)
        return 0

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        os.close(fh)
        return 0


def main() -> None:
    backing, mount_point = sys.argv[1], sys.argv[2]
    fuse.FUSE(LossyFs(backing), mount_point, foreground=True, nothreads=True)


if __name__ == "__main__":
    main()
