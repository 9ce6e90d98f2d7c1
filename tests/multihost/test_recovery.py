"""A commit interrupted on host A is finished by the next session on host
B.  tests/fault/fault.so (LD_PRELOAD) counts every call of host A's pop3d
that changes a file on the volume (write, pwrite, fsync, ftruncate,
rename, unlink, link) and, at call N, kills the process (SIGKILL) or
fails the call with EIO.  Mail is then delivered through host B's mount
(every other point), and a session through host B must find exactly the
old mailbox or exactly the new one, plus the late mail: same inode, owner,
group and mode, no dotlock or journal left in the spool or the state
directory.  The journal is in the state directory (-S) on the volume,
which is why B can finish what A began.

Every point of one commit is killed; EIO is injected at every point too
(each is cheap enough over FUSE); timings go to tests/out.
"""
import os
import time

import pytest

from harness import FAULT, deliver, identity, make_mailbox, summary


def message(i, lines):
    body = "".join(f"line {j} of message {i}\n" for j in range(lines))
    if i % 2:
        body += ".a dotted line\n>From an escaped line\n"
    return (f"From u{i}@example.org Mon Jan  1 10:00:{i:02d} 2024\n"
            f"Subject: message {i}\n\n{body}\n").encode()


MSGS = [message(i, 3 + 150 * (i % 3)) for i in range(1, 7)]
OLD = b"".join(MSGS)
LATE = (b"From late@example.org Tue Jan  2 08:00:00 2024\n"
        b"Subject: delivered through host B after the crash\n\nstill here\n\n")
MODES = ("kill", "eio")


def session(host, name, pw, dele, fault=None):
    """One pipelined session on host; returns (bytes it sent, exit)."""
    env = None
    if fault is not None:
        env = {"LD_PRELOAD": str(FAULT), "FAULT_DIR": str(host.srv)}
        env.update(fault)
    s = host.session(env)
    s.send(f"USER {name}\r\nPASS {pw}\r\n" +
           "".join(f"DELE {d}\r\n" for d in dele) + "QUIT\r\n")
    out = s.until_eof()
    s.close()
    return out, s.wait(), s


def leftovers(cluster, name):
    spool = cluster.mounts["hostB"][0] / "spool"
    state = cluster.mounts["hostB"][0] / "state"
    left = [p.name for p in spool.iterdir() if p.name.startswith(name + ".")]
    left += [str(p.relative_to(state)) for p in state.rglob("*")
             if "journal" in p.name]
    return left


@pytest.mark.parametrize("dele", [[2, 4], [1, 2, 3, 4, 5]],
                         ids=["two", "all-but-last"])
def test_commit_interrupted_on_a_is_finished_on_b(cluster, hosts, account,
                                                  maildrops, dele):
    name, pw = maildrops.new(OLD)
    box_a = cluster.mounts["hostA"][0] / "spool" / name
    box_b = cluster.mounts["hostB"][0] / "spool" / name
    new = b"".join(m for i, m in enumerate(MSGS, 1) if i not in dele)
    # The commit runs as the mail user, who writes the points' log.
    logdir = hosts.a.local / f"points-{name}"
    logdir.mkdir()
    os.chown(logdir, account.uid, account.gid)
    points_log = logdir / "log"
    out, rc, s = session(hosts.a, name, pw, dele,
                         {"FAULT_LOG": str(points_log)})
    assert out.endswith(b"+OK pop3d signing off (%d messages left)\r\n"
                        % (6 - len(dele))), (out, s.log)
    assert box_b.read_bytes() == new
    points = len(points_log.read_text().splitlines())
    assert points >= 10, "the commit should pass through many steps"
    ident = identity(box_a)
    t0 = time.monotonic()
    done = {m: 0 for m in MODES}
    for mode in MODES:
        for at in range(1, points + 1):
            make_mailbox(box_a, OLD, account)
            assert identity(box_a) == ident
            out, rc, s = session(hosts.a, name, pw, dele,
                                 {"FAULT_AT": str(at), "FAULT_MODE": mode})
            where = f"{mode} at point {at} of {points}"
            if mode == "kill":
                assert rc != 0, (where, rc)
            elif out.endswith(b"signing off (%d messages left)\r\n"
                              % (6 - len(dele))):
                assert box_b.read_bytes() == new, where
            else:
                assert b"-ERR" in out, (where, out)
            late = LATE if at % 2 else b""
            if late:
                deliver(box_b, late)
            out, rc, s = session(hosts.b, name, pw, [])
            assert b"+OK Maildrop has" in out, \
                f"{where}: {out!r}\nhost B's pop3d:\n{s.log}"
            got = box_a.read_bytes()
            assert got in (OLD + late, new + late), \
                f"{where}: neither the old nor the new mailbox " \
                f"(+ late mail): {len(got)} bytes\n{s.log}"
            assert identity(box_a) == ident, where
            assert leftovers(cluster, name) == [], where
            done[mode] += 1
    elapsed = time.monotonic() - t0
    summary(f"recovery across hosts ({'-'.join(map(str, dele))})",
            {"crash points": points,
             **{f"{m} injected": done[m] for m in MODES},
             "seconds": f"{elapsed:.1f}",
             "per interrupted commit (s)":
                 f"{elapsed / sum(done.values()):.2f}"})
    assert all(done[m] == points for m in MODES)
