"""A scratch XFS file system on a loop device, for the tests that must
also run where reflink (extent sharing) changes what a copy costs and
what a crash can leave (tests/e2e/test_crash.py).

The same approach as bench/xfs.py, without its dependencies: a sparse
image in a scratch directory, `losetup --find --show`, `mkfs.xfs -q`
(reflink=1 is its default) and a mount on a scratch directory beside the
image.  A private mount namespace would hide the mount from the rest of
the machine, but the test process itself (which reads the mailbox,
delivers to it and checks its inode) and every pop3d it starts would
have to live inside it; so the mount is an ordinary one under the test's
own temporary directory, and close() always unmounts it, detaches the
loop device and deletes the image, then checks that nothing is left.

XfsImage.unavailable() says why this machine cannot do it (not root, no
loop devices, no xfsprogs, no XFS in the kernel), for a skip.
"""
import os
import shutil
import subprocess
from pathlib import Path

IMAGE_BYTES = 512 << 20         # sparse; mkfs.xfs wants at least 300 MB


def _run(argv):
    return subprocess.run(argv, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True)


def _mounted(path):
    """Is path a mount point in this mount namespace?"""
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].encode().decode("unicode_escape")
            if mp == path:
                return True
    return False


class XfsImage:
    def __init__(self, scratch):
        self.scratch = Path(scratch)
        self.image = self.scratch / "pop3d-test-xfs.img"
        self.mnt = self.scratch / "xfs"
        self.dev = None
        self.reflink = None

    @staticmethod
    def unavailable():
        """None, or why no XFS loop image can be made here."""
        if os.geteuid() != 0:
            return "not root: losetup and mount need root"
        for tool in ("losetup", "mkfs.xfs", "xfs_info", "mount", "umount"):
            if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") \
                    is None:
                return f"{tool} is not installed (xfsprogs, util-linux)"
        if not os.path.exists("/dev/loop-control"):
            return "no /dev/loop-control: this machine has no loop devices"
        return None

    def open(self):
        """Makes, attaches, formats and mounts the image; returns the
        mount point.  On a failure, cleans up and raises OSError with what
        failed (the caller may turn it into a skip)."""
        try:
            self.scratch.mkdir(parents=True, exist_ok=True)
            with open(self.image, "wb") as f:
                f.truncate(IMAGE_BYTES)
            r = _run(["losetup", "--find", "--show", str(self.image)])
            if r.returncode != 0:
                raise OSError(f"losetup --find: {r.stderr.strip()}")
            self.dev = r.stdout.strip()
            for argv in (["mkfs.xfs", "-q", "-f", self.dev],
                         ["mount", "-t", "xfs", self.dev, str(self.mnt)]):
                if argv[0] == "mount":
                    self.mnt.mkdir()
                r = _run(argv)
                if r.returncode != 0:
                    why = (r.stderr.strip() or "failed").splitlines()[0]
                    raise OSError(f"{argv[0]}: {why}")
            r = _run(["xfs_info", str(self.mnt)])
            self.reflink = "reflink=1" in r.stdout
            return self.mnt
        except BaseException:
            self.close()
            raise

    def close(self):
        """Unmounts, detaches and deletes; raises AssertionError if any of
        it is left behind."""
        left = []
        if self.mnt.exists() and _mounted(self.mnt):
            if _run(["umount", str(self.mnt)]).returncode != 0:
                # Something still holds it (a killed session's child?):
                # detach it from the tree now, the kernel ends it later.
                _run(["umount", "-l", str(self.mnt)])
            if _mounted(self.mnt):
                left.append(f"{self.mnt} still mounted")
        if self.dev is not None:
            r = _run(["losetup", "-d", self.dev])
            if r.returncode != 0:
                left.append(f"losetup -d {self.dev}: {r.stderr.strip()}")
        if self.image.exists():
            r = _run(["losetup", "-j", str(self.image)])
            if r.stdout.strip():
                left.append(f"still attached: {r.stdout.strip()}")
            self.image.unlink()
        if self.mnt.exists() and not _mounted(self.mnt):
            shutil.rmtree(self.mnt, ignore_errors=True)
        self.dev = None
        assert not left, "; ".join(left)
