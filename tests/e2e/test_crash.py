"""Crash-atomic UPDATE: a real session's commit is interrupted at every
call that changes a file (write, pwrite, fsync, ftruncate, rename, unlink,
link) by SIGKILL or by failing the call with ENOSPC, EIO or EDQUOT
(tests/fault/fault.so).  Mail is delivered after the crash, the way
procmail does (conftest.deliver, which breaks a killed process's dotlock
as liblockfile does), for every other point.  Then recovery runs, alternately
as `pop3d -r` and as the next session.  The mailbox must be exactly the
old one or exactly the new one, plus the late mail, with the same inode,
owner, group and mode, and no journal or lock left behind."""
import os
import subprocess

import pytest

from conftest import POP3D, REPO, ALICE_UID, MAIL_GID, deliver

FAULT = REPO / "tests" / "fault" / "fault.so"
MODES = ("kill", "enospc", "eio", "edquot")


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

    def session(self, dele, fault=None):
        e = self.env.env()
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
def test_crash_at_every_step(pop3d_env, dele):
    c = Crash(pop3d_env)
    new = b"".join(m for i, m in enumerate(MSGS, 1) if i not in dele)
    log = pop3d_env.tmp / "points"
    c.reset()
    p = c.session(dele, {"FAULT_LOG": str(log)})
    assert p.stdout.endswith(b"+OK pop3d signing off (%d messages left)\r\n"
                             % (6 - len(dele))), p.stderr.decode()
    assert c.path.read_bytes() == new
    points = len(log.read_text().splitlines())
    assert points >= 10, "the commit should pass through many steps"
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
            assert pop3d_env.leftovers() == [], (mode, at)
            injected += 1
    assert injected == points * len(MODES)


def test_nothing_deleted_writes_nothing(pop3d_env):
    c = Crash(pop3d_env)
    c.reset()
    before = c.path.stat()
    log = pop3d_env.tmp / "points"
    p = c.session([], {"FAULT_LOG": str(log)})
    assert p.stdout.endswith(b"+OK pop3d signing off (6 messages left)\r\n")
    calls = log.read_text().split() if log.exists() else []
    # Only the dotlock's own files are written; never the mailbox.
    assert "ftruncate" not in calls and "pwrite" not in calls and \
        "rename" not in calls
    after = c.path.stat()
    assert after.st_mtime_ns == before.st_mtime_ns
    assert c.path.read_bytes() == OLD
