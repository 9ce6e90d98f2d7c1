/*
 * mbox.c: the Unix mbox implementation of maildrop.h, its public API:
 * open (lock, recover, load the index or parse, unlock), the table of
 * messages, send, close.  Runs as the mail user.  Touches the spool
 * directory only through the caller's hooks, which hold the mail group
 * while a dotlock, journal or index is made.  The other jobs live in
 * their own files (mbox_impl.h lists them).
 */
#include <sys/types.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "io.h"
#include "log.h"
#include "mbox_impl.h"

#define JNL_SUFFIX	".pop3d-journal"
#define IDX_SUFFIX	".pop3d-index"

static enum maildrop_status
mbox_new(const char *path, const struct maildrop_hooks *hooks,
    struct maildrop **mb_r)
{
	struct maildrop	*mb;

	size_t		 n = strlen(path) + sizeof(JNL_SUFFIX);
	size_t		 ni = strlen(path) + sizeof(IDX_SUFFIX);

	if ((mb = calloc(1, sizeof(*mb))) == NULL)
		return MAILDROP_NOMEM;
	mb->fd = -1;
	if (hooks != NULL)
		mb->hooks = *hooks;
	if ((mb->path = strdup(path)) == NULL ||
	    (mb->lockpath = malloc(n)) == NULL ||
	    (mb->jnlpath = malloc(n)) == NULL ||
	    (mb->idxpath = malloc(ni)) == NULL ||
	    (mb->buf = malloc(CHUNK)) == NULL) {
		maildrop_close(mb);
		return MAILDROP_NOMEM;
	}
	(void)snprintf(mb->lockpath, n, "%s.lock", path);
	(void)snprintf(mb->jnlpath, n, "%s%s", path, JNL_SUFFIX);
	(void)snprintf(mb->idxpath, ni, "%s%s", path, IDX_SUFFIX);
	*mb_r = mb;
	return MAILDROP_OK;
}

/* Opens the mailbox file as the user; refuses what is not plainly theirs. */
static enum maildrop_status
mbox_open_file(struct maildrop *mb)
{
	struct stat	 sb;
	int		 flags = O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;

	mb->fd = open(mb->path, O_RDWR | flags);
	mb->writable = mb->fd != -1;
	if (mb->fd == -1 && errno == EACCES)
		mb->fd = open(mb->path, O_RDONLY | flags);
	if (mb->fd == -1) {
		if (errno == ENOENT)
			return MAILDROP_OK;
		if (errno == ELOOP || errno == EISDIR || errno == ENXIO) {
			log_warnx("%s: not a regular file", mb->path);
			return MAILDROP_BADFILE;
		}
		log_warn("open %s", mb->path);
		return errno == EACCES ? MAILDROP_NOACCESS : MAILDROP_IOERR;
	}
	if (fstat(mb->fd, &sb) == -1) {
		log_warn("fstat %s", mb->path);
		return MAILDROP_IOERR;
	}
	if (!S_ISREG(sb.st_mode) || sb.st_nlink != 1 ||
	    sb.st_uid != geteuid()) {
		log_warnx("%s: not a regular file owned by uid %lu with one "
		    "link", mb->path, (unsigned long)geteuid());
		return MAILDROP_BADFILE;
	}
	(void)fcntl(mb->fd, F_SETFL, fcntl(mb->fd, F_GETFL) & ~O_NONBLOCK);
	mb->dev = sb.st_dev;
	mb->ino = sb.st_ino;
	return MAILDROP_OK;
}

enum maildrop_status
maildrop_open(const char *path, const struct maildrop_hooks *hooks,
    struct maildrop **mb_r)
{
	struct maildrop	*mb;
	struct stat	 sb;
	struct timespec	 now;
	off_t		 from = 0;
	enum mbox_table_source source = MBOX_TABLE_PARSED;
	enum maildrop_status st;

	if ((st = mbox_new(path, hooks, &mb)) != MAILDROP_OK)
		return st;
	if ((st = mbox_open_file(mb)) != MAILDROP_OK) {
		maildrop_close(mb);
		return st;
	}
	if (mb->fd == -1) {
		*mb_r = mb;		/* no file: an empty maildrop */
		return MAILDROP_OK;
	}
	if ((st = mbox_lock(mb)) != MAILDROP_OK) {
		maildrop_close(mb);
		return st;
	}
	if ((st = mbox_recover_locked(mb)) == MAILDROP_OK) {
		if (fstat(mb->fd, &sb) == -1)
			st = MAILDROP_IOERR;
		else if ((source = mbox_idx_load(mb, &sb, &from)) !=
		    MBOX_TABLE_INDEX)
			st = mbox_parse(mb, from, sb.st_size);
	}
	(void)clock_gettime(CLOCK_REALTIME, &now);
	mbox_unlock(mb);
	if (st != MAILDROP_OK) {
		maildrop_close(mb);
		return st;
	}
	mb->table_source = source;
	mb->parsed_ctime = sb.st_ctim;
	mb->parsed_mtime = sb.st_mtim;
	mb->settled = mbox_ctime_settled(&sb, &now);
	if (source != MBOX_TABLE_INDEX)
		mbox_idx_save(mb, &sb);
	*mb_r = mb;
	return MAILDROP_OK;
}

enum maildrop_status
mbox_parse_fd(int fd, struct maildrop **mb_r)
{
	struct maildrop	*mb;
	struct stat	 sb;
	enum maildrop_status st;

	if ((st = mbox_new("(fd)", NULL, &mb)) != MAILDROP_OK)
		return st;
	if (fstat(fd, &sb) == -1) {
		maildrop_close(mb);
		return MAILDROP_IOERR;
	}
	mb->fd = fd;
	mb->fd_borrowed = 1;
	st = mbox_parse(mb, 0, sb.st_size);
	if (st != MAILDROP_OK) {
		maildrop_close(mb);
		return st;
	}
	*mb_r = mb;
	return MAILDROP_OK;
}

enum maildrop_status
maildrop_recover(const char *path, const struct maildrop_hooks *hooks)
{
	struct maildrop	*mb;
	enum maildrop_status st;

	if ((st = mbox_new(path, hooks, &mb)) != MAILDROP_OK)
		return st;
	if ((st = mbox_open_file(mb)) == MAILDROP_OK && mb->fd != -1 &&
	    (st = mbox_lock(mb)) == MAILDROP_OK) {
		st = mbox_recover_locked(mb);
		mbox_unlock(mb);
	}
	maildrop_close(mb);
	return st;
}

void
maildrop_close(struct maildrop *mb)
{
	if (mb == NULL)
		return;
	if (mb->dotlocked)
		mbox_unlock(mb);
	if (mb->fd != -1 && !mb->fd_borrowed)
		close(mb->fd);
	free(mb->msgs);
	free(mb->uid_pool);
	free(mb->buf);
	free(mb->path);
	free(mb->lockpath);
	free(mb->jnlpath);
	free(mb->idxpath);
	free(mb);
}

size_t
maildrop_count(const struct maildrop *mb)
{
	return mb->nmsgs - mb->nhidden;
}

uint64_t
maildrop_size(const struct maildrop *mb, size_t idx)
{
	return mb->msgs[mb->nhidden + idx].size;
}

void
maildrop_uidl(const struct maildrop *mb, size_t idx, char *buf)
{
	mbox_uid_format(mb, &mb->msgs[mb->nhidden + idx], buf);
}

int
maildrop_deleted(const struct maildrop *mb, size_t idx)
{
	return mb->msgs[mb->nhidden + idx].deleted;
}

void
maildrop_set_deleted(struct maildrop *mb, size_t idx, int on)
{
	mb->msgs[mb->nhidden + idx].deleted = on != 0;
}

void
maildrop_stat(const struct maildrop *mb, size_t *count_r, uint64_t *octets_r)
{
	size_t		 i, n = 0;
	uint64_t	 o = 0;

	for (i = mb->nhidden; i < mb->nmsgs; i++)
		if (!mb->msgs[i].deleted) {
			n++;
			o += mb->msgs[i].size;
		}
	*count_r = n;
	*octets_r = o;
}

enum mbox_table_source
mbox_table_source(const struct maildrop *mb)
{
	return mb->table_source;
}

void
mbox_extent(const struct maildrop *mb, size_t idx, off_t *start_r,
    off_t *end_r)
{
	*start_r = msg_body(&mb->msgs[mb->nhidden + idx]);
	*end_r = msg_end(mb, mb->nhidden + idx);
}

enum maildrop_status
maildrop_send(struct maildrop *mb, size_t idx, struct io *io,
    int64_t max_body_lines)
{
	const struct mbox_msg *m = &mb->msgs[mb->nhidden + idx];
	struct io_body	 b;
	off_t		 off = msg_body(m);
	off_t		 end = msg_end(mb, mb->nhidden + idx);
	size_t		 n;
	ssize_t		 r;

	io_body_begin(&b, max_body_lines);
	while (off < end && !b.done) {
		n = end - off > CHUNK ? CHUNK : (size_t)(end - off);
		if ((r = mbox_pread_full(mb->fd, mb->buf, n, off)) < 0) {
			log_warn("read %s", mb->path);
			return MAILDROP_IOERR;
		}
		if ((size_t)r != n) {
			log_warnx("%s: shrank while message %zu was sent",
			    mb->path, idx + 1);
			return MAILDROP_CHANGED;
		}
		if (io_body_write(io, &b, mb->buf, n) != IO_OK)
			return MAILDROP_IOERR;
		off += (off_t)n;
	}
	if (io_body_end(io, &b) != IO_OK)
		return MAILDROP_IOERR;
	if (max_body_lines < 0 && b.octets != m->size) {
		/* Rewritten under us: never end a reply whose size lied. */
		log_warnx("%s: message %zu changed while it was sent",
		    mb->path, idx + 1);
		return MAILDROP_CHANGED;
	}
	return io_body_dot(io) == IO_OK ? MAILDROP_OK : MAILDROP_IOERR;
}

/*
 * pop3d -l.  The table comes as maildrop_open() gets it, under the same
 * locks, but nothing is written: no recovery (a journal left by a crash
 * means the file is not yet what its sessions will see) and no index.
 */
enum maildrop_status
maildrop_list(const char *path, const struct maildrop_hooks *hooks,
    FILE *out)
{
	struct maildrop	*mb;
	struct stat	 sb;
	char		 uid[MAILDROP_UIDL_MAX];
	off_t		 from = 0;
	size_t		 i;
	enum maildrop_status st;

	if ((st = mbox_new(path, hooks, &mb)) != MAILDROP_OK)
		return st;
	if ((st = mbox_open_file(mb)) == MAILDROP_OK && mb->fd != -1 &&
	    (st = mbox_lock(mb)) == MAILDROP_OK) {
		if (access(mb->jnlpath, F_OK) == 0) {
			log_warnx("%s: a commit was interrupted; pop3d -r %s "
			    "finishes it", path, path);
			st = MAILDROP_CHANGED;
		} else if (fstat(mb->fd, &sb) == -1)
			st = MAILDROP_IOERR;
		else if (mbox_idx_load(mb, &sb, &from) != MBOX_TABLE_INDEX)
			st = mbox_parse(mb, from, sb.st_size);
		mbox_unlock(mb);
	}
	for (i = 0; st == MAILDROP_OK && i < maildrop_count(mb); i++) {
		maildrop_uidl(mb, i, uid);
		if (fprintf(out, "%zu %s\n", i + 1, uid) < 0)
			st = MAILDROP_IOERR;
	}
	if (st == MAILDROP_OK && fflush(out) == EOF)
		st = MAILDROP_IOERR;
	maildrop_close(mb);
	return st;
}

/*
 * Full-length pread/pwrite for all the parts.  mbox_pread_full returns
 * bytes read (short only at EOF) or -1.
 */
ssize_t
mbox_pread_full(int fd, void *buf, size_t len, off_t off)
{
	size_t	 done = 0;
	ssize_t	 n;

	while (done < len) {
		n = pread(fd, (char *)buf + done, len - done,
		    off + (off_t)done);
		if (n == 0)
			break;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		done += (size_t)n;
	}
	return (ssize_t)done;
}

int
mbox_pwrite_full(int fd, const void *buf, size_t len, off_t off)
{
	size_t	 done = 0;
	ssize_t	 n;

	while (done < len) {
		n = pwrite(fd, (const char *)buf + done, len - done,
		    off + (off_t)done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0) {
			errno = EIO;
			return -1;
		}
		done += (size_t)n;
	}
	return 0;
}
