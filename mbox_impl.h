/*
 * mbox_impl.h: what the parts of the mbox implementation of maildrop.h
 * share: the message table, the maildrop itself, and the functions one
 * part calls in another.  All of it runs as the mail user.  Nothing
 * outside mbox*.c includes this file, except unit tests of internals.
 *
 *   mbox.c          the public API: open, close, the table, send
 *   mbox_from.c     From_ line recognition
 *   mbox_parse.c    the scanner and parser, Content-Length, the table
 *   mbox_uidl.c     UIDL hashing and numbering
 *   mbox_lock.c     fcntl and dotlock, the session lock
 *   mbox_journal.c  the commit and its recovery
 *   mbox_index.c    the index cache
 */
#ifndef POP3D_MBOX_IMPL_H
#define POP3D_MBOX_IMPL_H

#include <sys/types.h>
#include <sys/stat.h>

#include <md5.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "maildrop.h"
#include "mbox.h"

#define CHUNK		(128 * 1024)	/* read size for parse and send */
#define LINE_KEEP	4096		/* bytes of a line the parser looks at */
#define HEAD_HASHED	512		/* message bytes the commit re-checks */

/*
 * One message, in 48 bytes: memory grows with the number of messages.
 * Its bytes on file are [msg_body(), msg_end()); the next message (or
 * the end of what was parsed) starts at msg_next().  The index stores
 * these records as they are.
 */
struct mbox_msg {
	off_t		 from_off;	/* the From_ line */
	uint64_t	 size;		/* octets on the wire */
	uint64_t	 fingerprint;	/* of the From_ line and the head */
	unsigned char	 uid[16];	/* by uid_kind (mbox_uidl.c) */
	uint32_t	 uid_seq;	/* 1, or n for the n-th identical uid */
	uint16_t	 from_len;	/* the From_ line, terminator excluded */
	uint8_t		 from_eol;	/* its terminator: 0, 1 or 2 bytes */
	uint8_t		 frame : 2;	/* the empty line before msg_next() */
	uint8_t		 deleted : 1;
	uint8_t		 hidden : 1;
	uint8_t		 uid_kind : 2;	/* enum uid_kind */
};

/* "INO.journal.new" and the like, INO a uintmax_t in decimal. */
#define STATE_NAME_MAX	48

/*
 * dovecot: a mailbox's UIDVALIDITY and the UID Dovecot would give next
 * (validity 0: none), and where the parse took them from.
 */
struct mbox_imapbase {
	uint32_t	 validity;
	uint64_t	 next;
};
enum ib_source {
	IB_NONE,
	IB_HEADER,		/* the first message's X-IMAPbase: or X-IMAP: */
	IB_STORED		/* INO.imapbase: the first message has none */
};

/* The mbox implementation of the opaque maildrop of maildrop.h. */
struct maildrop {
	char			*path;
	char			*lockpath;	/* the dotlock, in the spool */
	char			*spooljnl;	/* an old version's journal */
	char			*statedir;	/* for the log */
	int			 sdfd;		/* the state directory, or -1 */
	char			 jnlname[STATE_NAME_MAX];	/* INO.journal */
	char			 jnltmp[STATE_NAME_MAX];	/* .new */
	char			 idxname[STATE_NAME_MAX];	/* INO.index */
	int			 fd;		/* -1: the file does not exist */
	int			 fd_borrowed;	/* mbox_parse_fd: not ours */
	int			 writable;
	dev_t			 dev;
	ino_t			 ino;
	off_t			 parsed_size;
	struct mbox_msg		*msgs;
	size_t			 nmsgs;		/* all, hidden included */
	size_t			 cap;		/* msgs allocated */
	enum mbox_table_source	 table_source;
	struct timespec		 parsed_ctime;	/* of the file as parsed */
	struct timespec		 parsed_mtime;
	int			 settled;	/* ctime told changes apart */
	/*
	 * On a file system other hosts write to (NFS, FUSE/GlusterFS, CIFS,
	 * Ceph, GFS2, OCFS2): times come from other clocks, and a PID in a
	 * dotlock may be another host's.  See mbox_on_netfs().
	 */
	int			 netfs;
	size_t			 nhidden;	/* 1 when msgs[0] is hidden */
	struct maildrop_hooks	 hooks;
	int			 dotlocked;
	time_t			 dotlock_time;
	char			*buf;		/* CHUNK bytes for send/commit */
	char			*uid_pool;	/* X-UIDL values (mbox_uidl.c) */
	size_t			 uid_pool_len;
	size_t			 uid_pool_cap;
	/* dovecot: the X-IMAPbase kept in INO.imapbase, and the parse's. */
	struct mbox_imapbase	 ib_stored;
	struct mbox_imapbase	 ib_parsed;
	enum ib_source		 ib_source;	/* of ib_parsed */
	size_t			 ib_xuids;	/* messages with an X-UID taken */
};

/* One line as the scanner hands it to the parser. */
struct line {
	off_t		 off;		/* file offset of the line */
	const char	*head;		/* its first hlen bytes */
	size_t		 hlen;
	uint64_t	 len;		/* bytes, terminator included */
	uint64_t	 content;	/* bytes before LF or CRLF */
	int		 has_lf;
};

static inline off_t
msg_next(const struct maildrop *mb, size_t i)
{
	return i + 1 < mb->nmsgs ? mb->msgs[i + 1].from_off : mb->parsed_size;
}

static inline off_t
msg_body(const struct mbox_msg *m)
{
	return m->from_off + m->from_len + m->from_eol;
}

static inline off_t
msg_end(const struct maildrop *mb, size_t i)
{
	return msg_next(mb, i) - mb->msgs[i].frame;
}

/* Is line l the header field name (case-insensitive, colon included)? */
static inline int
header_is(const struct line *l, const char *name)
{
	size_t	 n = strlen(name);

	return l->hlen > n && strncasecmp(l->head, name, n) == 0;
}

/* Is fd on a file system that other hosts may share? */
int		 mbox_on_netfs(int fd);

/* Has the file kept the mtime and ctime it had (every write moves them)? */
static inline int
same_times(const struct stat *sb, const struct timespec *mtime,
    const struct timespec *ctime)
{
	return sb->st_mtim.tv_sec == mtime->tv_sec &&
	    sb->st_mtim.tv_nsec == mtime->tv_nsec &&
	    sb->st_ctim.tv_sec == ctime->tv_sec &&
	    sb->st_ctim.tv_nsec == ctime->tv_nsec;
}

/*
 * A fast 64-bit hash of a short byte string, a word at a time: the
 * check that bytes are still what the parser saw.  Not for anything an
 * attacker picks.
 */
static inline uint64_t
hash64(const void *buf, size_t len)
{
	const unsigned char	*p = buf;
	uint64_t		 h = 0x9e3779b97f4a7c15ULL ^ len, w;

	for (; len >= 8; p += 8, len -= 8) {
		memcpy(&w, p, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdULL;
		h ^= h >> 32;
	}
	w = 0;
	memcpy(&w, p, len);
	h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
	return h ^ (h >> 29);
}

/* A message's fingerprint: its From_ line's hash with its head's. */
static inline uint64_t
msg_fingerprint(uint64_t from_hash, uint64_t head_hash)
{
	return from_hash ^ (head_hash * 0x9e3779b97f4a7c15ULL);
}

/* mbox.c: full-length pread (short only at EOF; -1 on error) and pwrite. */
ssize_t		 mbox_pread_full(int, void *, size_t, off_t);
int		 mbox_pwrite_full(int, const void *, size_t, off_t);

/* mbox_from.c: is the line (no terminator) a message separator? */
int		 mbox_is_from_line(const char *line, size_t len);

/*
 * mbox_parse.c: parses [start, fsize) of the file, start being 0 or the
 * From_ line of a message after those already in mb->msgs, then numbers
 * the UIDs.  mbox_msg_intact(): are message i's From_ line and first
 * bytes still what its fingerprint says (reads through mb->buf)?
 */
enum maildrop_status mbox_parse(struct maildrop *mb, off_t start,
		    off_t fsize);
int		 mbox_msg_intact(struct maildrop *mb, size_t i);

/*
 * mbox_uidl.c: the UIDs, by the maildrop's scheme (maildrop.h).  A
 * message's UID is one of these kinds:
 *
 *   UID_MD5      uid is the MD5 of its From_ line and of the header lines
 *                mail readers never rewrite (pop3d's own scheme, and the
 *                fallback of the other two)
 *   UID_POPA3D   uid[0..7] is popa3d's MD5 of those header lines alone
 *   UID_XUIDL    uid[0..3] is the offset of its X-UIDL: value in
 *                mb->uid_pool, uid[4..15] a hash of the value
 *   UID_DOVECOT  uid[0..3] is its X-UID:, uid[4..7] the X-IMAPbase:
 *                UIDVALIDITY
 *
 * mbox_uid_init() starts a parse at start; mbox_uid_begin() starts a
 * message from its From_ line; mbox_uid_header() takes each header line
 * that starts with D, M, R, X, a space or a tab (the initials of every
 * field a scheme reads, and folded lines); mbox_uid_end() decides the
 * message's UID.  received counts the Received: lines seen.  Any error
 * (a read, memory) is left in error for mbox_parse() to return.
 */
enum uid_kind {
	UID_MD5,
	UID_POPA3D,
	UID_XUIDL,
	UID_DOVECOT
};

struct uid_hash {
	MD5_CTX		 md5;
	int		 received;
	struct maildrop	*mb;
	enum maildrop_uidl_scheme scheme;
	enum maildrop_status error;
	int		 first;		/* in the file's first message */
	int		 msgs;		/* messages begun in this parse */
	off_t		 hashed_end;	/* popa3d: after the last line hashed */
	/* xuidl: the message's X-UIDL: header. */
	int		 xuidl;		/* 0 none, 1 one usable, -1 unusable */
	off_t		 xuidl_end;
	size_t		 xuidl_len;
	char		 xuidl_val[MAILDROP_UIDL_MAX];
	/* dovecot: the file's X-IMAPbase:, the message's X-UID:. */
	uint32_t	 dv_validity;	/* 0: none (yet) */
	uint64_t	 dv_next;	/* the UID Dovecot would give next */
	uint32_t	 dv_prev;	/* the last X-UID taken */
	uint32_t	 dv_uid;	/* this message's, or 0 */
	int		 dv_stored;	/* dv_validity from INO.imapbase */
};
void		 mbox_uid_init(struct uid_hash *, struct maildrop *mb,
		    off_t start);
void		 mbox_uid_begin(struct uid_hash *, const struct line *from);
void		 mbox_uid_header(struct uid_hash *, const struct line *);
void		 mbox_uid_end(struct uid_hash *, struct mbox_msg *);
/* Makes the UIDs unique: numbers identical ones in file order (h, h-2). */
enum maildrop_status mbox_uid_number(struct maildrop *mb);
/* The UIDL of one message, in buf (>= MAILDROP_UIDL_MAX). */
void		 mbox_uid_format(const struct maildrop *mb,
		    const struct mbox_msg *, char *buf);
/* May the index cache this scheme's UIDs (all of them fit the records)? */
int		 mbox_uid_indexable(const struct maildrop *mb);

/*
 * dovecot: the X-IMAPbase of the file's first message outlives it in the
 * state directory, as INO.imapbase, so that deleting that message (pop3d
 * never writes headers, so never moves X-IMAPbase on) does not take the
 * UIDVALIDITY of every other message with it.  mbox_imapbase_load(),
 * before a parse from the start, reads it into mb->ib_stored when it
 * passes mbox_state_open()'s checks and its own (else it is ignored,
 * logged); the parse uses it only when the first message carries no
 * X-IMAPbase: or X-IMAP: at all.  mbox_imapbase_save(), after the parse,
 * writes what the first message's header said when it differs from the
 * file (temporary file, fsync, rename, fsync of the directory), and
 * removes the file once no message keeps an X-UID it vouched for.  Both
 * do nothing unless the scheme is dovecot and there is a state directory.
 */
void		 mbox_imapbase_load(struct maildrop *mb);
void		 mbox_imapbase_save(struct maildrop *mb);

/*
 * mbox.c: the state directory (statedir.h).  Files in it are named by
 * the mailbox's inode number alone: INO.lock, INO.journal, INO.index,
 * INO.imapbase.
 * Not by dev:ino, since the device number of one file differs between
 * two hosts that mount one GlusterFS or NFS volume, and the state may
 * live on such a volume.  The directory is per user, so two maildrops
 * share a name only when one user has two mailboxes on two file systems
 * with equal inode numbers: then a spurious [IN-USE], and never a wrong
 * journal, since a journal's header names the inode and a hash of the
 * bytes before the first deletion, and both are checked.
 *
 * mbox_statedir_open() opens dir with O_NOFOLLOW and checks with fstat
 * that it is a directory of the effective uid closed to others' writes;
 * returns the descriptor or -1 (logged).  mbox_file_check() refuses
 * what is not a regular file with one link owned by owner, with mode
 * exactly 0600 (exact) or no group or other bit at all; why gets the
 * reason.  mbox_state_open() opens name in the state directory with
 * O_NOFOLLOW (O_NONBLOCK, so that a FIFO cannot hang it) and checks it;
 * returns the descriptor, -1 when there is no such file, or -2 when it
 * cannot be opened or fails a check (logged once, with what failed).
 * mbox_state_create() makes name afresh (O_EXCL), mode 0600, and makes
 * sure it is the effective uid's; -1 on error.
 */
int		 mbox_statedir_open(const char *dir);
int		 mbox_file_check(int fd, uid_t owner, int exact, char *why,
		    size_t whysize);
int		 mbox_state_open(struct maildrop *mb, const char *name,
		    int flags, const char *what);
int		 mbox_state_create(struct maildrop *mb, const char *name);

/* mbox_lock.c: both mailbox locks, fcntl then the dotlock. */
enum maildrop_status mbox_lock(struct maildrop *mb);
void		 mbox_unlock(struct maildrop *mb);
/* Refreshes a held dotlock so that nobody takes it for stale. */
void		 mbox_dotlock_refresh(struct maildrop *mb);

/*
 * mbox_journal.c: finishes any interrupted commit; called with both
 * locks held.
 */
enum maildrop_status mbox_recover_locked(struct maildrop *mb);
/*
 * Is there a journal of ours that recovery would act on (one in the
 * state directory, or the version before's in the spool, that passes
 * the file checks and is not empty)?  For pop3d -l, which writes nothing.
 */
int		 mbox_journal_pending(struct maildrop *mb);

/*
 * mbox_index.c: the index cache.  mbox_idx_load() runs under the locks
 * with sb the mailbox now; MBOX_TABLE_INDEX_GROWN leaves all but the
 * last message loaded and *resume_r where parsing goes on.
 * mbox_idx_save() runs after a parse; mbox_idx_drop() after a commit.
 * mbox_ctime_settled(): was the change sb records far enough before now
 * that any later change gets a later ctime (netfs: allowing for other
 * hosts' clocks)?
 */
enum mbox_table_source mbox_idx_load(struct maildrop *mb,
		    const struct stat *sb, off_t *resume_r);
void		 mbox_idx_save(struct maildrop *mb, const struct stat *sb);
void		 mbox_idx_drop(struct maildrop *mb);
int		 mbox_ctime_settled(const struct stat *sb,
		    const struct timespec *now, int netfs);

#endif
