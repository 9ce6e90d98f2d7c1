"""
The spool from the session's side, under real root (issue 11, items 1,
6 and 7): two paths to one mailbox never give two sessions, and a
process holding exactly a session's credentials (a compromised session's
stand-in) can neither change the spool nor get root or the mail group
back.
"""
import errno
import json
import os
import subprocess
import sys

import pytest

from p3root import (ENV, MAIL_GID, Checks, Snapshot, message, proc_status,
                    table)


@pytest.mark.parametrize("path", ["same", "symlink"])
def test_two_paths_to_one_mailbox_give_one_session(world, acct, path):
    """SPOOL2 -> SPOOL (as /var/spool/mail -> /var/mail on many systems):
    pop3d -m SPOOL/%u holds the session, pop3d -m SPOOL2/%u for the same
    user gets -ERR [IN-USE]; once the first has quit, the second path
    works.  "same": both on SPOOL, the control."""
    v = acct["victim"]
    world.make_mailbox(v)
    world.deliver(v, message(1, v.name))
    spool2 = world.spool
    if path == "symlink":
        spool2 = world.base / "spool2"
        spool2.symlink_to(world.spool)
    first = world.start()
    r = first.login(v)
    assert r.startswith("+OK Maildrop has 1 messages"), \
        f"first: {r}\nlog:\n{first.log}"
    second = world.start(template=f"{spool2}/%u")
    r2 = second.login(v)
    log2 = second.log
    if r2.startswith("+OK"):
        second.quit()
    else:
        second.finish()
    assert r2.startswith("-ERR [IN-USE]"), \
        f"the second path to the same mailbox answered {r2!r} while the " \
        f"first session holds it\nfirst log:\n{first.log}\nsecond log:\n" \
        f"{log2}"
    assert first.quit() == 0, first.log
    third = world.start(template=f"{spool2}/%u")
    r3 = third.login(v)
    assert r3.startswith("+OK Maildrop has 1 messages"), \
        f"after the first session: {r3}\nlog:\n{third.log}"
    assert third.quit() == 0, third.log


STANDIN = r"""
import errno, json, os, sys
spool, own, others = sys.argv[1], sys.argv[2], sys.argv[3]
mail = int(sys.argv[4])
out = {}

def attempt(name, f, *args):
    try:
        f(*args)
        out[name] = 0
    except OSError as e:
        out[name] = e.errno

def create(p):
    os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))

attempt("create SPOOL/x", create, os.path.join(spool, "x"))
attempt("create SPOOL/other.lock", create, others + ".lock")
attempt("create SPOOL/own.lock", create, own + ".lock")
attempt("create SPOOL/own.pop3d-journal", create, own + ".pop3d-journal")
attempt("mkdir SPOOL/d", os.mkdir, os.path.join(spool, "d"))
attempt("symlink SPOOL/s", os.symlink, own, os.path.join(spool, "s"))
attempt("link own mailbox", os.link, own, os.path.join(spool, "l"))
attempt("unlink other's mailbox", os.unlink, others)
attempt("unlink own mailbox", os.unlink, own)
attempt("rename own mailbox", os.rename, own, own + ".moved")
attempt("rename other's mailbox over own", os.rename, others, own)
attempt("setgid(mail)", os.setgid, mail)
attempt("setegid(mail)", os.setegid, mail)
attempt("setresgid(-1, mail, -1)", os.setresgid, -1, mail, -1)
attempt("setgroups([mail])", os.setgroups, [mail])
attempt("setuid(0)", os.setuid, 0)
attempt("seteuid(0)", os.seteuid, 0)
attempt("setresuid(-1, 0, -1)", os.setresuid, -1, 0, -1)
with open("/proc/self/status") as f:
    status = f.read()
print(json.dumps({"results": out, "status": status}))
"""


def test_session_credentials_cannot_touch_the_spool(world, acct):
    """A process with the real session's exact credentials (forked as
    root, then setgroups([gid]), setresgid(gid x3), setresuid(uid x3)):
    every change to the spool fails with EACCES or EPERM, and so does
    every way back to root or to the mail group.  Its ids in /proc match
    the real session's."""
    v, t = acct["victim"], acct["third"]
    own = world.make_mailbox(v)
    world.deliver(v, message(1, v.name))
    others = world.make_mailbox(t)
    world.deliver(t, message(2, t.name))
    before = {p.name: (p.lstat().st_ino, p.read_bytes())
              for p in world.spool.iterdir()}

    srv = world.start()
    r = srv.login(v)
    assert r.startswith("+OK"), f"PASS: {r}\nlog:\n{srv.log}"
    sess = Snapshot("session", srv.pid)
    p = subprocess.run([sys.executable, "-c", STANDIN, str(world.spool),
                        str(own), str(others), str(MAIL_GID)],
                       capture_output=True, text=True, env=ENV, timeout=30,
                       preexec_fn=v.drop())
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    st = proc_status(0, got["status"])
    standin = Snapshot("stand-in", int(st["Pid"]), root="/", status=st)
    assert srv.quit() == 0, srv.log
    seen = table([sess, standin]) + "\nattempts (errno, 0 = it worked):\n" + \
        "\n".join(f"  {k}: {errno.errorcode.get(e, e)}"
                  for k, e in got["results"].items())
    print("\n" + seen)

    c = Checks()
    c.ids(sess, v.uid, v.gid)
    c.check(MAIL_GID not in sess.gid + sess.groups,
            "session: keeps the mail group")
    for k in ("uid", "gid", "groups", "capeff", "capprm"):
        c.check(getattr(standin, k) == getattr(sess, k),
                f"stand-in {k} {getattr(standin, k)} differs from the "
                f"session's {getattr(sess, k)}")
    for what, e in got["results"].items():
        c.check(e in (errno.EACCES, errno.EPERM),
                f"{what}: {'succeeded' if e == 0 else errno.errorcode[e]}, "
                f"expected EACCES or EPERM")
    after = {q.name: (q.lstat().st_ino, q.read_bytes())
             for q in world.spool.iterdir()}
    c.check(after == before, f"the spool changed: {sorted(before)} -> "
            f"{sorted(after)}")
    c.check(proc_status(os.getpid())["Uid"][0] == 0, "the test lost root")
    c.done(seen)
