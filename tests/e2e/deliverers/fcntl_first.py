#!/usr/bin/python3
"""A local delivery agent that locks in the order Debian's Dovecot LDA and
mutt use: open the mailbox, fcntl-lock it, then take the dotlock on the
already open file.  Never waits for one lock while holding the other: when
the dotlock is busy it drops the fcntl lock, sleeps a little and retries,
until its retry budget is spent.

    fcntl_first.py MAILBOX BUDGET_SECONDS < message

The message (From_ line, message, framing empty line) is read from stdin
and appended as it is.  Because the file was opened before it was locked,
the agent checks, under both locks, that MAILBOX still names the inode it
has open and that the inode has exactly one link: a mailbox replaced by
rename() (the way some POP servers commit) would swallow the mail into an
unlinked file.

On success it prints "tries N" (N lock attempts).  Exit status: 0
delivered, 75 (EX_TEMPFAIL) retry budget spent, nothing written,
70 (EX_SOFTWARE) the mailbox was replaced under us, nothing written,
74 (EX_IOERR) any other error.
"""
import errno
import fcntl
import os
import random
import sys
import time

EX_OK, EX_SOFTWARE, EX_IOERR, EX_TEMPFAIL = 0, 70, 74, 75


def try_fcntl(fd):
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EAGAIN):
            return False
        raise


def try_dotlock(lock):
    try:
        lfd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(lfd, b"%d\n" % os.getpid())
    finally:
        os.close(lfd)
    return True


def deliver(path, budget, data):
    lock = path + ".lock"
    deadline = time.monotonic() + budget
    tries = 0
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        while True:
            tries += 1
            if try_fcntl(fd):
                if try_dotlock(lock):
                    break
                fcntl.lockf(fd, fcntl.LOCK_UN)
            if time.monotonic() >= deadline:
                sys.stderr.write(f"fcntl_first: {path}: locks busy for "
                                 f"{budget}s ({tries} tries), deferred\n")
                return EX_TEMPFAIL
            time.sleep(random.uniform(0.002, 0.02))
        try:
            held = os.fstat(fd)
            try:
                named = os.stat(path)
            except FileNotFoundError:
                named = None
            if named is None or \
                    (named.st_dev, named.st_ino) != (held.st_dev,
                                                      held.st_ino) or \
                    held.st_nlink != 1:
                sys.stderr.write(
                    f"fcntl_first: {path}: REPLACED under the lock: open "
                    f"inode {held.st_ino} nlink {held.st_nlink}, path names "
                    f"{named.st_ino if named else None}\n")
                return EX_SOFTWARE
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
            sys.stdout.write(f"tries {tries}\n")
        finally:
            os.unlink(lock)
            fcntl.lockf(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return EX_OK


def main():
    if len(sys.argv) != 3:
        sys.stderr.write("usage: fcntl_first.py MAILBOX BUDGET_SECONDS\n")
        return 64
    data = sys.stdin.buffer.read()
    try:
        return deliver(sys.argv[1], float(sys.argv[2]), data)
    except OSError as e:
        sys.stderr.write(f"fcntl_first: {e}\n")
        return EX_IOERR


if __name__ == "__main__":
    sys.exit(main())
