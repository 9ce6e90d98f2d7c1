"""Crash-atomic UPDATE: a real session's commit is interrupted at every
call that changes a file (write, pwrite, copy_file_range, fsync, ftruncate,
rename, unlink, link) by SIGKILL or by failing the call with ENOSPC, EIO or EDQUOT
(tests/fault/fault.so).  Mail is delivered after the crash, the way
procmail does (conftest.deliver, which breaks a killed process's dotlock
as liblockfile does), for every other point.  Then recovery runs, alternately
as `pop3d -r` and as the next session.  The mailbox must be exactly the
old one or exactly the new one, plus the late mail, with the same inode,
owner, group and mode, and no journal or lock left behind.

Every test runs twice: on the test's temporary directory (fs "tmp") and
on a scratch XFS loop image (fs "xfs", tests/e2e/xfsimage.py), mailbox
and state directory both, where reflink lets copy_file_range share
extents; where this machine cannot make the image the "xfs" runs say
why and skip."""
import os
import subprocess

import pytest

from conftest import (POP3D, REPO, ALICE_UID, MAIL_GID, Pop3dEnv, deliver)
from xfsimage import XfsImage

FAULT = REPO / "tests" / "fault" / "fault.so"
MODES = ("kill", "enospc", "eio", "edquot")


@pytest.fixture(scope="module")
def xfs_mount(tmp_path_factory):
    """One XFS image for the module; each test gets a directory on it."""
    why = XfsImage.unavailable()
    if why is not None:
        pytest.skip(f"no XFS loop image: {why}")
    img = XfsImage(tmp_path_factory.mktemp("xfsimg"))
    try:
        mnt = img.open()
    except OSError as e:
        pytest.skip(f"no XFS loop image: {e}")
    yield img, mnt
    img.close()


@pytest.fixture(params=["tmp", "xfs"])
def crash_env(request):
    """pop3d_env, or the same world (mail and state directories, hence
    the journal) on the XFS image."""
    if request.param == "tmp":
        yield request.getfixturevalue("pop3d_env")
        return
    img, mnt = request.getfixturevalue("xfs_mount")
    d = mnt / request.node.name.replace("/", "_")
    d.mkdir()
    e = Pop3dEnv(d)
    for sub in (e.mail, e.state):
        assert sub.stat().st_dev == mnt.stat().st_dev, f"{sub} not on XFS"
    yield e
    errors = e.cleanup()
    subprocess.run(["rm", "-rf", "--one-file-system", str(d)], check=True)
    if errors:
        pytest.fail("\n".join(errors))


def message(i, lines):
    body = "".join(f"line {j} of message {i}\n" for j in range(lines))
    if i % 2:
        body += ".a dotted line\n>From an escaped line\n"
    return (f"From u{i}@example.org Mon Jan  1 10:00:{i:02d} 2024\n"
            f"Subject: message {i}\n\n{body}\n").encode()


MSGS = [message(i, 3 + 150 * (i % 3)) for i in range(1, 7)]
OLD = b"".join(MSGS)
LATE = (b"From late@example.org Tue Jan  2 08:00:00 2024\n"
        b"Subject: delivered after the crash\n\nstill here\n\n")


class Crash:
    def __init__(self, env):
        self.env = env
        self.path = env.mailbox()

    def reset(self):
        self.path.write_bytes(OLD)
        os.chown(self.path, ALICE_UID, MAIL_GID)
        os.chmod(self.path, 0o600)
        st = self.path.stat()
        return (st.st_ino, st.st_uid, st.st_gid, st.st_mode)

    extra = {}

    def session(self, dele, fault=None):
        e = self.env.env()
        e.update(self.extra)
        e["LD_PRELOAD"] += f" {FAULT}"
        # The spool and the state directory (the journal lives there).
        e["FAULT_DIR"] = str(self.env.tmp)
        e.update(fault or {})
        cmds = "USER alice\r\nPASS secret\r\n" + \
            "".join(f"DELE {d}\r\n" for d in dele) + "QUIT\r\n"
        return subprocess.run(self.env.argv(), input=cmds.encode(), env=e,
                              capture_output=True, timeout=60)

    def recover(self, by_session):
        if by_session:
            p = self.session([])
            assert b"+OK Maildrop has" in p.stdout, p.stderr.decode()
        else:
            p = subprocess.run([POP3D, "-d", "-S", str(self.env.state),
                                "-r", str(self.path)],
                               env=self.env.env(), capture_output=True,
                               timeout=60)
            assert p.returncode == 0, p.stderr.decode()


@pytest.mark.parametrize("dele", [[1], [6], [2, 4], [1, 2, 3, 4, 5, 6],
                                  [3, 4, 5]],
                         ids=["first", "last", "two", "all", "run"])
def test_crash_at_every_step(crash_env, dele):
    crash_at_every_step(crash_env, dele, {})


@pytest.mark.parametrize("dele", [[2, 4]], ids=["two"])
def test_crash_at_every_step_without_copy_file_range(crash_env, dele):
    """Where copy_file_range fails with EXDEV (another file system type
    for the state directory), the copy through user space is the one
    every step goes through."""
    calls = crash_at_every_step(crash_env, dele, {"FAULT_NOCFR": "1"})
    assert "copy_file_range" not in calls and "pwrite" in calls


def crash_at_every_step(crash_env, dele, extra):
    c = Crash(crash_env)
    c.extra = extra
    new = b"".join(m for i, m in enumerate(MSGS, 1) if i not in dele)
    log = crash_env.tmp / "points"
    c.reset()
    p = c.session(dele, {"FAULT_LOG": str(log)})
    assert p.stdout.endswith(b"+OK pop3d signing off (%d messages left)\r\n"
                             % (6 - len(dele))), p.stderr.decode()
    assert c.path.read_bytes() == new
    calls = [line.split()[1] for line in log.read_text().splitlines()]
    points = len(calls)
    assert points >= 10, "the commit should pass through many steps"
    print(f"{crash_env.tmp}: {points} points x {len(MODES)} faults:",
          " ".join(f"{c} {calls.count(c)}" for c in sorted(set(calls))))
    injected = 0
    for mode in MODES:
        for at in range(1, points + 1):
            ident = c.reset()
            p = c.session(dele, {"FAULT_AT": str(at), "FAULT_MODE": mode})
            state = c.path.read_bytes()
            if mode != "kill":
                # A reply is always sent; +OK only when the commit is done.
                if p.stdout.endswith(b"signing off (%d messages left)\r\n"
                                     % (6 - len(dele))):
                    assert state == new, (mode, at)
                else:
                    assert b"-ERR" in p.stdout, (mode, at, p.stdout)
            late = LATE if at % 2 else b""
            if late:
                deliver(c.path, late)
            c.recover(by_session=(at // 2) % 2 == 1)
            got = c.path.read_bytes()
            assert got in (OLD + late, new + late), \
                f"{mode} at point {at}: neither old nor new mailbox"
            st = c.path.stat()
            assert (st.st_ino, st.st_uid, st.st_gid, st.st_mode) == ident
            assert crash_env.leftovers() == [], (mode, at)
            injected += 1
    assert injected == points * len(MODES)
    return calls


def test_nothing_deleted_writes_nothing(crash_env):
    c = Crash(crash_env)
    c.reset()
    before = c.path.stat()
    log = crash_env.tmp / "points"
    p = c.session([], {"FAULT_LOG": str(log)})
    assert p.stdout.endswith(b"+OK pop3d signing off (6 messages left)\r\n")
    calls = log.read_text().split() if log.exists() else []
    # Only the dotlock's own files are written; never the mailbox.
    assert "ftruncate" not in calls and "pwrite" not in calls and \
        "copy_file_range" not in calls and "rename" not in calls
    after = c.path.stat()
    assert after.st_mtime_ns == before.st_mtime_ns
    assert c.path.read_bytes() == OLD


# ---- journals that are not, or no longer, where this version puts them ------

def decided_journal(c, dele):
    """A real journal of a decided commit: the commit is killed at the
    call after the journal's rename into place, before the mailbox is
    touched.  Returns its path in alice's state directory."""
    log = c.env.tmp / "points-journal"
    c.reset()
    p = c.session(dele, {"FAULT_LOG": str(log)})
    assert p.stdout.endswith(b"messages left)\r\n"), p.stderr.decode()
    calls = [line.split()[1] for line in log.read_text().splitlines()]
    log.unlink()
    c.reset()
    at = calls.index("rename") + 2          # 1-based, the call after it
    c.session(dele, {"FAULT_AT": str(at), "FAULT_MODE": "kill"})
    jnl = c.env.state_dir() / f"{c.path.stat().st_ino}.journal"
    assert jnl.is_file()
    assert c.path.read_bytes() == OLD
    return jnl


def served_as_is(c):
    """The next session serves the mailbox as it is, all six messages."""
    p = c.session([])
    assert b"+OK Maildrop has 6 messages" in p.stdout, p.stderr.decode()
    assert c.path.read_bytes() == OLD
    return p.stderr.decode()


def test_decided_journal_is_finished(crash_env):
    c = Crash(crash_env)
    decided_journal(c, [2])
    c.recover(by_session=True)
    assert c.path.read_bytes() == b"".join(MSGS[:1] + MSGS[2:])
    assert crash_env.leftovers() == []


@pytest.mark.parametrize("where", ["state", "spool"])
def test_planted_journal_is_never_applied(crash_env, where):
    """A valid journal (a real one, for this very inode), but another
    account's file, or open to others, or linked twice, or behind a
    symlink: never applied, never a lock-out; the log says what failed."""
    c = Crash(crash_env)
    jnl = decided_journal(c, [2])
    data = jnl.read_bytes()
    jnl.unlink()
    target = jnl if where == "state" else crash_env.mail / "alice.pop3d-journal"
    cases = [("other owner", 1001, 0o600, "owned by uid 1001"),
             ("open to the group", ALICE_UID, 0o660, "mode 0660")]
    for what, uid, mode, why in cases:
        target.write_bytes(data)
        os.chown(target, uid, MAIL_GID)
        os.chmod(target, mode)
        log = served_as_is(c)
        assert why in log, (what, log)
        target.unlink()
    # Two links, and a symlink to a journal elsewhere.
    other = crash_env.tmp / "elsewhere"
    other.write_bytes(data)
    os.chown(other, ALICE_UID, MAIL_GID)
    os.chmod(other, 0o600)
    os.link(other, target)
    assert "2 links" in served_as_is(c)
    target.unlink()
    target.symlink_to(other)
    assert "a symlink" in served_as_is(c)
    target.unlink()
    other.unlink()


def test_journal_of_another_inode_is_never_applied(crash_env):
    """The mailbox was replaced by a copy (another inode) and a journal
    renamed to the copy's inode: its header names the old inode, so it
    is not applied."""
    c = Crash(crash_env)
    jnl = decided_journal(c, [2])
    copy = crash_env.mail / "copy"
    copy.write_bytes(OLD)
    os.chown(copy, ALICE_UID, MAIL_GID)
    os.chmod(copy, 0o600)
    os.rename(copy, c.path)
    moved = jnl.with_name(f"{c.path.stat().st_ino}.journal")
    jnl.rename(moved)
    assert "it names inode" in served_as_is(c)
    assert moved.exists()


def test_spool_journal_of_the_last_version_is_finished(crash_env):
    """Upgrade: a journal the version before left in the spool, the
    owner's, one link, mode 0600, is finished, and the spool keeps
    nothing of it."""
    c = Crash(crash_env)
    jnl = decided_journal(c, [2, 4])
    spool_jnl = crash_env.mail / "alice.pop3d-journal"
    os.rename(jnl, spool_jnl)
    deliver(c.path, LATE)
    c.recover(by_session=False)
    new = b"".join(m for i, m in enumerate(MSGS, 1) if i not in (2, 4))
    assert c.path.read_bytes() == new + LATE
    assert not spool_jnl.exists()
    assert crash_env.leftovers() == []
