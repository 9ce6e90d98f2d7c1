/*
 * mbox_journal.c: the commit of the mbox maildrop and its recovery
 * (README.md, "The integrity promise").  Runs as the mail user, under
 * both mailbox locks; the caller's hooks hold the mail group while the
 * journal is created, renamed or removed in the spool directory.
 *
 * The commit rewrites the mailbox in place behind a redo journal, so the
 * inode, owner, group and mode never change (a delivery agent that opened
 * the file before us still appends to the live mailbox) and a crash at
 * any instant leaves the old or the new mailbox, plus whatever was
 * delivered after the crash, once recovery has run.
 *
 * The protocol.  X is the offset of the first deleted message, S the size
 * of the file when the commit begins, L the length of the new tail (the
 * kept messages after X, then the mail delivered during the session), and
 * JOURNAL is "MAILBOX.pop3d-journal".
 *
 *   1. Under both locks, check that the path still names the inode we
 *      parsed, that it only grew, and that every message from X on is
 *      still what the parser saw.  Nothing to keep after X: truncate to
 *      X and fsync (one truncation is atomic by itself; no journal).
 *   2. Write the tail at JNL_DATA in "JOURNAL.new" and fsync it; then
 *      header slot A (dev, ino, X, S, L and a random marker whose first
 *      byte is NUL, sealed by a checksum), fsync; rename it to JOURNAL and
 *      fsync the directory.
 *   3. Write the tail at X and the first m = min(MARKER_LEN, S - X - L)
 *      bytes of the marker right after it, at X + L; fsync the mailbox.
 *   4. Write header slot B, a copy of A saying "phase 1: the tail is in
 *      place", fsync the journal.
 *   5. Truncate the mailbox to X + L, fsync; unlink JOURNAL, fsync the
 *      directory.
 *
 * What is durable when, and the invariants recovery relies on:
 *
 *   - Until step 2's directory fsync returns, the mailbox has not been
 *     written at all: failing there removes the journal and deletes
 *     nothing (should the removal fail too, the whole journal is left
 *     and the commit completes instead).  Once it has returned, the
 *     commit is decided: JOURNAL with a valid slot A holds the whole new
 *     tail (its data was fsynced before slot A was written), and any
 *     later failure is finished by recovery, now or in the next session.
 *   - "JOURNAL.new" is never more than an unfinished step 2; recovery
 *     removes it.  A JOURNAL whose slot A is not valid was never a
 *     decided commit (the rename comes after slot A is durable), so the
 *     mailbox was not touched; it is removed too.
 *   - A commit deletes something, so L < S - X: the marker always has at
 *     least one byte of room at X + L, inside the old file.
 *   - Nothing shrinks the file before slot B is durable (step 4 comes
 *     before step 5), so without a valid slot B the file is at least S
 *     long and everything past S was delivered after the crash.
 *   - Steps 3-5 are idempotent: they only copy the journal's bytes to
 *     fixed offsets and truncate to a fixed length.
 *
 * Recovery (mbox_recover_locked, run by every open and by pop3d -r):
 *
 *   - No valid slot B, or slot B and the marker still at X + L: the
 *     truncation has not happened (or did not reach the disk).  If the
 *     file is exactly S long, redo steps 3-5.  If it is longer, mail
 *     arrived after the crash: copy [S, end) to the journal's data after
 *     the tail (past what slot A covers, so JOURNAL stays valid), then
 *     journal tail and late mail together under a new header (steps 2-5
 *     again, with S the size now).  Until the rename, the old JOURNAL
 *     still describes the file, so recovery is itself crash-safe.
 *   - Slot B and no marker at X + L: the truncation happened; whatever
 *     lies past X + L was delivered afterwards (delivery agents append
 *     "From " lines, never a NUL byte), so the file is the new mailbox
 *     plus later mail.  Remove JOURNAL.
 *   - A file shorter than the journal says, or another inode: someone
 *     else rewrote it; keep JOURNAL and report MAILDROP_CHANGED.
 *
 * Hence old-or-new plus later mail: before the decision the old bytes
 * were never touched; after it, every path ends with the journal's tail
 * at X, the file cut at X + L, and mail delivered after the crash
 * (which can only be appended past S, or past X + L once truncated)
 * carried along.  Nothing is lost and nothing is duplicated.
 */
#include <sys/types.h>
#include <sys/random.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "mbox_impl.h"

#define JNL_SLOT_A	0
#define JNL_SLOT_B	512
#define JNL_DATA	4096
#define JNL_MAGIC	"POP3DJN1"
#define MARKER_LEN	16

struct jnl_hdr {
	char		 magic[8];
	uint32_t	 version;
	uint32_t	 phase;
	uint64_t	 dev;
	uint64_t	 ino;
	uint64_t	 x;		/* where the tail goes */
	uint64_t	 s;		/* mailbox size when the commit began */
	uint64_t	 l;		/* tail length */
	unsigned char	 marker[MARKER_LEN];
	uint64_t	 seal;		/* FNV-1a of everything above */
};

#define FNV_INIT	0xcbf29ce484222325ULL

static uint64_t
fnv1a(uint64_t h, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	while (len-- > 0) {
		h ^= *p++;
		h *= 0x100000001b3ULL;
	}
	return h;
}

static int
fsync_dir(const char *path)
{
	char	 dir[PATH_MAX], *slash;
	int	 fd, r;

	if (strlen(path) >= sizeof(dir)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(dir, path);
	if ((slash = strrchr(dir, '/')) == NULL)
		strcpy(dir, ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -1;
	r = fsync(fd);
	close(fd);
	return r;
}

static void
hdr_seal(struct jnl_hdr *h)
{
	h->seal = fnv1a(FNV_INIT, h, offsetof(struct jnl_hdr, seal));
}

static int
hdr_valid(const struct jnl_hdr *h)
{
	return memcmp(h->magic, JNL_MAGIC, 8) == 0 && h->version == 1 &&
	    h->seal == fnv1a(FNV_INIT, h, offsetof(struct jnl_hdr, seal)) &&
	    h->x <= h->s && h->l <= h->s - h->x && h->l < h->s - h->x;
}

/* Copies len bytes from (ifd, ioff) to (ofd, ooff) through mb->buf. */
static int
copy_range(struct maildrop *mb, int ifd, off_t ioff, int ofd, off_t ooff,
    uint64_t len)
{
	size_t	 n;
	ssize_t	 r;

	while (len > 0) {
		n = len > CHUNK ? CHUNK : (size_t)len;
		if ((r = mbox_pread_full(ifd, mb->buf, n, ioff)) < 0)
			return -1;
		if ((size_t)r != n) {
			errno = EIO;	/* the source shrank */
			return -1;
		}
		if (mbox_pwrite_full(ofd, mb->buf, n, ooff) < 0)
			return -1;
		ioff += (off_t)n;
		ooff += (off_t)n;
		len -= n;
		mbox_dotlock_refresh(mb);
	}
	return 0;
}

/* Creates a journal file, with the mail group held. */
static int
jnl_create(struct maildrop *mb, const char *path)
{
	int	 fd;

	if (mbox_priv_raise(mb) != 0)
		return -1;
	(void)unlink(path);
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
	    0600);
	mbox_priv_lower(mb);
	return fd;
}

static int
jnl_unlink(struct maildrop *mb, const char *path)
{
	int	 r;

	if (mbox_priv_raise(mb) != 0)
		return -1;
	r = unlink(path);
	mbox_priv_lower(mb);
	if (r == -1)
		return errno == ENOENT ? 0 : -1;	/* nothing to make durable */
	return fsync_dir(path);
}

/*
 * Steps 3-5: puts the journal's tail in place, truncates, drops the
 * journal.  Idempotent: recovery may run it again after a crash.
 */
static enum maildrop_status
jnl_apply(struct maildrop *mb, int jfd, struct jnl_hdr *h)
{
	struct jnl_hdr	 b;
	size_t		 m;

	m = h->s - h->x - h->l;
	if (m > MARKER_LEN)
		m = MARKER_LEN;
	if (copy_range(mb, jfd, JNL_DATA, mb->fd, (off_t)h->x, h->l) < 0 ||
	    mbox_pwrite_full(mb->fd, h->marker, m, (off_t)(h->x + h->l)) < 0 ||
	    fsync(mb->fd) < 0)
		goto fail;
	b = *h;
	b.phase = 1;
	hdr_seal(&b);
	if (mbox_pwrite_full(jfd, &b, sizeof(b), JNL_SLOT_B) < 0 ||
	    fsync(jfd) < 0)
		goto fail;
	if (ftruncate(mb->fd, (off_t)(h->x + h->l)) < 0 || fsync(mb->fd) < 0)
		goto fail;
	if (jnl_unlink(mb, mb->jnlpath) < 0)
		log_warn("remove %s", mb->jnlpath);
	return MAILDROP_OK;
fail:
	log_warn("commit %s", mb->path);
	return MAILDROP_IOERR;
}

struct range {
	off_t	 off;
	uint64_t len;
};

/*
 * Steps 2-5: writes a journal whose tail is the ranges of srcfd, in
 * order, under "JOURNAL.new", renames it into place, and applies it.
 */
static enum maildrop_status
jnl_write_apply(struct maildrop *mb, int srcfd, const struct range *r,
    size_t nr, uint64_t x, uint64_t s)
{
	struct jnl_hdr	 h;
	char		 tmp[PATH_MAX];
	uint64_t	 l = 0;
	size_t		 i;
	int		 jfd;
	enum maildrop_status st;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.new", mb->jnlpath) >=
	    sizeof(tmp))
		return MAILDROP_IOERR;
	if ((jfd = jnl_create(mb, tmp)) == -1) {
		log_warn("create %s", tmp);
		return MAILDROP_IOERR;
	}
	for (i = 0; i < nr; i++) {
		if (copy_range(mb, srcfd, r[i].off, jfd,
		    (off_t)(JNL_DATA + l), r[i].len) < 0) {
			log_warn("write %s", tmp);
			goto fail;
		}
		l += r[i].len;
	}
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, JNL_MAGIC, 8);
	h.version = 1;
	h.dev = (uint64_t)mb->dev;
	h.ino = (uint64_t)mb->ino;
	h.x = x;
	h.s = s;
	h.l = l;
	if (getrandom(h.marker, sizeof(h.marker), 0) != sizeof(h.marker))
		goto fail;
	h.marker[0] = '\0';	/* never the start of a delivery */
	hdr_seal(&h);
	if (fsync(jfd) < 0 ||
	    mbox_pwrite_full(jfd, &h, sizeof(h), JNL_SLOT_A) < 0 ||
	    fsync(jfd) < 0) {
		log_warn("write %s", tmp);
		goto fail;
	}
	if (mbox_priv_raise(mb) != 0)
		goto fail;
	if (rename(tmp, mb->jnlpath) < 0) {
		mbox_priv_lower(mb);
		log_warn("rename %s", tmp);
		goto fail;
	}
	mbox_priv_lower(mb);
	if (fsync_dir(mb->jnlpath) < 0) {
		log_warn("sync directory of %s", mb->jnlpath);
		/* The journal may not be durable: do not touch the mailbox. */
		(void)jnl_unlink(mb, mb->jnlpath);
		close(jfd);
		return MAILDROP_IOERR;
	}
	st = jnl_apply(mb, jfd, &h);
	close(jfd);
	return st;
fail:
	close(jfd);
	(void)jnl_unlink(mb, tmp);
	return MAILDROP_IOERR;
}

enum maildrop_status
mbox_recover_locked(struct maildrop *mb)
{
	struct jnl_hdr	 a, b;
	struct stat	 sb;
	struct range	 r;
	char		 tmp[PATH_MAX], mark[MARKER_LEN];
	uint64_t	 size, m, tail_end;
	int		 jfd, truncated;
	enum maildrop_status st;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.new", mb->jnlpath) <
	    sizeof(tmp))
		(void)jnl_unlink(mb, tmp);	/* never made it to step 2 */
	if ((jfd = open(mb->jnlpath, O_RDWR | O_NOFOLLOW | O_CLOEXEC)) ==
	    -1) {
		if (errno == ENOENT)
			return MAILDROP_OK;
		log_warn("open %s", mb->jnlpath);
		return MAILDROP_IOERR;
	}
	if (mbox_pread_full(jfd, &a, sizeof(a), JNL_SLOT_A) != sizeof(a) ||
	    !hdr_valid(&a)) {
		/* Step 2 never finished: the mailbox was not touched. */
		close(jfd);
		log_notice("%s: discarding an unfinished journal", mb->path);
		return jnl_unlink(mb, mb->jnlpath) < 0 ? MAILDROP_IOERR :
		    MAILDROP_OK;
	}
	if (mb->fd == -1 || fstat(mb->fd, &sb) == -1 ||
	    a.dev != (uint64_t)sb.st_dev || a.ino != (uint64_t)sb.st_ino) {
		close(jfd);
		log_warnx("%s: journal %s belongs to another file; remove it "
		    "after checking the mailbox", mb->path, mb->jnlpath);
		return MAILDROP_CHANGED;
	}
	size = (uint64_t)sb.st_size;
	m = a.s - a.x - a.l;
	if (m > MARKER_LEN)
		m = MARKER_LEN;
	tail_end = a.x + a.l;
	truncated = 0;
	if (mbox_pread_full(jfd, &b, sizeof(b), JNL_SLOT_B) == sizeof(b) &&
	    hdr_valid(&b) && b.phase == 1 &&
	    memcmp(&b.x, &a.x, offsetof(struct jnl_hdr, seal) -
	    offsetof(struct jnl_hdr, x)) == 0) {
		truncated = 1;
		if (size >= tail_end + m &&
		    mbox_pread_full(mb->fd, mark, m, (off_t)tail_end) ==
		    (ssize_t)m &&
		    memcmp(mark, a.marker, m) == 0)
			truncated = 0;
	}
	log_notice("%s: recovering an interrupted commit (%s)", mb->path,
	    truncated ? "complete" : "redo");
	if (truncated) {
		close(jfd);
		if (size < tail_end) {
			log_warnx("%s: shorter than its journal says", mb->path);
			return MAILDROP_CHANGED;
		}
		return jnl_unlink(mb, mb->jnlpath) < 0 ? MAILDROP_IOERR :
		    MAILDROP_OK;
	}
	if (size < a.s) {
		close(jfd);
		log_warnx("%s: shorter than its journal says; journal kept",
		    mb->path);
		return MAILDROP_CHANGED;
	}
	if (size == a.s) {
		st = jnl_apply(mb, jfd, &a);
		close(jfd);
		return st;
	}
	/*
	 * Mail arrived after the crash.  Append it to the journal's data
	 * (past what slot A covers, so the journal stays valid), then journal
	 * tail and late mail together under a new header and apply that.
	 */
	if (copy_range(mb, mb->fd, (off_t)a.s, jfd, (off_t)(JNL_DATA + a.l),
	    size - a.s) < 0 || fsync(jfd) < 0) {
		log_warn("extend %s", mb->jnlpath);
		close(jfd);
		return MAILDROP_IOERR;
	}
	r.off = JNL_DATA;
	r.len = a.l + (size - a.s);
	st = jnl_write_apply(mb, jfd, &r, 1, a.x, size);
	close(jfd);
	return st;
}

/* Does the path still name the file we hold open? */
static int
same_file(const struct maildrop *mb)
{
	struct stat	 sb;

	return lstat(mb->path, &sb) == 0 && sb.st_dev == mb->dev &&
	    sb.st_ino == mb->ino;
}

/* Under both locks: is this still the file we parsed, only grown? */
static enum maildrop_status
verify_unchanged(struct maildrop *mb, size_t from, off_t *size_r)
{
	struct stat	 sb;
	size_t		 i;

	if (fstat(mb->fd, &sb) == -1)
		return MAILDROP_IOERR;
	if (!same_file(mb)) {
		log_warnx("%s: replaced by another file since it was read; "
		    "nothing deleted", mb->path);
		return MAILDROP_CHANGED;
	}
	if (sb.st_dev != mb->dev || sb.st_ino != mb->ino ||
	    sb.st_size < mb->parsed_size) {
		log_warnx("%s: shrank or was replaced since it was read; "
		    "nothing deleted", mb->path);
		return MAILDROP_CHANGED;
	}
	/*
	 * Not written to since the parse (same size and times, which every
	 * write moves): nothing to re-check.  Else re-check every message
	 * the commit moves or deletes.
	 */
	if (mb->settled && sb.st_size == mb->parsed_size &&
	    same_times(&sb, &mb->parsed_mtime, &mb->parsed_ctime))
		from = mb->nmsgs;
	for (i = from; i < mb->nmsgs; i++) {
		if (!mbox_msg_intact(mb, i)) {
			log_warnx("%s: rewritten by another program since it "
			    "was read; nothing deleted", mb->path);
			return MAILDROP_CHANGED;
		}
	}
	*size_r = sb.st_size;
	return MAILDROP_OK;
}

enum maildrop_status
maildrop_commit(struct maildrop *mb)
{
	struct range	*r;
	size_t		 i, first_del, nr = 0;
	off_t		 size;
	enum maildrop_status st;

	for (first_del = mb->nhidden; first_del < mb->nmsgs; first_del++)
		if (mb->msgs[first_del].deleted)
			break;
	if (first_del == mb->nmsgs)
		return MAILDROP_OK;		/* nothing deleted, nothing written */
	if (!mb->writable)
		return MAILDROP_READONLY;
	if ((r = calloc(mb->nmsgs - first_del + 1, sizeof(*r))) == NULL)
		return MAILDROP_NOMEM;
	if ((st = mbox_lock(mb)) != MAILDROP_OK) {
		free(r);
		return st;
	}
	if ((st = verify_unchanged(mb, first_del, &size)) != MAILDROP_OK)
		goto done;
	for (i = first_del + 1; i < mb->nmsgs; i++) {
		if (mb->msgs[i].deleted)
			continue;
		/* Adjacent kept messages make one range. */
		if (nr > 0 && r[nr - 1].off + (off_t)r[nr - 1].len ==
		    mb->msgs[i].from_off)
			r[nr - 1].len += (uint64_t)(msg_next(mb, i) -
			    mb->msgs[i].from_off);
		else {
			r[nr].off = mb->msgs[i].from_off;
			r[nr].len = (uint64_t)(msg_next(mb, i) -
			    mb->msgs[i].from_off);
			nr++;
		}
	}
	if (size > mb->parsed_size) {
		if (nr > 0 && r[nr - 1].off + (off_t)r[nr - 1].len ==
		    mb->parsed_size)
			r[nr - 1].len += (uint64_t)(size - mb->parsed_size);
		else {
			r[nr].off = mb->parsed_size;
			r[nr].len = (uint64_t)(size - mb->parsed_size);
			nr++;
		}
	}
	if (nr == 0) {
		/*
		 * Nothing to keep after the first deletion (all deleted, or
		 * the last ones, and no new mail): one truncation, which is
		 * atomic by itself, and no journal.
		 */
		if (ftruncate(mb->fd, mb->msgs[first_del].from_off) == -1) {
			log_warn("truncate %s", mb->path);
			st = MAILDROP_IOERR;
		} else if (fsync(mb->fd) == -1)
			log_warn("sync %s (the messages are deleted)",
			    mb->path);
	} else
		st = jnl_write_apply(mb, mb->fd, r, nr,
		    (uint64_t)mb->msgs[first_del].from_off, (uint64_t)size);
	if (st != MAILDROP_OK && access(mb->jnlpath, F_OK) == 0) {
		/*
		 * The journal is durable, so the commit is decided: finish it
		 * now if the error was passing, else the next session will.
		 */
		if (mbox_recover_locked(mb) == MAILDROP_OK)
			st = MAILDROP_OK;
	}
	mbox_idx_drop(mb);
done:
	mbox_unlock(mb);
	free(r);
	return st;
}
