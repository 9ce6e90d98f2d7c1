/*
 * mbox_journal.c: the commit of the mbox maildrop and its recovery
 * (README.md, "The integrity promise").  Runs as the mail user, under
 * both mailbox locks.  The journal lives in the user's state directory
 * (mbox.c), never in the spool, and is checked with fstat whenever it is
 * opened; one that fails a check, or whose header names another file, is
 * logged and never applied.
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
 * JOURNAL is "STATEDIR/INO.journal", INO the mailbox's inode number.
 *
 *   1. Under both locks, check that the path still names the inode we
 *      parsed, that it only grew, and that every message from X on is
 *      still what the parser saw.  Nothing to keep after X: truncate to
 *      X and fsync (one truncation is atomic by itself; no journal).
 *   2. Write the tail in "JOURNAL.new" at JNL_DATA plus the padding that
 *      puts its first byte at the same offset within a block as in the
 *      mailbox (so that copy_file_range can share the blocks where the
 *      file system has reflink), and fsync it; then header slot A (ino, a
 *      hash of the mailbox's bytes before X, X, S, L, where the tail is
 *      and a random marker whose first byte is NUL, sealed by a checksum),
 *      fsync; rename it to JOURNAL and fsync the directory.
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
 *   - Another inode, or other bytes before X (which no commit touches):
 *     JOURNAL is not this mailbox's.  It is logged and left alone, and
 *     the mailbox is served as it is.
 *   - A file shorter than the journal says: someone else rewrote it;
 *     keep JOURNAL and report MAILDROP_CHANGED.
 *
 * Upgrade: the version before the state directory kept its journal in the
 * spool, as "MAILBOX.pop3d-journal" (header version 1, which names the
 * device too).  One is finished only when it is a regular file with one
 * link, owned by the mailbox's owner, mode 0600, opened with O_NOFOLLOW;
 * else it is logged and ignored.  It is copied whole to JOURNAL first and
 * then retired (unlinked where the user may, else truncated to nothing,
 * since the session cannot write the spool directory), so that only one
 * of them ever describes the commit: a spool journal found beside a
 * valid JOURNAL is a copy already made, and is retired without being
 * applied.  An empty one is a journal retired before.
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
#define JNL_DATA	4096	/* the tail starts here, or a little after */
#define JNL_PAD_MAX	65536	/* the most the tail starts after JNL_DATA */
#define JNL_MAGIC	"POP3DJN1"
#define JNL_VERSION	3	/* 1: ident is st_dev (in the spool only); */
				/* 2: no data field, the tail at JNL_DATA */
#define CFR_CHUNK	(16 * 1024 * 1024)	/* per copy_file_range */
#define MARKER_LEN	16
#define IDENT_LEN	4096	/* mailbox bytes before X the ident hashes */

struct jnl_hdr {
	char		 magic[8];
	uint32_t	 version;
	uint32_t	 phase;
	uint64_t	 ident;		/* hash64 of [0, min(X, IDENT_LEN)) */
	uint64_t	 ino;
	uint64_t	 x;		/* where the tail goes */
	uint64_t	 s;		/* mailbox size when the commit began */
	uint64_t	 l;		/* tail length */
	unsigned char	 marker[MARKER_LEN];
	uint64_t	 data;		/* where the tail is in the journal */
	uint64_t	 seal;		/* FNV-1a of everything above */
};

/*
 * Versions 1 and 2 had no data field: their seal is where data is now
 * (and the bytes after it, in what is read as seal, are the zeros that
 * follow a header slot).
 */
#define HDR_V2_SEAL	offsetof(struct jnl_hdr, data)

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

/* Makes a change to the spool directory of path durable. */
static int
fsync_parent(const char *path)
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

/*
 * Is h a sealed header of a commit that deletes something?  A header of
 * version 1 or 2 is given the data field it implied (JNL_DATA), so that
 * the rest of this file reads every version the same way.
 */
static int
hdr_valid(struct jnl_hdr *h)
{
	if (memcmp(h->magic, JNL_MAGIC, 8) != 0)
		return 0;
	if (h->version == 1 || h->version == 2) {
		if (h->data != fnv1a(FNV_INIT, h, HDR_V2_SEAL))
			return 0;
		h->data = JNL_DATA;
		hdr_seal(h);
	} else if (h->version != JNL_VERSION || h->seal != fnv1a(FNV_INIT, h,
	    offsetof(struct jnl_hdr, seal)) || h->data < JNL_DATA ||
	    h->data >= JNL_DATA + JNL_PAD_MAX)
		return 0;
	return h->x <= h->s && h->l <= h->s - h->x && h->l < h->s - h->x;
}

/*
 * The block size that extent sharing works in, as far as we can tell: a
 * multiple of it is as good (it keeps offsets congruent modulo the block).
 */
static uint64_t
share_block(int fd)
{
	struct stat	 sb;
	uint64_t	 bs;

	bs = fstat(fd, &sb) == 0 ? (uint64_t)sb.st_blksize : 0;
	if (bs < 512 || bs > JNL_PAD_MAX || (bs & (bs - 1)) != 0)
		bs = 4096;
	return bs;
}

/*
 * Copies len bytes from (ifd, ioff) to (ofd, ooff): with copy_file_range,
 * which keeps the bytes in the kernel and, on XFS or Btrfs with reflink,
 * shares the blocks of a range that starts at the same offset within a
 * block on both sides instead of writing them; else, where the call is
 * not supported (another file system type, an old kernel), through
 * mb->buf.  An error of the copy itself (ENOSPC, EIO, EDQUOT) is an error
 * either way; a short copy goes on from where it stopped.
 */
static int
copy_range(struct maildrop *mb, int ifd, off_t ioff, int ofd, off_t ooff,
    uint64_t len)
{
	loff_t	 in, out;
	uint64_t bs = share_block(ofd), head;
	size_t	 n;
	ssize_t	 r;

	while (len > 0) {
		n = len > CFR_CHUNK ? CFR_CHUNK : (size_t)len;
		/*
		 * The kernel shares blocks only from a block boundary on: when
		 * both offsets sit at the same place inside a block, copy up to
		 * the boundary first, so that the rest can be shared.
		 */
		head = (uint64_t)ioff % bs;
		if (head != 0 && head == (uint64_t)ooff % bs && n > bs - head)
			n = (size_t)(bs - head);
		in = ioff;
		out = ooff;
		if ((r = copy_file_range(ifd, &in, ofd, &out, n, 0)) < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EXDEV || errno == EINVAL ||
			    errno == ENOSYS || errno == EOPNOTSUPP)
				break;
			return -1;
		}
		if (r == 0) {
			errno = EIO;	/* the source shrank */
			return -1;
		}
		ioff += (off_t)r;
		ooff += (off_t)r;
		len -= (uint64_t)r;
		mbox_dotlock_refresh(mb);
	}
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

/* The hash of the mailbox's bytes before x, which no commit changes. */
static int
mailbox_ident(struct maildrop *mb, uint64_t x, uint64_t *ident_r)
{
	size_t	 n = x < IDENT_LEN ? (size_t)x : IDENT_LEN;
	ssize_t	 r;

	if ((r = mbox_pread_full(mb->fd, mb->buf, n, 0)) < 0)
		return -1;
	*ident_r = hash64(mb->buf, (size_t)r);
	return 0;
}

/*
 * Does journal header h belong to the mailbox?  0, or -1 with why: the
 * inode, then the device (version 1, which never left its host) or the
 * bytes before X (version 2).
 */
static int
jnl_ident_ok(struct maildrop *mb, const struct jnl_hdr *h, char *why,
    size_t whysize)
{
	struct stat	 sb;
	uint64_t	 ident;

	if (fstat(mb->fd, &sb) == -1) {
		(void)snprintf(why, whysize, "fstat: %s", strerror(errno));
		return -1;
	}
	if (h->ino != (uint64_t)sb.st_ino)
		(void)snprintf(why, whysize, "it names inode %ju, not %ju",
		    (uintmax_t)h->ino, (uintmax_t)sb.st_ino);
	else if (h->version == 1 && h->ident != (uint64_t)sb.st_dev)
		(void)snprintf(why, whysize, "it names another device");
	else if (h->version != 1 && (mailbox_ident(mb, h->x, &ident) == -1 ||
	    ident != h->ident))
		(void)snprintf(why, whysize, "the mailbox's first %ju bytes "
		    "are not the ones it names", (uintmax_t)(h->x < IDENT_LEN ?
		    h->x : IDENT_LEN));
	else
		return 0;
	return -1;
}

/* Creates a journal file in the state directory, afresh. */
static int
jnl_create(struct maildrop *mb, const char *name)
{
	(void)unlinkat(mb->sdfd, name, 0);
	return mbox_state_create(mb, name);
}

static int
jnl_unlink(struct maildrop *mb, const char *name)
{
	if (unlinkat(mb->sdfd, name, 0) == -1)
		return errno == ENOENT ? 0 : -1;	/* nothing to make durable */
	return fsync(mb->sdfd);
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
	/*
	 * The tail goes back with copy_file_range too.  Where the journal's
	 * tail and X start at the same offset within a block (the deleted
	 * messages fill whole blocks) XFS and Btrfs may remap the journal's
	 * blocks into the mailbox instead of writing them.  That is as safe
	 * as the overwrite: the remap changes which blocks hold [X, X + L)
	 * of the same inode (number, owner, group and mode stay, and an
	 * agent that has it open still appends to it); until the fsync below
	 * returns a crash leaves each block old or new, as a partial write
	 * would, and recovery redoes the copy from the journal, which keeps
	 * its own reference to the shared blocks (a later write to either
	 * file copies on write and leaves the other alone).
	 */
	if (copy_range(mb, jfd, (off_t)h->data, mb->fd, (off_t)h->x,
	    h->l) < 0 ||
	    mbox_pwrite_full(mb->fd, h->marker, m, (off_t)(h->x + h->l)) < 0 ||
	    fsync(mb->fd) < 0)
		goto fail;
	b = *h;
	b.phase = 1;
	if (b.version < 3) {
		/* Slot B as its version wrote it (hdr_valid). */
		b.data = fnv1a(FNV_INIT, &b, HDR_V2_SEAL);
		b.seal = 0;
	} else
		hdr_seal(&b);
	if (mbox_pwrite_full(jfd, &b, sizeof(b), JNL_SLOT_B) < 0 ||
	    fsync(jfd) < 0)
		goto fail;
	if (ftruncate(mb->fd, (off_t)(h->x + h->l)) < 0 || fsync(mb->fd) < 0)
		goto fail;
	if (jnl_unlink(mb, mb->jnlname) < 0)
		log_warn("remove %s/%s", mb->statedir, mb->jnlname);
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
	const char	*tmp = mb->jnltmp;
	uint64_t	 l = 0, ident, bs, data;
	size_t		 i;
	int		 jfd;
	enum maildrop_status st;

	/*
	 * The tail starts in the journal at the same offset within a block
	 * as its first range in srcfd, so that copy_file_range can share
	 * that range's blocks where the file system has reflink (XFS,
	 * Btrfs) instead of copying them; the header records where.
	 */
	bs = share_block(srcfd);
	data = JNL_DATA + ((uint64_t)r[0].off % bs + bs - JNL_DATA % bs) % bs;

	if (mailbox_ident(mb, x, &ident) == -1) {
		log_warn("read %s", mb->path);
		return MAILDROP_IOERR;
	}
	if ((jfd = jnl_create(mb, tmp)) == -1) {
		log_warn("create %s/%s", mb->statedir, tmp);
		return MAILDROP_IOERR;
	}
	for (i = 0; i < nr; i++) {
		if (copy_range(mb, srcfd, r[i].off, jfd, (off_t)(data + l),
		    r[i].len) < 0) {
			log_warn("write %s/%s", mb->statedir, tmp);
			goto fail;
		}
		l += r[i].len;
	}
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, JNL_MAGIC, 8);
	h.version = JNL_VERSION;
	h.ident = ident;
	h.ino = (uint64_t)mb->ino;
	h.x = x;
	h.s = s;
	h.l = l;
	h.data = data;
	if (getrandom(h.marker, sizeof(h.marker), 0) != sizeof(h.marker))
		goto fail;
	h.marker[0] = '\0';	/* never the start of a delivery */
	hdr_seal(&h);
	if (fsync(jfd) < 0 ||
	    mbox_pwrite_full(jfd, &h, sizeof(h), JNL_SLOT_A) < 0 ||
	    fsync(jfd) < 0) {
		log_warn("write %s/%s", mb->statedir, tmp);
		goto fail;
	}
	if (renameat(mb->sdfd, tmp, mb->sdfd, mb->jnlname) < 0) {
		log_warn("rename %s/%s", mb->statedir, tmp);
		goto fail;
	}
	if (fsync(mb->sdfd) < 0) {
		log_warn("sync %s", mb->statedir);
		/* The journal may not be durable: do not touch the mailbox. */
		(void)jnl_unlink(mb, mb->jnlname);
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

/*
 * Opens the spool journal of the version before (see the top comment):
 * the descriptor, -1 when there is none, -2 when it is refused (logged).
 */
static int
spool_jnl_open(struct maildrop *mb)
{
	char	 why[80];
	int	 fd;

	if ((fd = open(mb->spooljnl, O_RDWR | O_NOFOLLOW | O_NONBLOCK |
	    O_CLOEXEC)) == -1) {
		if (errno == ENOENT)
			return -1;
		(void)snprintf(why, sizeof(why), "%s", errno == ELOOP ?
		    "a symlink" : strerror(errno));
	} else if (mbox_file_check(fd, geteuid(), 1, why, sizeof(why)) == 0)
		return fd;
	else
		close(fd);
	log_warnx("%s: ignoring %s: %s", mb->path, mb->spooljnl, why);
	return -2;
}

/*
 * Retires a spool journal for good: unlinked where the user may write
 * the spool, else emptied (an empty one is never read again).
 */
static int
spool_jnl_retire(struct maildrop *mb, int sfd)
{
	if (unlink(mb->spooljnl) == 0)
		return fsync_parent(mb->spooljnl);
	if (ftruncate(sfd, 0) == -1 || fsync(sfd) == -1) {
		log_warn("retire %s", mb->spooljnl);
		return -1;
	}
	return 0;
}

/*
 * Moves a spool journal of ours into the state directory, whole, and
 * retires it: returns the new JOURNAL's descriptor, or -1 (with *st_r
 * MAILDROP_OK when there was nothing to move).
 */
static int
spool_jnl_adopt(struct maildrop *mb, enum maildrop_status *st_r)
{
	struct jnl_hdr	 a;
	struct stat	 sb;
	char		 why[96];
	int		 sfd, jfd = -1;

	*st_r = MAILDROP_OK;
	if ((sfd = spool_jnl_open(mb)) < 0)
		return -1;
	if (fstat(sfd, &sb) == -1 || sb.st_size == 0)
		goto out;			/* retired before */
	if (mbox_pread_full(sfd, &a, sizeof(a), JNL_SLOT_A) != sizeof(a) ||
	    !hdr_valid(&a)) {
		/* Its step 2 never finished: the mailbox was not touched. */
		log_notice("%s: discarding an unfinished journal %s",
		    mb->path, mb->spooljnl);
		(void)spool_jnl_retire(mb, sfd);
		goto out;
	}
	if (jnl_ident_ok(mb, &a, why, sizeof(why)) == -1) {
		log_warnx("%s: ignoring %s: %s", mb->path, mb->spooljnl, why);
		goto out;
	}
	if ((jfd = jnl_create(mb, mb->jnltmp)) == -1 ||
	    copy_range(mb, sfd, 0, jfd, 0, (uint64_t)sb.st_size) < 0 ||
	    fsync(jfd) < 0 ||
	    renameat(mb->sdfd, mb->jnltmp, mb->sdfd, mb->jnlname) < 0 ||
	    fsync(mb->sdfd) < 0) {
		log_warn("%s: moving %s to %s", mb->path, mb->spooljnl,
		    mb->statedir);
		(void)jnl_unlink(mb, mb->jnltmp);
		goto fail;
	}
	/* Two journals of one commit must never both be found. */
	if (spool_jnl_retire(mb, sfd) == -1) {
		(void)jnl_unlink(mb, mb->jnlname);
		goto fail;
	}
	log_notice("%s: journal %s moved to %s/%s", mb->path, mb->spooljnl,
	    mb->statedir, mb->jnlname);
	close(sfd);
	return jfd;
fail:
	if (jfd != -1)
		close(jfd);
	*st_r = MAILDROP_IOERR;
	jfd = -1;
out:
	close(sfd);
	return jfd;
}

int
mbox_journal_pending(struct maildrop *mb)
{
	struct stat	 sb;
	int		 fd, pending = 0;

	if (mb->fd == -1 || mb->sdfd == -1)
		return 0;
	if ((fd = mbox_state_open(mb, mb->jnlname, O_RDONLY, "journal")) >=
	    0 || (fd = spool_jnl_open(mb)) >= 0) {
		pending = fstat(fd, &sb) == 0 && sb.st_size > 0;
		close(fd);
	}
	return pending;
}

/* Finishes the commit journal jfd describes (the top comment). */
static enum maildrop_status
recover_journal(struct maildrop *mb, int jfd)
{
	struct jnl_hdr	 a, b;
	struct stat	 sb;
	struct range	 r;
	char		 mark[MARKER_LEN], why[96];
	uint64_t	 size, m, tail_end;
	int		 truncated;

	if (mbox_pread_full(jfd, &a, sizeof(a), JNL_SLOT_A) != sizeof(a) ||
	    !hdr_valid(&a)) {
		/* Step 2 never finished: the mailbox was not touched. */
		log_notice("%s: discarding an unfinished journal", mb->path);
		return jnl_unlink(mb, mb->jnlname) < 0 ? MAILDROP_IOERR :
		    MAILDROP_OK;
	}
	if (jnl_ident_ok(mb, &a, why, sizeof(why)) == -1) {
		log_warnx("%s: journal %s/%s not used: %s; the mailbox is "
		    "served as it is", mb->path, mb->statedir, mb->jnlname,
		    why);
		return MAILDROP_OK;
	}
	if (fstat(mb->fd, &sb) == -1)
		return MAILDROP_IOERR;
	size = (uint64_t)sb.st_size;
	m = a.s - a.x - a.l;
	if (m > MARKER_LEN)
		m = MARKER_LEN;
	tail_end = a.x + a.l;
	truncated = 0;
	if (mbox_pread_full(jfd, &b, sizeof(b), JNL_SLOT_B) == sizeof(b) &&
	    hdr_valid(&b) && b.phase == 1 && b.version == a.version &&
	    memcmp(&b.ident, &a.ident, offsetof(struct jnl_hdr, seal) -
	    offsetof(struct jnl_hdr, ident)) == 0) {
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
		if (size < tail_end) {
			log_warnx("%s: shorter than its journal says", mb->path);
			return MAILDROP_CHANGED;
		}
		return jnl_unlink(mb, mb->jnlname) < 0 ? MAILDROP_IOERR :
		    MAILDROP_OK;
	}
	if (size < a.s) {
		log_warnx("%s: shorter than its journal says; journal kept",
		    mb->path);
		return MAILDROP_CHANGED;
	}
	if (size == a.s)
		return jnl_apply(mb, jfd, &a);
	/*
	 * Mail arrived after the crash.  Append it to the journal's data
	 * (past what slot A covers, so the journal stays valid), then journal
	 * tail and late mail together under a new header and apply that.
	 */
	if (copy_range(mb, mb->fd, (off_t)a.s, jfd, (off_t)(a.data + a.l),
	    size - a.s) < 0 || fsync(jfd) < 0) {
		log_warn("extend %s/%s", mb->statedir, mb->jnlname);
		return MAILDROP_IOERR;
	}
	r.off = (off_t)a.data;
	r.len = a.l + (size - a.s);
	return jnl_write_apply(mb, jfd, &r, 1, a.x, size);
}

enum maildrop_status
mbox_recover_locked(struct maildrop *mb)
{
	enum maildrop_status st;
	int		 jfd, sfd;

	if (mb->fd == -1 || mb->sdfd == -1)
		return MAILDROP_OK;
	(void)jnl_unlink(mb, mb->jnltmp);	/* never made it to step 2 */
	jfd = mbox_state_open(mb, mb->jnlname, O_RDWR, "journal");
	if (jfd >= 0) {
		/* A spool journal beside it is a copy already made. */
		if ((sfd = spool_jnl_open(mb)) >= 0) {
			(void)spool_jnl_retire(mb, sfd);
			close(sfd);
		}
	} else if ((jfd = spool_jnl_adopt(mb, &st)) < 0)
		return st;
	st = recover_journal(mb, jfd);
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
	 * the commit moves or deletes.  On a shared file system always: its
	 * times come from other hosts' clocks and may be cached.
	 */
	if (mb->settled && !mb->netfs && sb.st_size == mb->parsed_size &&
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
	if (st != MAILDROP_OK &&
	    faccessat(mb->sdfd, mb->jnlname, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
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
