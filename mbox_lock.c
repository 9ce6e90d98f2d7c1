/*
 * mbox_lock.c: locking the mbox maildrop the way Debian's delivery
 * agents do (Debian Policy §11.6): an open-file-description fcntl lock
 * on the whole file, then a dotlock through liblockfile, never waiting
 * for one while holding the other; and the session lock that keeps a
 * second POP3 session out while the mailbox itself stays unlocked.
 * Runs as the mail user with no group but the user's own: when the user
 * cannot write the spool, liblockfile's lockfile_create() runs its setgid
 * helper, dotlockfile(1), which locks a mailbox that exists and belongs
 * to the caller.  A missing mailbox is never locked (there is nothing
 * to read), which is just as well: the helper refuses it.
 */
#include <sys/types.h>
#include <sys/random.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <lockfile.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "mbox_impl.h"

#define DOTLOCK_REFRESH	60		/* seconds between lockfile_touch */

/* How long another's dotlock may go untouched on a shared file system. */
static int
dotlock_stale(const struct maildrop *mb)
{
	return mb->hooks.dotlock_stale > 0 ? mb->hooks.dotlock_stale :
	    MAILDROP_DOTLOCK_STALE;
}

/* How often a held dotlock is touched: well within what others allow. */
static int
dotlock_refresh(const struct maildrop *mb)
{
	int	 every = DOTLOCK_REFRESH;

	if (mb->netfs && dotlock_stale(mb) / 3 < every)
		every = dotlock_stale(mb) / 3;
	return every > 0 ? every : 1;
}

/*
 * On a shared file system a dotlock's PID says nothing (it may be
 * another host's), so a lock is stale by age alone: untouched for
 * dotlock_stale() seconds.  The lock's mtime is another clock's, but
 * hosts sharing a spool keep theirs within a second, which is nothing
 * beside that.  Removes such a lock.
 */
static void
dotlock_break_stale(struct maildrop *mb)
{
	struct stat	 sb;
	time_t		 now = time(NULL);

	if (lstat(mb->lockpath, &sb) == -1 || !S_ISREG(sb.st_mode))
		return;
	if (now - sb.st_mtime < dotlock_stale(mb))
		return;
	log_notice("%s: breaking a dotlock untouched for %lld s",
	    mb->lockpath, (long long)(now - sb.st_mtime));
	if (lockfile_remove(mb->lockpath) != 0 && errno != ENOENT)
		log_warn("remove %s", mb->lockpath);
}

static int
ofd_lock(int fd, short type)
{
	struct flock	 fl;

	memset(&fl, 0, sizeof(fl));
	fl.l_type = type;
	fl.l_whence = SEEK_SET;
	fl.l_start = 0;
	fl.l_len = 0;
	return fcntl(fd, F_OFD_SETLK, &fl);
}

static void
nap(void)
{
	unsigned int	 r = 0;

	if (getrandom(&r, sizeof(r), 0) != sizeof(r))
		r = (unsigned int)getpid();
	(void)poll(NULL, 0, 50 + (int)(r % 200));
}

/*
 * Removes our dotlock.  When that fails the lock stays ours (it names our
 * live pid, so nobody else would break it soon): mbox_lock() reuses it
 * and maildrop_close() tries again.
 */
static void
dotlock_remove(struct maildrop *mb)
{
	if (!mb->dotlocked)
		return;
	if (lockfile_remove(mb->lockpath) == 0)
		mb->dotlocked = 0;
	else
		log_warn("remove %s", mb->lockpath);
}

void
mbox_dotlock_refresh(struct maildrop *mb)
{
	time_t	 now = time(NULL);

	if (!mb->dotlocked || now - mb->dotlock_time < dotlock_refresh(mb))
		return;
	(void)lockfile_touch(mb->lockpath);
	mb->dotlock_time = now;
}

/*
 * Takes fcntl then the dotlock, never waiting for one while holding the
 * other (Debian Policy §11.6).
 */
enum maildrop_status
mbox_lock(struct maildrop *mb)
{
	time_t	 deadline = time(NULL) + mb->hooks.lock_timeout;
	int	 r;

	for (;;) {
		if (mb->fd == -1 ||
		    ofd_lock(mb->fd, mb->writable ? F_WRLCK : F_RDLCK) == 0) {
			if (mb->dotlocked) {
				/* Left over from a failed removal: still ours. */
				mb->dotlock_time = 0;
				mbox_dotlock_refresh(mb);
				return MAILDROP_OK;
			}
			/*
			 * L_PID: a lock whose process is gone is stale at
			 * once.  Not on a shared file system, where the PID
			 * may be another host's: there a lock is stale by
			 * age (dotlock_break_stale()).
			 */
			if (mb->netfs)
				dotlock_break_stale(mb);
			r = lockfile_create(mb->lockpath, 0,
			    mb->netfs ? 0 : L_PID);
			if (r == L_SUCCESS) {
				mb->dotlocked = 1;
				mb->dotlock_time = time(NULL);
				return MAILDROP_OK;
			}
			if (mb->fd != -1)
				(void)ofd_lock(mb->fd, F_UNLCK);
			/*
			 * Over a shared file system the NFS-safe dance (a
			 * link, then its link count) can fail for a moment
			 * when another host just did the same: try again
			 * until the deadline there, and say so at the end.
			 */
			if (r != L_MAXTRYS && r != L_RMSTALE &&
			    (!mb->netfs || time(NULL) >= deadline)) {
				log_warn("dotlock %s (liblockfile status %d)",
				    mb->lockpath, r);
				return MAILDROP_IOERR;
			}
		} else if (errno != EAGAIN && errno != EACCES) {
			log_warn("fcntl lock %s", mb->path);
			return MAILDROP_IOERR;
		}
		if (time(NULL) >= deadline)
			return MAILDROP_LOCKED;
		nap();
	}
}

void
mbox_unlock(struct maildrop *mb)
{
	dotlock_remove(mb);
	if (mb->fd != -1)
		(void)ofd_lock(mb->fd, F_UNLCK);
}

/*
 * The lock file's name: "INO.lock" for the mailbox's inode, so that two
 * paths to one mailbox give one lock.  A missing mailbox has no inode:
 * its lock is "new-BASENAME.lock".  Should mail arrive and create the
 * file while such a session runs, a second session gets the inode's
 * lock and both run; that is harmless, since the first one holds an
 * empty maildrop, which it cannot read from nor write to.
 */
static enum maildrop_status
session_lock_name(const char *path, char *name, size_t size, ino_t *ino_r)
{
	struct stat	 sb;
	const char	*base;

	*ino_r = 0;
	if (lstat(path, &sb) == 0) {
		*ino_r = sb.st_ino;
		(void)snprintf(name, size, "%ju.lock", (uintmax_t)sb.st_ino);
		return MAILDROP_OK;
	}
	if (errno != ENOENT) {
		log_warn("%s", path);
		return errno == EACCES ? MAILDROP_NOACCESS : MAILDROP_IOERR;
	}
	base = strrchr(path, '/') == NULL ? path : strrchr(path, '/') + 1;
	if (*base == '\0' || strcmp(base, ".") == 0 ||
	    strcmp(base, "..") == 0 ||
	    (size_t)snprintf(name, size, "new-%s.lock", base) >= size) {
		log_warnx("%s: no name for its session lock", path);
		return MAILDROP_IOERR;
	}
	return MAILDROP_OK;
}

/* Opens (or makes) the lock file name in dfd, checked like any state. */
static int
session_lock_open(int dfd, const char *statedir, const char *name)
{
	char	 why[80];
	int	 fd, made = 1;

	fd = openat(dfd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW |
	    O_CLOEXEC, 0600);
	if (fd == -1 && errno == EEXIST) {
		made = 0;
		fd = openat(dfd, name, O_RDWR | O_NOFOLLOW | O_NONBLOCK |
		    O_CLOEXEC);
	}
	if (fd == -1) {
		log_warn("session lock %s/%s", statedir, name);
		return -1;
	}
	/* Ours by making; see mbox_state_create() for why fchown. */
	if ((made && fchown(fd, geteuid(), (gid_t)-1) == -1) ||
	    mbox_file_check(fd, geteuid(), 0, why, sizeof(why)) == -1) {
		if (made)
			(void)snprintf(why, sizeof(why), "%s",
			    strerror(errno));
		log_warnx("session lock %s/%s not used: %s", statedir, name,
		    why);
		close(fd);
		return -1;
	}
	return fd;
}

/* Is it less than ms milliseconds since *start? */
static int
within_ms(const struct timespec *start, int ms)
{
	struct timespec	 now;

	(void)clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - start->tv_sec) * 1000 +
	    (now.tv_nsec - start->tv_nsec) / 1000000 < ms;
}

enum maildrop_status
maildrop_session_lock(const char *statedir, const char *path, int *fd_r)
{
	enum { SESSION_LOCK_GRACE_MS = 1000 };
	struct timespec	 start, nap50 = { 0, 50000000 };
	char		 name[STATE_NAME_MAX + NAME_MAX];
	ino_t		 ino, again;
	int		 dfd, fd, tries;
	enum maildrop_status st;

	if ((dfd = mbox_statedir_open(statedir)) == -1)
		return MAILDROP_IOERR;
	(void)clock_gettime(CLOCK_MONOTONIC, &start);
	/*
	 * The path may come to name another file between the lstat and the
	 * lock (a mail reader that replaces the mailbox): look again, and
	 * take the lock of the file the path names once it holds still.
	 */
	for (tries = 0; tries < 3; tries++) {
		if ((st = session_lock_name(path, name, sizeof(name), &ino)) !=
		    MAILDROP_OK)
			break;
		if ((fd = session_lock_open(dfd, statedir, name)) == -1 &&
		    within_ms(&start, SESSION_LOCK_GRACE_MS)) {
			/* Another host may be making it this very moment. */
			(void)nanosleep(&nap50, NULL);
			tries--;
			continue;
		}
		if (fd == -1) {
			st = MAILDROP_IOERR;
			break;
		}
		if (ofd_lock(fd, F_WRLCK) == -1) {
			close(fd);
			if (errno == EAGAIN || errno == EACCES) {
				/*
				 * A session that has just ended may still
				 * hold it for a moment: its QUIT reply leaves
				 * before it exits, and over FUSE the lock
				 * goes with an asynchronous release.
				 */
				if (within_ms(&start, SESSION_LOCK_GRACE_MS)) {
					(void)nanosleep(&nap50, NULL);
					tries--;
					continue;
				}
				st = MAILDROP_INUSE;
			} else {
				log_warn("session lock %s/%s", statedir, name);
				st = MAILDROP_IOERR;
			}
			break;
		}
		if ((st = session_lock_name(path, name, sizeof(name),
		    &again)) == MAILDROP_OK && again == ino) {
			close(dfd);
			*fd_r = fd;
			return MAILDROP_OK;
		}
		close(fd);
		if (st != MAILDROP_OK)
			break;
	}
	if (tries == 3) {
		log_warnx("%s: replaced over and over; no session lock", path);
		st = MAILDROP_LOCKED;
	}
	close(dfd);
	return st;
}
