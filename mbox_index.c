/*
 * mbox_index.c: the index cache of the mbox maildrop.  Runs as the mail
 * user; the caller's hooks hold the mail group while the index is
 * created or removed in the spool directory.
 *
 * A parsed mailbox of IDX_MIN bytes or more leaves its table of messages
 * in "MAILBOX.pop3d-index" (the user's, mode 0600), so that the next
 * session need not read the mailbox again:
 *
 *   - the same inode, size, mtime and ctime: the table is used as it is
 *     (ctime cannot be set by any program, and every write moves it);
 *   - the same inode, grown: IDX_SAMPLES messages spread over the file
 *     are re-checked, and only the last one and what follows is parsed;
 *   - anything else: parsed from the start, and the index rewritten.
 *
 * It is a cache: it is checked, never trusted, and a commit removes it.
 * The commit re-checks every message it moves or deletes either way.
 */
#include <sys/types.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "mbox_impl.h"

#define IDX_MAGIC	"POP3DIX1"
#define IDX_MIN		(4 * 1024 * 1024) /* smaller mailboxes parse in < 1 ms */
#define IDX_SAMPLES	64		/* messages re-checked when mail was added */
#define IDX_SETTLE_MS	50		/* a change this recent may share our ctime */

struct idx_hdr {
	char		 magic[8];
	uint32_t	 version;
	uint32_t	 recsize;	/* sizeof(struct mbox_msg) */
	uint32_t	 uidl_scheme;	/* the records' UIDs are of this one */
	uint32_t	 spare;
	uint64_t	 dev;
	uint64_t	 ino;
	uint64_t	 size;
	struct timespec	 mtime;
	struct timespec	 ctime;
	uint64_t	 nmsgs;
	uint64_t	 rec_hash;	/* hash64 of the records */
	uint64_t	 hdr_hash;	/* hash64 of everything above */
};


static int
idx_sane(const struct maildrop *mb, off_t size)
{
	const struct mbox_msg *m;
	size_t		 i;

	if (mb->nmsgs == 0 || mb->msgs[0].from_off != 0)
		return 0;
	for (i = 0; i < mb->nmsgs; i++) {
		m = &mb->msgs[i];
		if (msg_next(mb, i) <= m->from_off || msg_next(mb, i) > size ||
		    m->from_len < 5 || m->from_len > LINE_KEEP ||
		    m->from_eol < 1 || m->from_eol > 2 ||
		    msg_end(mb, i) < msg_body(m) ||
		    m->size > 2 * (uint64_t)(msg_end(mb, i) - msg_body(m)) +
		    2 || m->uid_seq == 0 || m->uid_seq > mb->nmsgs ||
		    m->deleted || (m->hidden && i > 0))
			return 0;
	}
	return 1;
}

static int
idx_file_ok(int fd)
{
	struct stat	 sb;

	return fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) &&
	    sb.st_nlink == 1 && sb.st_uid == geteuid() &&
	    (sb.st_mode & 077) == 0;
}

/*
 * Under the locks, with sb the mailbox now.  MBOX_TABLE_INDEX: the whole
 * table is loaded; MBOX_TABLE_INDEX_GROWN: all but the last message is,
 * and parsing goes on at *resume_r; MBOX_TABLE_PARSED: nothing usable,
 * parse it all.
 */
enum mbox_table_source
mbox_idx_load(struct maildrop *mb, const struct stat *sb, off_t *resume_r)
{
	struct idx_hdr	 h;
	size_t		 n, k, i;
	int		 fd;
	enum mbox_table_source ret = MBOX_TABLE_PARSED;

	*resume_r = 0;
	if (sb->st_size < IDX_MIN || !mbox_uid_indexable(mb))
		return MBOX_TABLE_PARSED;
	if ((fd = open(mb->idxpath, O_RDONLY | O_NOFOLLOW | O_NONBLOCK |
	    O_CLOEXEC)) == -1)
		return MBOX_TABLE_PARSED;
	if (!idx_file_ok(fd) || mbox_pread_full(fd, &h, sizeof(h), 0) !=
	    (ssize_t)sizeof(h) ||
	    memcmp(h.magic, IDX_MAGIC, sizeof(h.magic)) != 0 ||
	    h.version != 4 || h.recsize != sizeof(struct mbox_msg) ||
	    h.uidl_scheme != (uint32_t)mb->hooks.uidl_scheme ||
	    h.hdr_hash != hash64(&h, offsetof(struct idx_hdr, hdr_hash)) ||
	    h.dev != (uint64_t)sb->st_dev || h.ino != (uint64_t)sb->st_ino ||
	    h.size > (uint64_t)sb->st_size || h.nmsgs == 0 ||
	    h.nmsgs > h.size / 16)
		goto out;
	if (h.size == (uint64_t)sb->st_size && !same_times(sb, &h.mtime,
	    &h.ctime))
		goto out;		/* rewritten to the same size */
	n = (size_t)h.nmsgs;
	if ((mb->msgs = calloc(n, sizeof(*mb->msgs))) == NULL)
		goto out;
	mb->cap = n;
	mb->nmsgs = n;
	mb->parsed_size = (off_t)h.size;
	if (mbox_pread_full(fd, mb->msgs, n * sizeof(*mb->msgs), sizeof(h)) !=
	    (ssize_t)(n * sizeof(*mb->msgs)) ||
	    hash64(mb->msgs, n * sizeof(*mb->msgs)) != h.rec_hash ||
	    !idx_sane(mb, (off_t)h.size))
		goto out;
	if (h.size == (uint64_t)sb->st_size) {
		mb->nhidden = mb->msgs[0].hidden;
		ret = MBOX_TABLE_INDEX;
		goto out;
	}
	/* Grown: appended to, or rewritten?  Look at a spread of messages. */
	for (k = 0; k < IDX_SAMPLES && k < n; k++) {
		i = n <= IDX_SAMPLES ? k : k * (n - 1) / (IDX_SAMPLES - 1);
		if (!mbox_msg_intact(mb, i))
			goto out;
	}
	/* The last message may have grown: parse it again. */
	*resume_r = mb->msgs[n - 1].from_off;
	mb->nmsgs = n - 1;
	ret = MBOX_TABLE_INDEX_GROWN;
out:
	close(fd);
	if (ret == MBOX_TABLE_PARSED) {
		free(mb->msgs);
		mb->msgs = NULL;
		mb->nmsgs = mb->cap = 0;
		mb->parsed_size = 0;
	} else
		log_debug("%s: index %s", mb->path,
		    ret == MBOX_TABLE_INDEX ? "used" : "used, new mail parsed");
	return ret;
}

/*
 * Was the file's last change (sb) far enough before now, a time the
 * locks were still held, that any later change gets a later ctime?
 * (The kernel stamps ctime from a coarse clock.)
 */
int
mbox_ctime_settled(const struct stat *sb, const struct timespec *now)
{
	int64_t	 age_ms;

	age_ms = (int64_t)(now->tv_sec - sb->st_ctim.tv_sec) * 1000 +
	    (now->tv_nsec - sb->st_ctim.tv_nsec) / 1000000;
	return age_ms >= IDX_SETTLE_MS;
}

/*
 * After a parse, with sb the mailbox as parsed: leaves the table for the
 * next session.  Best effort; a change too recent to be told apart by
 * ctime (not mb->settled) is not indexed.
 */
void
mbox_idx_save(struct maildrop *mb, const struct stat *sb)
{
	struct idx_hdr	 h;
	size_t		 len = mb->nmsgs * sizeof(*mb->msgs);
	int		 fd;

	if (sb->st_size < IDX_MIN || mb->nmsgs == 0 || !mb->settled ||
	    !mbox_uid_indexable(mb))
		return;
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, IDX_MAGIC, sizeof(h.magic));
	h.version = 4;
	h.recsize = sizeof(struct mbox_msg);
	h.uidl_scheme = (uint32_t)mb->hooks.uidl_scheme;
	h.dev = (uint64_t)sb->st_dev;
	h.ino = (uint64_t)sb->st_ino;
	h.size = (uint64_t)mb->parsed_size;
	h.mtime = sb->st_mtim;
	h.ctime = sb->st_ctim;
	h.nmsgs = mb->nmsgs;
	h.rec_hash = hash64(mb->msgs, len);
	h.hdr_hash = hash64(&h, offsetof(struct idx_hdr, hdr_hash));
	if (mbox_priv_raise(mb) != 0)
		return;
	fd = open(mb->idxpath, O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK |
	    O_CLOEXEC, 0600);
	mbox_priv_lower(mb);
	if (fd == -1) {
		log_debug("%s: no index: %s", mb->path, strerror(errno));
		return;
	}
	/* The header goes last: a torn index fails its checks. */
	if (!idx_file_ok(fd) || ftruncate(fd, 0) == -1 ||
	    mbox_pwrite_full(fd, mb->msgs, len, sizeof(h)) == -1 ||
	    mbox_pwrite_full(fd, &h, sizeof(h), 0) == -1)
		log_warnx("%s: index not written", mb->idxpath);
	close(fd);
}

/* After a commit the index describes a file that is gone. */
void
mbox_idx_drop(struct maildrop *mb)
{
	if (mbox_priv_raise(mb) != 0)
		return;
	if (unlink(mb->idxpath) == -1 && errno != ENOENT)
		log_warn("unlink %s", mb->idxpath);
	mbox_priv_lower(mb);
}
