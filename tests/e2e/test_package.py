"""The Debian package (debian/): it builds with dpkg-buildpackage, lintian
finds no error or warning in it, blhc finds every hardening flag in the
build log, it holds what it should, and its life on this machine works:
apt-get install of the .deb, a real login and RETR through the installed
/usr/sbin/pop3d with the installed PAM service (pam_unix, a real account),
and apt-get purge leaving nothing the package made.

The package is built from a copy of the tree in a scratch directory, so the
tree under test is not touched and dpkg-buildpackage's "../" outputs land in
scratch.  The scratch directory is under /tmp with mode 0755: apt's _apt
user reads the .deb from there, and the test's account reads its mailbox
there after pop3d drops to it.

The install test changes the machine and restores it: it skips (with the
reason) where it could not, i.e. when a pop3d package is installed or left
as configuration files, another pop3-server is installed (the package
conflicts with it), or files the package would own or purge are already
there.  It runs twice: without a "pop3d" account (postinst makes it,
purge removes it) and with one made as make install makes it (the package
uses it and leaves it).  An account already on the machine (make install,
bench/, by hand) is used for the second run and left as it is; the first
run then skips.  The test's own mail account (p3pkgt + random hex) and
every file it makes are removed.

Only the install test needs root; the build and lintian tests run as any
user.
"""
import glob
import grp
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import REPO, Server, deliver, make_message, unstuff

PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
ENV = {"PATH": PATH, "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
VERSION = "0.2-1"
SBIN = "/usr/sbin/pop3d"
PAM_FILE = "/etc/pam.d/pop3d"
STATE_DIR = "/var/lib/pop3d"
RUN_DIR = "/run/pop3d"
ACCOUNT = "pop3d"
ACCOUNT_GECOS = "pop3d pre-login (Debian package)"   # debian/pop3d.postinst
# What the package owns on the system, beyond /usr/share/doc/pop3d.
OWNED = (SBIN, PAM_FILE, STATE_DIR, "/lib/systemd/system/pop3d.socket",
         "/lib/systemd/system/pop3d@.service",
         "/usr/share/man/man8/pop3d.8.gz", "/usr/share/doc/pop3d")

needs_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="needs root: installs and purges the package with apt-get and "
           "makes a system account with useradd")


def run(argv, timeout=300, check=True, **kw):
    if "input" not in kw:
        kw["stdin"] = subprocess.DEVNULL
    r = subprocess.run(argv, env=kw.pop("env", ENV), capture_output=True,
                       text=True, timeout=timeout, **kw)
    if check:
        assert r.returncode == 0, \
            f"{' '.join(argv)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def need(tool):
    exe = shutil.which(tool, path=PATH)
    assert exe, f"{tool} missing: make check installs it (tools/deps.sh)"
    return exe


def copy_ignore(directory, names):
    """What shutil.copytree leaves out: VCS data, test outputs, and what
    a dpkg-buildpackage in the tree left in debian/ (every directory but
    debian/source, and dh's files)."""
    d = Path(directory)
    skip = {".git", "__pycache__", ".pytest_cache", ".peers"}
    if d.name == "tests":
        skip.add("out")
    if d.name == "debian":
        skip |= {"files", "debhelper-build-stamp"}
        skip |= {n for n in names if n != "source" and (d / n).is_dir()}
        skip |= {n for n in names if n.endswith(
            (".substvars", ".debhelper", ".debhelper.log"))}
    return skip & set(names)


@pytest.fixture(scope="module")
def scratch():
    d = Path(tempfile.mkdtemp(prefix="pop3d-pkgtest-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def built(scratch):
    """dpkg-buildpackage -us -uc -b in a copy of the tree: the .deb, the
    .changes and the build log."""
    for tool in ("dpkg-buildpackage", "dh", "fakeroot"):
        need(tool)
    src = scratch / "src"
    shutil.copytree(REPO, src, ignore=copy_ignore, symlinks=True)
    env = dict(ENV, HOME=str(scratch))
    r = run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, env=env,
            timeout=600, check=False)
    log = r.stdout + r.stderr
    (scratch / "build.log").write_text(log)
    assert r.returncode == 0, f"dpkg-buildpackage failed:\n{log[-6000:]}"
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    deb = scratch / f"pop3d_{VERSION}_{arch}.deb"
    changes = scratch / f"pop3d_{VERSION}_{arch}.changes"
    assert deb.is_file() and changes.is_file(), sorted(os.listdir(scratch))
    return {"deb": deb, "changes": changes, "log": scratch / "build.log"}


# ---- the package as built ---------------------------------------------------

def test_lintian_no_error_or_warning(built):
    need("lintian")
    r = run(["lintian", "--fail-on", "error,warning", "--display-info",
             str(built["changes"])], check=False)
    out = r.stdout + r.stderr
    print(out)
    tags = [x for x in out.splitlines() if re.match(r"[EW]: ", x)]
    assert tags == [] and r.returncode == 0, out
    assert "unused-override" not in out and "mismatched-override" \
        not in out, out
    # The one override (debian/pop3d.lintian-overrides) is still needed.
    # (lintian 2.116 counts shown overrides toward --fail-on: no status
    # check here.)
    r = run(["lintian", "--show-overrides", str(built["changes"])],
            check=False)
    out = r.stdout + r.stderr
    assert re.findall(r"(?m)^[EWO]: .*$", out) == [
        "O: pop3d: initial-upload-closes-no-bugs "
        "[usr/share/doc/pop3d/changelog.Debian.gz:1]"], out


def test_build_log_has_hardening_flags(built):
    """blhc: every compile and link line carries dpkg-buildflags' CFLAGS,
    CPPFLAGS and LDFLAGS (hardening=+all: bindnow too)."""
    need("blhc")
    r = run(["blhc", "--bindnow", str(built["log"])], check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    log = built["log"].read_text()
    link = [x for x in log.splitlines() if re.search(r" -o pop3d ", x)]
    assert link and all("-z,now" in x and "-z,relro" in x for x in link), \
        link


def test_package_contents(built):
    r = run(["dpkg-deb", "-c", str(built["deb"])])
    entries = {}
    for line in r.stdout.splitlines():
        f = line.split(None, 5)
        entries[f[5].removeprefix(".").rstrip("/") or "/"] = (f[0], f[1])
    want = {
        SBIN: ("-rwxr-xr-x", "root/root"),
        PAM_FILE: ("-rw-r--r--", "root/root"),
        "/lib/systemd/system/pop3d.socket": ("-rw-r--r--", "root/root"),
        "/lib/systemd/system/pop3d@.service": ("-rw-r--r--", "root/root"),
        "/usr/share/man/man8/pop3d.8.gz": ("-rw-r--r--", "root/root"),
        "/usr/share/doc/pop3d/README.Debian": ("-rw-r--r--", "root/root"),
        "/usr/share/doc/pop3d/copyright": ("-rw-r--r--", "root/root"),
        "/usr/share/doc/pop3d/examples/stunnel-pop3s.conf":
            ("-rw-r--r--", "root/root"),
        "/usr/share/doc/pop3d/examples/xinetd-pop3d":
            ("-rw-r--r--", "root/root"),
        "/usr/share/doc/pop3d/examples/xinetd-pop3s":
            ("-rw-r--r--", "root/root"),
        STATE_DIR: ("drwxr-xr-x", "root/root"),
    }
    for path, mode in want.items():
        assert entries.get(path) == mode, (path, entries.get(path))
    # Nothing under /usr/local, and no active xinetd service.
    assert not [p for p in entries if p.startswith("/usr/local")]
    assert not [p for p in entries if p.startswith("/etc/xinetd.d")]
    assert not [p for p in entries if p.startswith("/etc/systemd")]

    # The installed files name the installed binary.
    x = Path(tempfile.mkdtemp(dir=built["deb"].parent))
    run(["dpkg-deb", "-x", str(built["deb"]), str(x)])
    svc = (x / "lib/systemd/system/pop3d@.service").read_text()
    assert re.findall(r"(?m)^ExecStart=(.*)$", svc) == [SBIN]
    for f in ("xinetd-pop3d", "xinetd-pop3s"):
        xi = (x / "usr/share/doc/pop3d/examples" / f).read_text()
        assert re.findall(r"(?m)^\s*server\s*=\s*(\S+)\s*$", xi) == [SBIN]
    assert (x / "etc/pam.d/pop3d").read_bytes() == \
        (REPO / "pam.d/pop3d").read_bytes()


def test_package_control(built):
    r = run(["dpkg-deb", "-I", str(built["deb"])])
    info = r.stdout
    fields = dict(re.findall(r"(?m)^ (\S+): (.*)$", info))
    assert fields["Package"] == "pop3d"
    assert fields["Version"] == VERSION
    assert fields["Section"] == "mail"
    assert fields["Priority"] == "optional"
    for f in ("Provides", "Conflicts", "Replaces"):
        assert fields.get(f) == "pop3-server", (f, info)
    depends = [d.strip() for d in fields["Depends"].split(",")]
    assert "liblockfile-bin" in depends, depends
    assert "adduser" in depends, depends
    assert any(d.startswith("libpam0g") for d in depends), depends
    # liblockfile and libseccomp (LGPL) are linked in statically: their
    # sources are named; nothing of them is loaded at run time.
    assert re.fullmatch(r"liblockfile \(= \S+\), libseccomp \(= \S+\)",
                        fields.get("Built-Using", "")), info
    assert not any(d.startswith("libseccomp") for d in depends), depends
    # /etc/pam.d/pop3d is the one conffile; the maintainer scripts.
    ctl = Path(tempfile.mkdtemp(dir=built["deb"].parent))
    run(["dpkg-deb", "-e", str(built["deb"]), str(ctl)])
    assert (ctl / "conffiles").read_text().split() == [PAM_FILE]
    for script in ("postinst", "prerm", "postrm"):
        assert os.access(ctl / script, os.X_OK), script


# ---- installed on this machine ----------------------------------------------

def dpkg_status(pkg):
    r = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", pkg], check=False)
    return r.stdout.strip() if r.returncode == 0 else "un"


def installed_packages():
    r = run(["dpkg-query", "-W", "-f=${Package}:${Architecture} "
             "${Version} ${db:Status-Abbrev}\n"])
    return sorted(x for x in r.stdout.splitlines()
                  if not x.rstrip().endswith(" un"))


def other_pop3_servers():
    r = run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev} "
             "${Provides}\n"])
    out = []
    for line in r.stdout.splitlines():
        name, status, *provides = line.split(None, 2)
        if status.startswith("i") and provides and \
                re.search(r"(^|[ ,])pop3-server\b", provides[0]):
            out.append(name)
    return out


def put_back(versions, manual):
    """Reinstalls packages the install displaced, the same versions (from
    apt's cache: make check installed them), without starting their
    services, and with their manual/auto marks as they were."""
    policy = Path("/usr/sbin/policy-rc.d")
    made = not policy.exists()
    if made:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends"] +
            [f"{p}={v}" for p, v in versions.items()], timeout=600,
            env=dict(ENV, DEBIAN_FRONTEND="noninteractive"))
    finally:
        if made:
            policy.unlink()
    auto = [p for p in versions if p not in manual]
    if auto:
        run(["apt-mark", "auto"] + auto)


def getpw(name):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def getgr(name):
    try:
        return grp.getgrnam(name)
    except KeyError:
        return None


def traces():
    """dpkg's and deb-systemd-helper's records of a pop3d package (and
    units make install put in /etc/systemd/system, which stay)."""
    found = glob.glob("/var/lib/dpkg/info/pop3d.*")
    for top in ("/var/lib/systemd", "/etc/systemd/system"):
        found += glob.glob(f"{top}/**/pop3d*", recursive=True)
    return sorted(found)


def machine_state():
    """What the package may change: its files, the pop3d account and
    group, and the set of installed packages."""
    pw, gr = getpw(ACCOUNT), getgr(ACCOUNT)
    return {
        "files": {p: os.path.lexists(p) for p in OWNED + (RUN_DIR,)},
        "traces": traces(),
        "account": tuple(pw) if pw else None,
        "group": (gr.gr_name, gr.gr_gid) if gr else None,
        "packages": installed_packages(),
    }


# pop3-server packages make check itself installs (tools/deps.sh, for
# test_migrate): the install test may displace them, as apt-get does for
# a conflicting package, and puts them back, the same version, after the
# purge.  Any other one is the administrator's, and the test skips.
OUR_POP3_SERVERS = {"dovecot-pop3d"}


def displaceable(others):
    deps = (REPO / "tools" / "deps.sh").read_text().split()
    return [o for o in others if o in OUR_POP3_SERVERS and o in deps]


def reasons_to_skip(state):
    why = []
    st = dpkg_status("pop3d")
    if st != "un":
        why.append(f"a pop3d package is on this machine (dpkg status {st}); "
                   "the test would purge the administrator's install")
    others = [o for o in other_pop3_servers()
              if o not in displaceable(other_pop3_servers())]
    if others:
        why.append(f"{', '.join(others)} provide pop3-server, which the "
                   "package conflicts with: apt-get would remove them")
    there = [p for p, e in state["files"].items() if e]
    if there:
        why.append(f"{', '.join(there)} already exist: the package would "
                   "overwrite them and purge would remove them")
    if state["account"] and \
            state["account"][4].split(",")[0] == ACCOUNT_GECOS:
        why.append("an account pop3d marked as the package's exists "
                   "without the package: purge would remove it")
    return why


@pytest.fixture
def mail_account(scratch):
    """A real account of the test's own (p3pkgt + random hex), with a
    password set through chpasswd, and a spool directory like /var/mail
    (root:mail 2775) in scratch holding its mbox (user:mail 0660)."""
    name = "p3pkgt" + secrets.token_hex(3)
    password = "Pkg-" + secrets.token_hex(8)
    print(f"test account {name}")
    assert getpw(name) is None and getgr(name) is None, name
    run(["useradd", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", "--user-group",
         "--comment", "pop3d package test (temporary)", name])
    spool = None
    try:
        run(["chpasswd"], input=f"{name}:{password}\n")
        pw = pwd.getpwnam(name)
        mail_gid = grp.getgrnam("mail").gr_gid
        spool = Path(tempfile.mkdtemp(prefix="spool-", dir=scratch))
        os.chown(spool, 0, mail_gid)
        spool.chmod(0o2775)
        mbox = spool / name
        mbox.touch()
        os.chown(mbox, pw.pw_uid, mail_gid)
        mbox.chmod(0o660)
        yield {"name": name, "password": password, "pw": pw,
               "spool": spool, "mbox": mbox}
    finally:
        run(["userdel", name], check=False)
        if getgr(name) is not None:
            run(["groupdel", name], check=False)
        if spool is not None:
            shutil.rmtree(spool, ignore_errors=True)
        assert getpw(name) is None and getgr(name) is None, name


def session(acct):
    """USER/PASS/STAT/RETR/QUIT through the installed /usr/sbin/pop3d as
    root on a socketpair, with PAM service pop3d (/etc/pam.d/pop3d)."""
    msgs = [make_message(1, extra_headers=b"X-Test: package\n"),
            make_message(2, body=b".leading dot\nand more\n")]
    for chunk, _ in msgs:
        deliver(acct["mbox"], chunk)
    before = acct["mbox"].read_bytes()
    run_dir = acct["spool"].parent / (acct["spool"].name + "-run")
    log = acct["spool"].parent / (acct["spool"].name + "-pop3d.log")
    argv = [SBIN, "-d", "-v", "-m", f"{acct['spool']}/%u",
            "-R", str(run_dir), "-t", "30", "-D", "0"]
    srv = Server(argv, {"PATH": PATH, "LANG": "C"}, log)
    try:
        size = sum(len(w) for _, w in msgs)
        assert srv.login(acct["name"], acct["password"]) == \
            f"+OK Maildrop has 2 messages ({size} octets)", srv.log
        assert srv.cmd("STAT") == f"+OK 2 {size}"
        for i, (_, wire) in enumerate(msgs, 1):
            st, body = srv.multi(f"RETR {i}")
            assert st.startswith("+OK"), st
            assert unstuff(body) == wire, i
        assert srv.cmd("QUIT").startswith("+OK")
        srv.wait(expect=0)
    finally:
        srv.close()
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()
    # The pre-login process ran as the package's account, the session as
    # the mail user.
    pre = getpw(ACCOUNT)
    text = srv.log
    m = re.search(r"pre-login process \d+: uid (\d+), gid (\d+)", text)
    assert m and (int(m[1]), int(m[2])) == (pre.pw_uid, pre.pw_gid), text
    m = re.search(r"session process \d+: uid (\d+), gid (\d+)", text)
    assert m and int(m[1]) == acct["pw"].pw_uid, text
    # Nothing deleted: the mailbox is as delivered.
    assert acct["mbox"].read_bytes() == before


@pytest.fixture(params=["no-account", "account-of-make-install"])
def prior_account(request):
    """The pop3d account before the install: none, so postinst makes it
    and purge removes it; or one made as make install makes it, which
    the package must use and leave.  An account already on the machine
    serves the second case only; the test makes and removes one for the
    second case when there is none."""
    present = getpw(ACCOUNT) is not None
    if request.param == "no-account":
        if present:
            pytest.skip("a pop3d account exists (make install, bench/ or "
                        "by hand): postinst's creation and purge's removal "
                        "of it cannot be tested without removing it")
        yield None
        return
    if present:
        yield getpw(ACCOUNT)
        return
    assert getgr(ACCOUNT) is None, "a pop3d group without a pop3d account"
    run(["useradd", "--system", "--no-create-home", "--home-dir",
         "/nonexistent", "--shell", "/usr/sbin/nologin", "--user-group",
         ACCOUNT])
    try:
        yield getpw(ACCOUNT)
    finally:
        run(["userdel", ACCOUNT], check=False)
        if getgr(ACCOUNT) is not None:
            run(["groupdel", ACCOUNT], check=False)
        assert getpw(ACCOUNT) is None and getgr(ACCOUNT) is None


@needs_root
def test_install_login_purge(built, mail_account, prior_account):
    need("apt-get")
    before = machine_state()
    why = reasons_to_skip(before)
    if why:
        pytest.skip("; ".join(why))
    account_before = before["account"]
    assert account_before == (tuple(prior_account) if prior_account
                              else None)
    deb = built["deb"]
    # apt-get must install pop3d alone: its dependencies are here (make
    # check installs them), so nothing is downloaded or removed.
    # (--no-download would say so too, but apt 2.6 refuses local .debs
    # with it.)
    r = run(["apt-get", "install", "-s", "-q", "--no-install-recommends",
             str(deb)], timeout=600)
    acts = re.findall(r"(?m)^(Inst|Remv|Conf|Purg) (\S+)", r.stdout)
    displaced = displaceable(other_pop3_servers())
    if sorted(set(acts)) != sorted([("Conf", "pop3d"), ("Inst", "pop3d")] +
                                   [("Remv", d) for d in displaced]):
        pytest.skip(f"apt-get would do more than install pop3d: {acts}")
    # What to put back: the same versions, marked as they were.
    restore = {d: run(["dpkg-query", "-W", "-f=${Version}", d]).stdout
               for d in displaced}
    manual = set(run(["apt-mark", "showmanual"]).stdout.split())
    installed = False
    try:
        r = run(["apt-get", "install", "-y", "-q",
                 "--no-install-recommends", str(deb)], timeout=600)
        installed = True
        assert dpkg_status("pop3d") == "ii", r.stdout
        # Nothing but pop3d was installed (its dependencies were there).
        added = sorted(p for p in set(installed_packages()) -
                       set(before["packages"])
                       if p.split(":")[0] not in displaced)
        assert [p.split(":")[0] for p in added] == ["pop3d"], added

        # The files, the account, the state directory.
        for p in OWNED:
            assert os.path.exists(p), p
        st = os.stat(STATE_DIR)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == \
            (0, 0, 0o755)
        pre = getpw(ACCOUNT)
        assert pre is not None, "postinst made no pop3d account"
        if account_before is None:
            assert 0 < pre.pw_uid < 1000, tuple(pre)
            gecos = pre.pw_gecos.split(",")[0]     # adduser adds ",,,"
            assert (gecos, pre.pw_dir, pre.pw_shell) == \
                (ACCOUNT_GECOS, "/nonexistent", "/usr/sbin/nologin")
            assert getgr(ACCOUNT).gr_gid == pre.pw_gid
        else:
            assert tuple(pre) == account_before, "postinst changed it"
        r = run(["dpkg-query", "-W", "-f=${Conffiles}", "pop3d"])
        assert PAM_FILE in r.stdout, r.stdout
        # Not enabled: no symlink in sockets.target.wants.
        assert not os.path.lexists(
            "/etc/systemd/system/sockets.target.wants/pop3d.socket")
        r = run([SBIN, "-V"], check=False)
        assert r.stdout.startswith("pop3d "), r.stdout + r.stderr

        session(mail_account)

        run(["apt-get", "purge", "-y", "-q", "pop3d"], timeout=600)
        installed = False
    finally:
        if installed:
            run(["apt-get", "purge", "-y", "-q", "pop3d"], timeout=600,
                check=False)
        if restore:
            put_back(restore, manual)

    after = machine_state()
    # Restore before asserting: an account of the package's that purge
    # left is removed here too.
    pw = getpw(ACCOUNT)
    if account_before is None and pw is not None and \
            pw.pw_gecos.split(",")[0] == ACCOUNT_GECOS:
        run(["userdel", ACCOUNT], check=False)
        if getgr(ACCOUNT) is not None:
            run(["groupdel", ACCOUNT], check=False)
    assert dpkg_status("pop3d") == "un"
    left = [p for p, e in after["files"].items() if e]
    assert left == [], left
    assert after["traces"] == before["traces"], after["traces"]
    assert after["account"] == account_before
    assert after["group"] == before["group"]
    assert after["packages"] == before["packages"]
