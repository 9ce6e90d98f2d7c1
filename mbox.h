/*
 * mbox.h: one Unix mbox maildrop.  Locks it the way Debian's delivery
 * agents do, parses it once into a table of offsets, streams message
 * bodies, and commits deletions with a crash-atomic in-place rewrite
 * behind a redo journal.  Runs as the mail user, never as root; the
 * caller supplies the hooks that raise the mail group around dotlock work.
 */
#ifndef POP3D_MBOX_H
#define POP3D_MBOX_H

#include <sys/types.h>

#include <stddef.h>
#include <stdint.h>

struct io;

enum mbox_status {
	MBOX_OK,
	MBOX_INUSE,	/* another POP3 session holds the maildrop */
	MBOX_LOCKED,	/* the mailbox locks could not be had in time */
	MBOX_NOTMBOX,	/* the file is not in mbox format */
	MBOX_BADFILE,	/* a symlink, not a regular file, or not the user's */
	MBOX_NOACCESS,	/* the user may not read it */
	MBOX_CHANGED,	/* rewritten by someone else since it was parsed */
	MBOX_READONLY,	/* deletions cannot be written back */
	MBOX_IOERR,	/* a read, write or sync failed; errno was logged */
	MBOX_NOMEM,
	MBOX_STATUS_MAX
};

/* A sentence for the client and the log; every status has one. */
extern const char *const mbox_status_text[MBOX_STATUS_MAX];

struct mbox_hooks {
	/* Raise and lower the mail group around dotlock work; may be NULL. */
	int	(*priv_raise)(void *);
	void	(*priv_lower)(void *);
	void	 *arg;
	/* Seconds to keep trying for the mailbox locks. */
	int	  lock_timeout;
};

struct mbox;

/*
 * Opens the maildrop at path: lock, finish an interrupted commit, parse,
 * unlock.  A missing file is an empty maildrop.  On success *mb_r is the
 * maildrop; the mailbox stays unlocked until mbox_commit().
 */
enum mbox_status mbox_open(const char *path, const struct mbox_hooks *,
		    struct mbox **mb_r);
void		 mbox_close(struct mbox *);

/* Messages the client sees (a folder-data pseudo-message is hidden). */
size_t		 mbox_count(const struct mbox *);
/* idx is 0-based, < mbox_count(). */
uint64_t	 mbox_size(const struct mbox *, size_t idx);
/* Writes the UIDL (1-70 chars of 0x21-0x7e) into buf (>= MBOX_UIDL_MAX). */
#define MBOX_UIDL_MAX	48
void		 mbox_uidl(const struct mbox *, size_t idx, char *buf);
int		 mbox_deleted(const struct mbox *, size_t idx);
void		 mbox_set_deleted(struct mbox *, size_t idx, int);
/* The total size of the messages not marked deleted, and their number. */
void		 mbox_stat(const struct mbox *, size_t *count_r,
		    uint64_t *octets_r);

/*
 * Sends message idx through the body writer: all of it when
 * max_body_lines < 0, else the header and that many body lines.  Ends
 * with the final ".".  MBOX_CHANGED: the file no longer holds the message
 * (the reply is then incomplete and the connection must be dropped);
 * MBOX_IOERR: reading the mailbox or writing to the client failed.
 */
enum mbox_status mbox_send(struct mbox *, size_t idx, struct io *,
		    int64_t max_body_lines);

/*
 * Removes the messages marked deleted, keeping everything else and any
 * mail delivered since mbox_open().  Writes nothing when nothing is
 * marked.  On failure nothing is deleted.
 */
enum mbox_status mbox_commit(struct mbox *);

/* Finishes an interrupted commit of the mailbox at path, if any. */
enum mbox_status mbox_recover(const char *path, const struct mbox_hooks *);

/*
 * Takes the per-maildrop session lock in rundir (an open-file-description
 * lock that dies with the process).  *fd_r keeps it; MBOX_INUSE when
 * another session holds it.
 */
enum mbox_status mbox_session_lock(const char *rundir, const char *path,
		    int *fd_r);

/*
 * The parser alone, for tests and fuzzing: parses the open file fd, which
 * stays the caller's (mbox_send reads it; mbox_close leaves it open).
 */
enum mbox_status mbox_parse_fd(int fd, struct mbox **mb_r);

/*
 * How mbox_open() got the table, for tests and the log: 0 parsed, 1 from
 * the index, 2 from the index plus the mail added since.
 */
int		 mbox_indexed(const struct mbox *);

/* File offsets of message idx, for tests: message bytes are [*start_r, *end_r). */
void		 mbox_extent(const struct mbox *, size_t idx, off_t *start_r,
		    off_t *end_r);

#endif
