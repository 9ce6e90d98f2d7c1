"""--fs xfs: the benchmark's mailbox rows on a loop-mounted XFS image.

The outer bench.py (which holds the benchmark's lock) makes a sparse
image in /var/tmp/pop3d-bench, attaches it to a loop device (losetup),
makes XFS on it (mkfs.xfs from xfsprogs: reflink=1 is its default) and
runs bench.py again inside a private mount namespace (unshare --mount
--propagation private).  That inner run mounts the device on a scratch
directory and binds a root:mail 2775 directory of it onto /var/mail, so
every peer it starts reads and writes its mailbox on XFS while the rest
of the machine keeps its own /var/mail.  The inner run unmounts in a
finally; the namespace's mounts end with its last process in any case.
The outer run detaches the loop device and deletes the image in a
finally, also after Ctrl-C (it waits for the inner run's cleanup first)
and finds a loop device left by a run that was killed outright.
"""

import os
import signal
import subprocess
import sys

import peers

IMAGE = os.path.join(peers.CACHE, "xfs.img")
MNT = os.path.join(peers.CACHE, "xfs-mnt")
IMAGE_BYTES = 8 << 30          # sparse: 2 copies of 1.1 GB + journal + peers
ENV = "P3BENCH_XFS_DEV"


def _out(cmd):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                          text=True, check=True).stdout.strip()


def _detach_leftovers():
    if not os.path.exists(IMAGE):
        return
    r = subprocess.run(["losetup", "-j", IMAGE], stdout=subprocess.PIPE,
                       text=True)
    for line in r.stdout.splitlines():
        dev = line.split(":", 1)[0]
        peers.log("detaching %s, left by an interrupted run" % dev)
        subprocess.run(["losetup", "-d", dev])
    os.unlink(IMAGE)


def outer(script, argv):
    """Run SCRIPT ARGV on a fresh XFS image; returns its exit status."""
    _detach_leftovers()
    dev = None
    try:
        with open(IMAGE, "wb") as f:
            f.truncate(IMAGE_BYTES)
        dev = _out(["losetup", "--find", "--show", IMAGE])
        peers.log("XFS image %s on %s" % (IMAGE, dev))
        subprocess.run(["mkfs.xfs", "-q", "-f", dev], check=True)
        env = dict(os.environ, **{ENV: dev})
        proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--",
             sys.executable, script] + list(argv), env=env)
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:
                # The inner run got the same SIGINT and is cleaning up:
                # wait for it before detaching.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                continue
    finally:
        if dev is not None:
            r = subprocess.run(["losetup", "-d", dev])
            if r.returncode != 0:
                peers.log("losetup -d %s failed" % dev)
        if os.path.exists(IMAGE):
            os.unlink(IMAGE)


class Inner:
    """Inside the namespace: mount the image and put it on /var/mail."""

    def __init__(self):
        self.dev = os.environ[ENV]
        self.mounted = []

    def __enter__(self):
        os.makedirs(MNT, exist_ok=True)
        subprocess.run(["mount", "-t", "xfs", self.dev, MNT], check=True)
        self.mounted.append(MNT)
        spool = os.path.join(MNT, "mail")
        os.mkdir(spool)
        os.chown(spool, 0, peers.grp.getgrnam("mail").gr_gid)
        os.chmod(spool, 0o2775)
        subprocess.run(["mount", "--bind", spool, "/var/mail"], check=True)
        self.mounted.append("/var/mail")
        info = _out(["xfs_info", MNT])
        self.reflink = "reflink=1" in info
        peers.log("/var/mail is XFS on %s (reflink=%d) in this mount "
                  "namespace" % (self.dev, self.reflink))
        return self

    def __exit__(self, *exc):
        while self.mounted:
            m = self.mounted.pop()
            r = subprocess.run(["umount", m])
            if r.returncode != 0:
                subprocess.run(["umount", "-l", m])
        try:
            os.rmdir(MNT)
        except OSError:
            pass
        return False


def inner_active():
    return ENV in os.environ
