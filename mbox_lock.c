/*
 * mbox_lock.c: locking the mbox maildrop the way Debian's delivery
 * agents do (Debian Policy §11.6): an open-file-description fcntl lock
 * on the whole file, then a dotlock through liblockfile, never waiting
 * for one while holding the other; and the session lock that keeps a
 * second POP3 session out while the mailbox itself stays unlocked.  Runs as the mail user; the caller's hooks hold the mail
 * group only around dotlock work.
 */
#include <sys/types.h>
#include <sys/random.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <lockfile.h>
#include <md5.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "mbox_impl.h"

#define DOTLOCK_REFRESH	60		/* seconds between lockfile_touch */

int
mbox_priv_raise(struct maildrop *mb)
{
	if (mb->hooks.priv_raise == NULL)
		return 0;
	return mb->hooks.priv_raise(mb->hooks.arg);
}

void
mbox_priv_lower(struct maildrop *mb)
{
	if (mb->hooks.priv_lower != NULL)
		mb->hooks.priv_lower(mb->hooks.arg);
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
	int	 r = -1;

	if (!mb->dotlocked)
		return;
	if (mbox_priv_raise(mb) == 0) {
		r = lockfile_remove(mb->lockpath);
		mbox_priv_lower(mb);
	}
	if (r == 0)
		mb->dotlocked = 0;
	else
		log_warn("remove %s", mb->lockpath);
}

void
mbox_dotlock_refresh(struct maildrop *mb)
{
	time_t	 now = time(NULL);

	if (!mb->dotlocked || now - mb->dotlock_time < DOTLOCK_REFRESH)
		return;
	if (mbox_priv_raise(mb) == 0) {
		(void)lockfile_touch(mb->lockpath);
		mbox_priv_lower(mb);
	}
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
			if (mbox_priv_raise(mb) != 0)
				r = L_ERROR;
			else {
				r = lockfile_create(mb->lockpath, 0, L_PID);
				mbox_priv_lower(mb);
			}
			if (r == L_SUCCESS) {
				mb->dotlocked = 1;
				mb->dotlock_time = time(NULL);
				return MAILDROP_OK;
			}
			if (mb->fd != -1)
				(void)ofd_lock(mb->fd, F_UNLCK);
			if (r != L_MAXTRYS && r != L_RMSTALE) {
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

enum maildrop_status
maildrop_session_lock(const char *rundir, const char *path, int *fd_r)
{
	char	 name[PATH_MAX], hex[33];
	int	 fd;

	if (MD5Data((const unsigned char *)path, strlen(path), hex) == NULL)
		return MAILDROP_NOMEM;
	if ((size_t)snprintf(name, sizeof(name), "%s/%s.session", rundir,
	    hex) >= sizeof(name))
		return MAILDROP_IOERR;
	fd = open(name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd == -1) {
		log_warn("session lock %s", name);
		return MAILDROP_IOERR;
	}
	if (ofd_lock(fd, F_WRLCK) == -1) {
		close(fd);
		if (errno == EAGAIN || errno == EACCES)
			return MAILDROP_INUSE;
		log_warn("session lock %s", name);
		return MAILDROP_IOERR;
	}
	*fd_r = fd;
	return MAILDROP_OK;
}
