"""
Per-maildrop state only its user can write (issue 11, items 2 and 3),
under real root with real accounts: a journal planted by another account
is never applied and never locks the user out, and the state directory
(pop3d -S DIR) cannot be planted in at all.

The planter is an account in group mail, which is what procmail and
dotlockfile hand to whoever runs them: it can create files in the spool
(root:mail 2775, no sticky bit) and stat every mailbox there, so it can
write a journal whose header names the victim's mailbox exactly (its
dev and ino, its size, a sealed header: mbox_journal.c's format).  The
legacy location is SPOOL/USER.pop3d-journal; the state directory's is
DIR/USER/INO.journal.
"""
import errno
import json
import os
import stat
import struct
import subprocess
import sys

import pytest

from p3root import ENV, MAIL_GID, message, mode_of

JNL_SLOT_A = 0
JNL_DATA = 4096
JNL_MAGIC = b"POP3DJN1"
FNV_INIT = 0xcbf29ce484222325

PLANTED = (b"From evil@example.org Mon Jan  1 12:00:00 2024\n"
           b"From: evil@example.org\n"
           b"Subject: planted by another account\n"
           b"\n"
           b"Not your mail.\n"
           b"\n")


def fnv1a(data):
    h = FNV_INIT
    for b in data:
        h ^= b
        h = (h * 0x100000001b3) & 0xffffffffffffffff
    return h


def journal_for(st, tail):
    """A journal that mbox_journal.c's recovery would take as a decided
    commit of this mailbox (slot A valid, no slot B): "write tail at 0,
    cut the file after it"."""
    size = st.st_size
    assert len(tail) < size
    hdr = struct.pack("<8sIIQQQQQ16s", JNL_MAGIC, 1, 0, st.st_dev,
                      st.st_ino, 0, size, len(tail), b"\0" + b"m" * 15)
    hdr += struct.pack("<Q", fnv1a(hdr))
    assert len(hdr) == 80
    return hdr.ljust(JNL_DATA, b"\0") + tail


PLANTER = r"""
import errno, json, os, sys
kind, path, arg = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    if kind == "file":
        mode, data = arg.split(":")
        mode, data = int(mode, 8), bytes.fromhex(data)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL |
                     os.O_NOFOLLOW, mode)
        os.write(fd, data)
        os.fchmod(fd, mode)
        os.close(fd)
    else:
        os.symlink(arg, path)
    print(json.dumps({"errno": 0}))
except OSError as e:
    print(json.dumps({"errno": e.errno, "error": str(e)}))
"""


def as_account(account, kind, path, arg):
    """Runs PLANTER as account, with its groups (mail among them for
    "other"); returns its report, errno 0 when it worked."""
    groups = os.getgrouplist(account.name, account.gid)
    r = subprocess.run([sys.executable, "-c", PLANTER, kind, str(path),
                        arg], capture_output=True, text=True, env=ENV,
                       timeout=30, preexec_fn=account.drop(groups))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def plant(account, path, mode, data):
    """Creates the file path as account, with mode and data."""
    return as_account(account, "file", path, f"{mode:o}:{data.hex()}")


def fill(world, v, n=3):
    """A new mailbox of v with n deliveries; returns its bytes."""
    world.make_mailbox(v)
    for i in range(1, n + 1):
        world.deliver(v, message(i, v.name),
                      agent="procmail" if i == 1 else "dotlockfile")
    return world.mailbox(v).read_bytes()


def login_serves(world, v, original, n):
    """One login: +OK with the n real messages, each served as stored."""
    srv = world.start()
    r = srv.login(v)
    assert r.startswith(f"+OK Maildrop has {n} messages"), \
        f"PASS answered {r!r}\nlog:\n{srv.log}"
    for i in range(1, n + 1):
        chunk = message(i, v.name)
        got = srv.retr(i)
        assert got == chunk[chunk.index(b"\n") + 1:-1], \
            f"RETR {i} served {got!r}\nlog:\n{srv.log}"
    assert srv.quit() == 0, srv.log
    assert world.mailbox(v).read_bytes() == original, srv.log
    return srv


# What the planted SPOOL/victim.pop3d-journal is: a file of the planter's
# with a valid header and this mode, or a symlink to the mailbox.  (A
# hard link to the mailbox is no journal test: pop3d refuses a mailbox
# with two links outright, and a mail group that may link a 0660 mailbox
# may as well write it.)
KINDS = {"readable": 0o644, "writable": 0o666, "unreadable": 0o600,
         "symlink": None}


@pytest.mark.parametrize("kind", list(KINDS))
def test_planted_legacy_journal_is_never_applied(world, acct, kind):
    """SPOOL/victim.pop3d-journal planted by another account in group
    mail (a file with a valid header, readable or writable by the victim
    or not; or a symlink to the mailbox): the victim still
    gets its real messages, the mailbox's bytes do not change, the log
    names the refused journal; and the next login works too (no
    lock-out)."""
    v, o = acct["victim"], acct["other"]
    mode = KINDS[kind]
    original = fill(world, v)
    mbox = world.mailbox(v)
    jnl = world.spool / f"{v.name}.pop3d-journal"
    if mode is not None:
        res = plant(o, jnl, mode, journal_for(os.stat(mbox), PLANTED))
    else:
        res = as_account(o, "symlink", jnl, str(mbox))
    assert res["errno"] == 0, f"the mail group cannot plant? {res}"
    st = os.lstat(jnl)
    if mode is not None:
        assert (st.st_uid, st.st_gid, mode_of(jnl)) == \
            (o.uid, MAIL_GID, mode)

    srv = login_serves(world, v, original, 3)
    lines = [l for l in srv.log.splitlines() if jnl.name in l]
    assert lines, f"the log does not name {jnl}\nlog:\n{srv.log}"
    login_serves(world, v, original, 3)
    assert mbox.read_bytes() == original


def test_state_dir_is_the_users_alone(world, acct):
    """pop3d -S DIR: after a login DIR/victim exists, the victim's, 0700;
    another account, even in group mail, cannot create the journal, index
    or lock there (EACCES), nor anything in DIR itself."""
    v, o = acct["victim"], acct["other"]
    original = fill(world, v, 2)
    assert world.state_option, \
        "pop3d does not take -S DIR (the per-user state directory)"
    login_serves(world, v, original, 2)
    sub = world.state / v.name
    assert sub.is_dir() and not sub.is_symlink(), \
        f"no state directory {sub} after a login: " \
        f"{sorted(os.listdir(world.state))}"
    st = os.lstat(sub)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (v.uid, 0o700), \
        f"{sub}: uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}"
    ino = os.stat(world.mailbox(v)).st_ino
    data = journal_for(os.stat(world.mailbox(v)), PLANTED)
    for name in (f"{ino}.journal", f"{ino}.index", f"{ino}.lock"):
        res = plant(o, sub / name, 0o666, data)
        assert res["errno"] == errno.EACCES, \
            f"planting {sub / name} as {o.name}: {res}"
    res = plant(o, world.state / f"{o.name}-x", 0o666, b"")
    assert res["errno"] == errno.EACCES, res
    login_serves(world, v, original, 2)
