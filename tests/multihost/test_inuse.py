"""Two sessions for one maildrop through different hosts never both get
it: the session lock is an OFD lock in the state directory (-S) on the
shared volume, so a session through host A makes a login through host B
answer -ERR [IN-USE], and the reverse; through HAProxy, of two concurrent
logins exactly one gets +OK to PASS."""
import re
import threading

from harness import Pop3, message, proxy_v1, proxy_v2


def login(host, launcher, name, pw, src="192.0.2.10"):
    c = Pop3.tcp(host.addr, launcher.port, header=proxy_v2(src))
    return c, c.login(name, pw)


def test_in_use_across_hosts_both_ways(hosts, maildrops):
    chunk, wire = message("inuse")
    name, pw = maildrops.new(chunk)
    ok = f"+OK Maildrop has 1 messages ({len(wire)} octets)"
    for first, second in (((hosts.a, hosts.la), (hosts.b, hosts.lb)),
                          ((hosts.b, hosts.lb), (hosts.a, hosts.la))):
        c1, r1 = login(*first, name, pw)
        assert r1 == ok, f"{r1}\n{first[1].log[-2000:]}"
        c2, r2 = login(*second, name, pw)
        assert r2.startswith("-ERR [IN-USE]"), \
            f"host {second[0].name} answered {r2!r} while host " \
            f"{first[0].name} held the maildrop\n{second[1].log[-2000:]}"
        c2.close()
        # The first session is unaffected, and once it is over the
        # other host gets the maildrop.
        assert c1.cmd("STAT") == f"+OK 1 {len(wire)}"
        assert c1.cmd("QUIT").startswith("+OK")
        assert c1.until_eof() == b""
        c1.close()
        c3, r3 = login(*second, name, pw)
        assert r3 == ok, r3
        assert c3.cmd("QUIT").startswith("+OK")
        c3.close()


def test_in_use_with_v1_header_and_same_host(hosts, maildrops):
    """The same holds on one host, and whichever header the balancer
    sends."""
    name, pw = maildrops.new(message("inuse1")[0])
    c1 = Pop3.tcp(hosts.a.addr, hosts.la.port,
                  header=proxy_v1("192.0.2.11"))
    assert c1.login(name, pw).startswith("+OK Maildrop has 1 ")
    for h, la in ((hosts.a, hosts.la), (hosts.b, hosts.lb)):
        c2 = Pop3.tcp(h.addr, la.port, header=proxy_v1("192.0.2.12"))
        assert c2.login(name, pw).startswith("-ERR [IN-USE]")
        c2.close()
    assert c1.cmd("QUIT").startswith("+OK")
    c1.close()


def test_two_concurrent_logins_through_haproxy(hosts, haproxy, maildrops):
    """Two clients log in at the same moment through HAProxy (leastconn
    sends them to different hosts, round robin as well): exactly one gets
    the maildrop, every time."""
    rounds = 10
    hosts_seen = set()
    for rnd in range(rounds):
        name, pw = maildrops.new(message(f"conc{rnd}")[0])
        fe = "lc" if rnd % 2 else "rr"
        clients = [haproxy.connect(fe) for _ in range(2)]
        for c in clients:
            assert c.line() == "+OK pop3d ready"
            assert c.cmd(f"USER {name}").startswith("+OK")
        go = threading.Barrier(2)
        replies = [None, None]

        def pass_(i):
            go.wait()
            replies[i] = clients[i].cmd(f"PASS {pw}")
        ts = [threading.Thread(target=pass_, args=(i,)) for i in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        good = [r for r in replies if r and r.startswith("+OK Maildrop")]
        busy = [r for r in replies if r and r.startswith("-ERR [IN-USE]")]
        assert len(good) == 1 and len(busy) == 1, \
            f"round {rnd} ({fe}): PASS answered {replies}"
        for c, r in zip(clients, replies):
            if r.startswith("+OK"):
                assert c.cmd("QUIT").startswith("+OK")
            c.close()
        for la in (hosts.la, hosts.lb):
            if re.search(rf"\b{name}\b", la.log):
                hosts_seen.add(la.host.name)
    # Both hosts took part (the lock was contended across hosts).
    assert hosts_seen == {"a", "b"}, hosts_seen
