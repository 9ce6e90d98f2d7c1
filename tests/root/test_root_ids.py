"""
The ids of every process of a real session, read from /proc under real
root (issue 11, items 1, 4 and 5): the monitor before the login, the
pre-login process during AUTHORIZATION, the checker while PAM runs (held
there by the "slow" PAM service's pam_exec script), the session after the
drop (the monitor's pid, as before), and pop3d -r (recovery, as the
mailbox's owner).

Each test prints the table of what it saw (pytest -s shows it), checks
every process before it fails, and puts the table and every problem in
its assertion message.
"""
import fcntl
import os
import subprocess

import pytest

import p3root
from p3root import (MAIL_GID, POP3D, Checks, Snapshot, children,
                    is_socket_link, message, table, wait_for)


def served(chunk):
    """An mbox chunk as RETR serves it: no From_ line, no framing line."""
    return chunk[chunk.index(b"\n") + 1:-1]


@pytest.mark.parametrize("logging", ["stderr", "syslog"])
def test_ids_of_every_process(world, acct, hold, logging):
    """Monitor, pre-login, checker and session of one login, as the
    kernel sees them.  Under -d pop3d logs to a stderr that is a file,
    which the checker keeps as fd 2 (monitor.c: it is not the client's
    socket); logging to syslog, its fd 2 is /dev/null as well."""
    v, pre = acct["victim"], acct["prelogin"]
    world.make_mailbox(v)
    world.deliver(v, message(1, v.name))
    world.deliver(v, message(2, v.name), agent="procmail")
    srv = world.start(service=world.services["slow"],
                      debug=logging == "stderr")
    c = Checks()
    snaps = []

    def seen():
        return table(snaps) + f"\nlog:\n{srv.log}"

    srv.greeting()
    mon = Snapshot("monitor", srv.pid, fds=True)
    snaps.append(mon)
    client = mon.fds[0]
    assert is_socket_link(client) and mon.fds[1] == client, seen()
    c.ids(mon, 0, 0)

    # A reply in AUTHORIZATION comes from the pre-login process: by now
    # it is chrooted, dropped and confined.
    st, _ = srv.multi("CAPA")
    assert st.startswith("+OK"), f"CAPA: {st}\n{seen()}"
    kids = children(srv.pid)
    assert len(kids) == 1, f"children of the monitor: {kids}\n{seen()}"
    pl = Snapshot("pre-login", kids[0], fds=True)
    snaps.append(pl)
    c.ids(pl, pre.uid, pre.gid)
    c.check(pl.root == str(world.chroot),
            f"pre-login: root {pl.root}, expected the chroot {world.chroot}")
    c.check(pl.capeff == 0 and pl.capprm == 0,
            f"pre-login: CapEff {pl.capeff:x}, CapPrm {pl.capprm:x}")
    c.check(pl.nnp == "1", f"pre-login: NoNewPrivs {pl.nnp}, expected 1")
    c.check(pl.seccomp == "2", f"pre-login: Seccomp {pl.seccomp}, "
            f"expected 2 (a seccomp-bpf filter)")

    # PASS: the checker stays inside PAM (pam_exec) until released.
    r = srv.cmd(f"USER {v.name}")
    assert r.startswith("+OK"), f"USER: {r}\n{seen()}"
    srv.send(f"PASS {v.password}\r\n")
    cpid = hold.checker_pid()
    try:
        ck = Snapshot("checker", cpid, fds=True)
        ck_parent = p3root.proc_stat(cpid)
    finally:
        hold.release()
    snaps.append(ck)
    c.check(ck_parent is not None and ck_parent[0] == srv.pid,
            f"checker {cpid}: parent {ck_parent}, expected the monitor "
            f"{srv.pid}")
    c.ids(ck, 0, 0)
    c.check(ck.fds.get(0) == "/dev/null" and ck.fds.get(1) == "/dev/null",
            "checker: fds 0 and 1 are not /dev/null")
    if logging == "stderr":
        c.check(ck.fds.get(2) in ("/dev/null", str(srv.log_path)),
                "checker: fd 2 is neither /dev/null nor pop3d's log")
    else:
        c.check(ck.fds.get(2) == "/dev/null", "checker: fd 2 is not "
                "/dev/null")
    others = {n: t for n, t in ck.fds.items() if n > 2}
    c.check(len(others) == 1, f"checker: holds {others} beyond fds 0-2, "
            f"expected its answer's socket alone")
    c.check(client not in ck.fds.values(),
            f"checker: holds the client's socket {client}")

    r = srv.reply()
    assert r.startswith("+OK"), f"PASS: {r}\n{seen()}"
    sess = Snapshot("session", srv.pid, fds=True)
    snaps.append(sess)
    c.ids(sess, v.uid, v.gid)
    c.check(MAIL_GID not in sess.gid + sess.groups,
            "session: keeps the mail group")
    c.check(sess.capeff == 0 and sess.capprm == 0,
            f"session: CapEff {sess.capeff:x}, CapPrm {sess.capprm:x}")
    c.check(children(srv.pid) == [] or
            all(p3root.proc_stat(p)[2] == "Z" for p in children(srv.pid)),
            f"session: live children {children(srv.pid)}")
    print("\n" + table(snaps))
    got = srv.retr(2)
    c.check(got == served(message(2, v.name)), f"RETR 2 gave {got!r}")
    c.check(srv.quit() == 0, "QUIT: exit status not 0")
    c.done(seen())


def test_recover_drops_to_the_owner(world, acct):
    """pop3d -r MAILBOX as root: by the time it waits for the mailbox's
    lock (held here with fcntl, as procmail holds it) it runs as the
    mailbox's owner, with the owner's primary group and no other: not the
    file's group, mail."""
    v = acct["victim"]
    mbox = world.make_mailbox(v)
    world.deliver(v, message(1, v.name))
    argv = [POP3D, "-d", "-v"]
    if world.state_option:
        argv += ["-S", str(world.state)]
    argv += ["-r", str(mbox)]
    log = world.log_path()
    c = Checks()
    snap = None
    fd = os.open(mbox, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        with open(log, "wb") as errf:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                 stdout=errf, stderr=errf, env=p3root.ENV)
        try:
            def dropped():
                assert p.poll() is None, \
                    f"pop3d -r exited {p.returncode} while the mailbox " \
                    f"was locked\nlog:\n{log.read_text()}"
                st = p3root.proc_status(p.pid)
                return st["Uid"][0] != 0
            wait_for(dropped, "pop3d -r to drop privileges")
            snap = Snapshot("recover", p.pid)
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)
            try:
                rc = p.wait(p3root.IO_TIMEOUT)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    finally:
        os.close(fd)
    seen = table([snap]) + "\nlog:\n" + log.read_text(errors="replace")
    print("\n" + seen)
    c.ids(snap, v.uid, v.gid)
    c.check(MAIL_GID not in snap.gid + snap.groups,
            "recover: keeps the mail group (the mailbox file's group)")
    c.check(snap.capeff == 0 and snap.capprm == 0,
            f"recover: CapEff {snap.capeff:x}, CapPrm {snap.capprm:x}")
    c.check(rc == 0, f"pop3d -r exit status {rc}")
    c.done(seen)
