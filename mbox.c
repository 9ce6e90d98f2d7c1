/*
 * mbox.c: the Unix mbox implementation of maildrop.h, its public API:
 * open (lock, recover, load the index or parse, unlock), the table of
 * messages, send, close; and the state directory's files.  Runs as the
 * mail user, with no group but the user's.  The spool holds nothing of
 * pop3d's but the dotlock while it is held (liblockfile makes it through
 * its setgid helper when the user cannot write the spool); the session
 * lock, journal and index live in the user's state directory, and each
 * is checked with fstat on every open.  The other jobs live in their
 * own files (mbox_impl.h lists them).
 */
#include <sys/types.h>
#include <sys/stat.h>
#include <sys/vfs.h>

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

/* Where the version before the state directory kept its journal. */
#define SPOOL_JNL_SUFFIX	".pop3d-journal"

static enum maildrop_status
mbox_new(const char *path, const char *statedir,
    const struct maildrop_hooks *hooks, struct maildrop **mb_r)
{
	struct maildrop	*mb;
	size_t		 n = strlen(path) + sizeof(SPOOL_JNL_SUFFIX);

	if ((mb = calloc(1, sizeof(*mb))) == NULL)
		return MAILDROP_NOMEM;
	mb->fd = -1;
	mb->sdfd = -1;
	if (hooks != NULL)
		mb->hooks = *hooks;
	if ((mb->path = strdup(path)) == NULL ||
	    (mb->statedir = strdup(statedir != NULL ? statedir : "-")) ==
	    NULL ||
	    (mb->lockpath = malloc(n)) == NULL ||
	    (mb->spooljnl = malloc(n)) == NULL ||
	    (mb->buf = malloc(CHUNK)) == NULL) {
		maildrop_close(mb);
		return MAILDROP_NOMEM;
	}
	(void)snprintf(mb->lockpath, n, "%s.lock", path);
	(void)snprintf(mb->spooljnl, n, "%s%s", path, SPOOL_JNL_SUFFIX);
	*mb_r = mb;
	return MAILDROP_OK;
}

int
mbox_statedir_open(const char *dir)
{
	struct stat	 sb;
	int		 fd;

	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC)) == -1) {
		log_warn("state directory %s", dir);
		return -1;
	}
	if (fstat(fd, &sb) == -1) {
		log_warn("fstat %s", dir);
		close(fd);
		return -1;
	}
	if (sb.st_uid != geteuid() || (sb.st_mode & 022) != 0) {
		log_warnx("state directory %s: owned by uid %lu, mode %04o, "
		    "not uid %lu's closed to others; refused", dir,
		    (unsigned long)sb.st_uid,
		    (unsigned int)(sb.st_mode & 07777),
		    (unsigned long)geteuid());
		close(fd);
		return -1;
	}
	return fd;
}

int
mbox_file_check(int fd, uid_t owner, int exact, char *why, size_t whysize)
{
	struct stat	 sb;

	if (fstat(fd, &sb) == -1) {
		(void)snprintf(why, whysize, "fstat: %s", strerror(errno));
		return -1;
	}
	if (!S_ISREG(sb.st_mode))
		(void)snprintf(why, whysize, "not a regular file");
	else if (sb.st_nlink != 1)
		(void)snprintf(why, whysize, "%lu links",
		    (unsigned long)sb.st_nlink);
	else if (sb.st_uid != owner)
		(void)snprintf(why, whysize, "owned by uid %lu, not %lu",
		    (unsigned long)sb.st_uid, (unsigned long)owner);
	else if (exact ? (sb.st_mode & 07777) != 0600 :
	    (sb.st_mode & 077) != 0)
		(void)snprintf(why, whysize, "mode %04o",
		    (unsigned int)(sb.st_mode & 07777));
	else
		return 0;
	return -1;
}

int
mbox_state_open(struct maildrop *mb, const char *name, int flags,
    const char *what)
{
	char	 why[80];
	int	 fd;

	if ((fd = openat(mb->sdfd, name, flags | O_NOFOLLOW | O_NONBLOCK |
	    O_CLOEXEC)) == -1) {
		if (errno == ENOENT)
			return -1;
		(void)snprintf(why, sizeof(why), "%s", errno == ELOOP ?
		    "a symlink" : strerror(errno));
	} else if (mbox_file_check(fd, geteuid(), 0, why, sizeof(why)) ==
	    0) {
		(void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
		return fd;
	} else
		close(fd);
	log_warnx("%s: %s %s/%s not used: %s", mb->path, what, mb->statedir,
	    name, why);
	return -2;
}

int
mbox_state_create(struct maildrop *mb, const char *name)
{
	int	 fd;

	fd = openat(mb->sdfd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW |
	    O_CLOEXEC, 0600);
	/*
	 * A no-op for a process that is the user, as every session is; under
	 * uid_wrapper (the tests) the process is really root and the file
	 * would be root's, which the checks above would then refuse.
	 */
	if (fd != -1 && fchown(fd, geteuid(), (gid_t)-1) == -1) {
		close(fd);
		(void)unlinkat(mb->sdfd, name, 0);
		return -1;
	}
	return fd;
}

int
mbox_on_netfs(int fd)
{
	static const unsigned long shared[] = {
		0x6969,		/* NFS */
		0x65735546,	/* FUSE: GlusterFS, and others */
		0xff534d42,	/* CIFS */
		0xfe534d42,	/* SMB2 */
		0x00c36400,	/* Ceph */
		0x01161970,	/* GFS2 */
		0x7461636f,	/* OCFS2 */
		0x5346414f,	/* AFS */
	};
	struct statfs	 fs;
	size_t		 i;

	if (fstatfs(fd, &fs) == -1)
		return 1;	/* unknown: assume the cautious case */
	for (i = 0; i < sizeof(shared) / sizeof(shared[0]); i++)
		if ((unsigned long)fs.f_type == shared[i])
			return 1;
	return 0;
}

/* Opens the mailbox file as the user; refuses what is not plainly theirs. */
static enum maildrop_status
mbox_open_file(struct maildrop *mb)
{
	struct stat	 sb;
	uintmax_t	 ino;
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
	mb->netfs = mbox_on_netfs(mb->fd);
	mb->dev = sb.st_dev;
	mb->ino = sb.st_ino;
	ino = (uintmax_t)sb.st_ino;
	(void)snprintf(mb->jnlname, sizeof(mb->jnlname), "%ju.journal", ino);
	(void)snprintf(mb->jnltmp, sizeof(mb->jnltmp), "%ju.journal.new",
	    ino);
	(void)snprintf(mb->idxname, sizeof(mb->idxname), "%ju.index", ino);
	return MAILDROP_OK;
}

/* The mailbox and the state directory, for open and recover. */
static enum maildrop_status
mbox_begin(const char *path, const char *statedir,
    const struct maildrop_hooks *hooks, struct maildrop **mb_r)
{
	struct maildrop	*mb;
	enum maildrop_status st;

	if ((st = mbox_new(path, statedir, hooks, &mb)) != MAILDROP_OK)
		return st;
	if ((st = mbox_open_file(mb)) != MAILDROP_OK) {
		maildrop_close(mb);
		return st;
	}
	/* No mailbox: no journal can belong to it, and no state is read. */
	if (mb->fd != -1 && (statedir == NULL ||
	    (mb->sdfd = mbox_statedir_open(statedir)) == -1)) {
		if (statedir == NULL)
			log_warnx("%s: no state directory", path);
		maildrop_close(mb);
		return MAILDROP_IOERR;
	}
	*mb_r = mb;
	return MAILDROP_OK;
}

enum maildrop_status
maildrop_open(const char *path, const char *statedir,
    const struct maildrop_hooks *hooks, struct maildrop **mb_r)
{
	struct maildrop	*mb;
	struct stat	 sb;
	struct timespec	 now;
	off_t		 from = 0;
	enum mbox_table_source source = MBOX_TABLE_PARSED;
	enum maildrop_status st;

	if ((st = mbox_begin(path, statedir, hooks, &mb)) != MAILDROP_OK)
		return st;
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
		    MBOX_TABLE_INDEX) {
			mbox_imapbase_load(mb);
			st = mbox_parse(mb, from, sb.st_size);
		}
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
	mb->settled = mbox_ctime_settled(&sb, &now, mb->netfs);
	if (source != MBOX_TABLE_INDEX) {
		mbox_idx_save(mb, &sb);
		mbox_imapbase_save(mb);
	}
	*mb_r = mb;
	return MAILDROP_OK;
}

enum maildrop_status
mbox_parse_fd(int fd, struct maildrop **mb_r)
{
	struct maildrop	*mb;
	struct stat	 sb;
	enum maildrop_status st;

	if ((st = mbox_new("(fd)", NULL, NULL, &mb)) != MAILDROP_OK)
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
maildrop_recover(const char *path, const char *statedir,
    const struct maildrop_hooks *hooks)
{
	struct maildrop	*mb;
	enum maildrop_status st;

	if ((st = mbox_begin(path, statedir, hooks, &mb)) != MAILDROP_OK)
		return st;
	if (mb->fd != -1 && (st = mbox_lock(mb)) == MAILDROP_OK) {
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
	if (mb->sdfd != -1)
		close(mb->sdfd);
	free(mb->msgs);
	free(mb->uid_pool);
	free(mb->buf);
	free(mb->path);
	free(mb->statedir);
	free(mb->lockpath);
	free(mb->spooljnl);
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
maildrop_list(const char *path, const char *statedir,
    const struct maildrop_hooks *hooks, FILE *out)
{
	struct maildrop	*mb;
	struct stat	 sb;
	char		 uid[MAILDROP_UIDL_MAX];
	off_t		 from = 0;
	size_t		 i;
	enum maildrop_status st;

	if ((st = mbox_begin(path, statedir, hooks, &mb)) != MAILDROP_OK)
		return st;
	if (mb->fd != -1 && (st = mbox_lock(mb)) == MAILDROP_OK) {
		if (mbox_journal_pending(mb)) {
			log_warnx("%s: a commit was interrupted; pop3d -r %s "
			    "finishes it", path, path);
			st = MAILDROP_CHANGED;
		} else if (fstat(mb->fd, &sb) == -1)
			st = MAILDROP_IOERR;
		else if (mbox_idx_load(mb, &sb, &from) != MBOX_TABLE_INDEX) {
			mbox_imapbase_load(mb);		/* read, never written */
			st = mbox_parse(mb, from, sb.st_size);
		}
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
