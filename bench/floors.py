"""Floors for the pop3d benchmark: what the machine itself costs for the
work a row does, measured in the same run and on the same file system.

  wc_l(path)            `wc -l` over the page-cached mailbox: a one-pass
                        scan of every byte, the bound for a parse
  tail_bytes(path)      what DELE 1 leaves: the mailbox less its first
                        message (what a commit rewrites)
  dd_ms(...)            `dd` of that many bytes from the page-cached
                        mailbox into a file in the spool's directory,
                        with and without conv=fsync, into a new file
                        (as a journal is written) or in place over an
                        existing one (as the commit's rewrite is)
  clone_ms(...)         an aligned FICLONERANGE of the tail into a new
                        file plus its fsync: the journal's metadata where
                        the file system shares extents (XFS reflink=1,
                        Btrfs); None where it cannot
  commit_floor(...)     the crash-safe floor of the DELE 1 commit:
                        ext4 (no reflink): two synced writes of the tail
                        (journal, then in place); with reflink: one
                        synced in-place write plus the clone's metadata

Every timing is the median of RUNS, with os.sync() before each, so no
write-back of earlier work lands inside it.  Scratch files are named
.p3bench-floor-* in the directory given and removed afterwards.
"""

import fcntl
import os
import statistics
import subprocess
import time

RUNS = 3
FICLONERANGE = 0x4020940d
BLOCK = 4096


def _median_ms(fn, runs=RUNS):
    v = []
    for _ in range(runs):
        os.sync()
        t0 = time.perf_counter()
        fn()
        v.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(v), v


def _warm(path):
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(4 << 20)
        while f.readinto(buf):
            pass


def wc_l(path, runs=5):
    """(ms, GB/s, all ms) of `wc -l PATH` on the page-cached file (best
    of RUNS: a limit)."""
    _warm(path)
    size = os.path.getsize(path)
    v = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(["wc", "-l", path], check=True,
                       stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        v.append((time.perf_counter() - t0) * 1e3)
    # The spawn of wc itself (about 1 ms) is measured on an empty file and
    # taken off: the floor is the scan, not the exec.
    e = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(["wc", "-l", "/dev/null"], check=True,
                       stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        e.append((time.perf_counter() - t0) * 1e3)
    ms = max(min(v) - min(e), 1e-3)
    return ms, size / ms / 1e6, v


def first_message_bytes(path):
    """Length of the first message of an mbox (from its From_ line to the
    next From_ line after an empty line)."""
    with open(path, "rb") as f:
        head = f.read(64 << 20)
    i = head.find(b"\n\nFrom ", 5)
    if i < 0:
        return len(head)
    return i + 2


def tail_bytes(path):
    return os.path.getsize(path) - first_message_bytes(path)


def _dd(src, dst, skip, count, fsync, inplace):
    conv = []
    if fsync:
        conv.append("fsync")
    if inplace:
        conv.append("notrunc")
    cmd = ["dd", "if=" + src, "of=" + dst, "bs=1M", "status=none",
           "iflag=skip_bytes,count_bytes", "skip=%d" % skip,
           "count=%d" % count]
    if conv:
        cmd.append("conv=" + ",".join(conv))
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)


def dd_ms(src, directory, runs=RUNS):
    """dd of the tail of SRC into DIRECTORY: {(fsync, inplace): ms}."""
    skip = first_message_bytes(src)
    count = os.path.getsize(src) - skip
    _warm(src)
    dst = os.path.join(directory, ".p3bench-floor-dd")
    out = {}
    try:
        for inplace in (False, True):
            for fsync in (False, True):
                def one():
                    _dd(src, dst, skip, count, fsync, inplace)

                def prep():
                    if inplace:
                        if not os.path.exists(dst) or \
                                os.path.getsize(dst) != count:
                            _dd(src, dst, skip, count, True, False)
                    elif os.path.exists(dst):
                        os.unlink(dst)
                v = []
                for _ in range(runs):
                    prep()
                    os.sync()
                    t0 = time.perf_counter()
                    one()
                    v.append((time.perf_counter() - t0) * 1e3)
                out[(fsync, inplace)] = statistics.median(v)
    finally:
        if os.path.exists(dst):
            os.unlink(dst)
    return out


def clone_ms(src, directory, runs=RUNS):
    """An aligned FICLONERANGE of SRC's tail (from the block holding its
    start) into a new file in DIRECTORY, and fsync: ms, or None when the
    file system cannot share extents (EOPNOTSUPP, EXDEV, EINVAL).  SRC
    must be on the same file system: a copy is made there first."""
    skip = first_message_bytes(src)
    size = os.path.getsize(src)
    copy = os.path.join(directory, ".p3bench-floor-src")
    dst = os.path.join(directory, ".p3bench-floor-clone")
    start = skip - skip % BLOCK
    length = size - start
    length -= length % BLOCK     # a partial last block cannot be shared
    try:
        subprocess.run(["cp", src, copy], check=True)
        os.sync()
        v = []
        for _ in range(runs):
            if os.path.exists(dst):
                os.unlink(dst)
            os.sync()
            t0 = time.perf_counter()
            sfd = os.open(copy, os.O_RDONLY)
            dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                arg = (sfd.to_bytes(8, "little", signed=True)
                       + start.to_bytes(8, "little")
                       + length.to_bytes(8, "little")
                       + (0).to_bytes(8, "little"))
                try:
                    fcntl.ioctl(dfd, FICLONERANGE, arg)
                except OSError:
                    return None
                os.fsync(dfd)
            finally:
                os.close(sfd)
                os.close(dfd)
            v.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(v)
    finally:
        for p in (copy, dst):
            if os.path.exists(p):
                os.unlink(p)


def fs_type(path):
    """The file system type of the mount holding PATH (mountinfo)."""
    path = os.path.realpath(path)
    best = ("", "?")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            mnt = left.split()[4]
            if ((path == mnt or path.startswith(mnt.rstrip("/") + "/"))
                    and len(mnt) >= len(best[0])):
                best = (mnt, right.split()[0])
    return best[1]


def commit_floor(src, directory):
    """The DELE 1 commit's floors on DIRECTORY's file system.

    Returns a dict: fs, tail (bytes), dd (see dd_ms), clone_ms (or None),
    floor_ms (the crash-safe floor), floor_how (its formula, in words),
    unsafe_ms (one synced in-place write: an unsafe rewrite plus fsync).
    """
    fs = fs_type(directory)
    dd = dd_ms(src, directory)
    clone = clone_ms(src, directory)
    inplace_sync = dd[(True, True)]
    if clone is not None:
        floor = inplace_sync + clone
        how = ("one synced in-place write of the tail (%s ms) + an aligned "
               "clone of it into a new file and fsync, the journal's "
               "metadata (%s ms)" % (_f(inplace_sync), _f(clone)))
    else:
        floor = dd[(True, False)] + inplace_sync
        how = ("two synced writes of the tail: into a new file (%s ms) and "
               "in place (%s ms)" % (_f(dd[(True, False)]),
                                     _f(inplace_sync)))
    return {"fs": fs, "tail": tail_bytes(src), "dd": dd, "clone_ms": clone,
            "floor_ms": floor, "floor_how": how, "unsafe_ms": inplace_sync}


def _f(v):
    if v >= 100:
        return "{:,.0f}".format(v)
    if v >= 10:
        return "%.1f" % v
    return "%.2f" % v


if __name__ == "__main__":
    import sys
    p = sys.argv[1]
    d = sys.argv[2] if len(sys.argv) > 2 else os.path.dirname(p)
    print("wc -l: %.2f ms, %.2f GB/s" % wc_l(p)[:2])
    print(commit_floor(p, d))
