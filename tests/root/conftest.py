"""
Fixtures of the suite under real root: it changes the machine (useradd,
/etc/pam.d), so it runs only as root, and everything it adds is removed in
finalizers, failure or not.  Not root: every test skips, saying why.

Accounts (one set per run, tag printed): "victim" and "third" own
mailboxes; "other" is in group mail, as procmail and dotlockfile are; and
"prelogin" is the unprivileged account of the pre-login process (pop3d
-u).  PAM services: "plain" is the real pam_unix stack (@include
common-auth, common-account); "slow" puts pam_exec in front of it with a
script that holds the checker inside PAM until the test lets it go
(Hold), so that the checker can be looked at.
"""
import os
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest

import p3root
from p3root import PAM_EXEC, Accounts, World, add_service


def pytest_runtest_setup(item):
    if os.geteuid() != 0:
        pytest.skip("tests/root needs real root: it adds accounts with "
                    "useradd and PAM services in /etc/pam.d")


class Hold:
    """The pam_exec script's side door: the script writes its parent's pid
    (the checker) to PID and waits, at most a minute, until RELEASE
    exists."""

    def __init__(self, d):
        self.dir = Path(d)
        self.pidfile = self.dir / "checker.pid"
        self.release_file = self.dir / "release"
        self.script = self.dir / "hold.sh"
        self.script.write_text(
            "#!/bin/sh\n"
            "# Holds the pop3d checker inside PAM until the test lets go.\n"
            f"echo $PPID >{self.pidfile}.tmp && "
            f"mv {self.pidfile}.tmp {self.pidfile}\n"
            "i=0\n"
            f"while [ ! -e {self.release_file} ] && [ $i -lt 1200 ]; do\n"
            "\tsleep 0.05\n"
            "\ti=$((i + 1))\n"
            "done\n"
            "exit 0\n")
        self.script.chmod(0o755)
        self.reset()

    def reset(self):
        for p in (self.pidfile, self.release_file):
            try:
                p.unlink()
            except FileNotFoundError:
                pass

    def checker_pid(self, timeout=p3root.IO_TIMEOUT):
        def get():
            try:
                return int(self.pidfile.read_text())
            except (FileNotFoundError, ValueError):
                return None
        return p3root.wait_for(get, "the checker inside PAM", timeout)

    def release(self):
        self.release_file.touch()


@pytest.fixture(scope="session")
def suite():
    """Accounts, PAM services and the Hold, for the whole run."""
    if os.geteuid() != 0:
        pytest.skip("tests/root needs real root")
    p3root.sweep_leftovers()
    accts = Accounts()
    pam_files = []
    base = Path(tempfile.mkdtemp(prefix="p3rt-suite-"))
    try:
        base.chmod(0o755)
        pw = secrets.token_hex(8)
        a = {
            "victim": accts.add("v", password="v" + pw),
            "third": accts.add("t", password="t" + pw),
            "other": accts.add("o", password="o" + pw, groups=["mail"]),
        }
        a["prelogin"] = accts.add("p", system=True)
        hold = Hold(base)
        plain = f"{p3root.PREFIX}-{accts.tag}"
        slow = f"{plain}-slow"
        pam_files.append(add_service(plain, ["@include common-auth",
                                             "@include common-account"]))
        pam_files.append(add_service(slow, [
            f"auth optional {PAM_EXEC} quiet type=auth {hold.script}",
            "@include common-auth",
            "@include common-account"]))
        print(f"\ntests/root: accounts {sorted(accts.names)}, PAM services "
              f"{plain}, {slow}")
        yield {"accounts": a, "services": {"plain": plain, "slow": slow},
               "hold": hold, "tag": accts.tag}
    finally:
        errors = accts.remove()
        for p in pam_files:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        shutil.rmtree(base, ignore_errors=True)
        assert not errors, errors


@pytest.fixture
def world(suite):
    base = tempfile.mkdtemp(prefix="p3rt-")
    w = World(base, suite["accounts"], suite["services"])
    suite["hold"].reset()
    try:
        yield w
    finally:
        suite["hold"].release()         # a checker still held goes on
        errors = w.cleanup()
        suite["hold"].reset()
        shutil.rmtree(base, ignore_errors=True)
        assert not errors, errors


@pytest.fixture
def hold(suite):
    return suite["hold"]


@pytest.fixture
def acct(suite):
    return suite["accounts"]
