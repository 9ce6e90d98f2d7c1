/*
 * maildrop.h: one user's maildrop, as the POP3 layer sees it: a list of
 * messages with sizes and UIDLs, deletion marks, a way to send one, and a
 * commit.  Nothing here names the mailbox format; mbox.c implements it
 * for the Unix mbox.  Runs as the mail user, never as root, with no
 * group but the user's own: dotlocks in a spool the user cannot write go
 * through liblockfile's setgid helper.  Everything pop3d keeps about a
 * maildrop (session lock, commit journal, index) lives in the user's
 * state directory (statedir.h), never in the spool.
 */
#ifndef POP3D_MAILDROP_H
#define POP3D_MAILDROP_H

#include <sys/types.h>

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct io;

enum maildrop_status {
	MAILDROP_OK,
	MAILDROP_INUSE,		/* another POP3 session holds the maildrop */
	MAILDROP_LOCKED,	/* the mailbox locks could not be had in time */
	MAILDROP_BADFORMAT,	/* the file is not in the maildrop's format */
	MAILDROP_BADFILE,	/* a symlink, not a regular file, or another's */
	MAILDROP_NOACCESS,	/* the user may not read it */
	MAILDROP_CHANGED,	/* rewritten by another program since read */
	MAILDROP_READONLY,	/* deletions cannot be written back */
	MAILDROP_IOERR,		/* a read, write or sync failed; errno logged */
	MAILDROP_NOMEM,
	MAILDROP_STATUS_MAX
};

/*
 * A sentence for the client and the log, with its RFC 2449 / RFC 3206
 * response code; every status has one.
 */
extern const char *const maildrop_status_text[MAILDROP_STATUS_MAX];

/*
 * How a message's UIDL is made (pop3d -U).  Each keeps to RFC 1939: 1 to
 * 70 characters of 0x21-0x7e, unique in the maildrop, never written into
 * the mailbox.  The last two read headers a sender can forge: they are
 * for migrating a spool whose deliveries strip them.
 */
enum maildrop_uidl_scheme {
	MAILDROP_UIDL_MD5,	/* pop3d's: 32 hex digits (the default) */
	MAILDROP_UIDL_POPA3D,	/* popa3d 1.0.3's: 16 hex digits */
	MAILDROP_UIDL_XUIDL,	/* the X-UIDL: header (Qpopper), else MD5 */
	MAILDROP_UIDL_DOVECOT,	/* Dovecot's %08Xu%08Xv, else MD5 */
	MAILDROP_UIDL_SCHEME_MAX
};

/* How the caller wants the maildrop handled; NULL means the defaults. */
struct maildrop_hooks {
	/* Seconds to keep trying for the mailbox locks. */
	int	  lock_timeout;
	/*
	 * On a shared file system, where a dotlock's PID may be another
	 * host's: seconds another's dotlock must stay untouched before it is
	 * broken (0: MAILDROP_DOTLOCK_STALE).  Held dotlocks are touched a
	 * third as often.
	 */
	int	  dotlock_stale;
	/* The UIDL scheme; 0 is pop3d's own. */
	enum maildrop_uidl_scheme uidl_scheme;
};

#define MAILDROP_DOTLOCK_STALE	120	/* Dovecot's mbox_dotlock_change_timeout */

struct maildrop;

/*
 * Opens the maildrop at path with its state in statedir (the user's own
 * directory, as statedir_prepare() made it: owned by the caller, closed
 * to others): lock, finish an interrupted commit, read the message list,
 * unlock.  A missing file is an empty maildrop (nothing to lock, nothing
 * to recover).  A journal or index that fails its checks is logged and
 * not used.  On success *md_r is the maildrop; it stays unlocked until
 * maildrop_commit().
 */
enum maildrop_status maildrop_open(const char *path, const char *statedir,
		    const struct maildrop_hooks *, struct maildrop **md_r);
/* Frees md and whatever it holds; NULL is allowed. */
void		 maildrop_close(struct maildrop *md);

/* Messages the client sees (a folder-data pseudo-message is hidden). */
size_t		 maildrop_count(const struct maildrop *);
/* idx is 0-based, < maildrop_count(): octets as sent on the wire. */
uint64_t	 maildrop_size(const struct maildrop *, size_t idx);
/* Writes the UIDL (1-70 chars of 0x21-0x7e) into buf (>= MAILDROP_UIDL_MAX). */
#define MAILDROP_UIDL_MAX	72
void		 maildrop_uidl(const struct maildrop *, size_t idx, char *buf);
int		 maildrop_deleted(const struct maildrop *, size_t idx);
void		 maildrop_set_deleted(struct maildrop *, size_t idx, int);
/* The total size of the messages not marked deleted, and their number. */
void		 maildrop_stat(const struct maildrop *, size_t *count_r,
		    uint64_t *octets_r);

/*
 * Sends message idx through the body writer: all of it when
 * max_body_lines < 0, else the header and that many body lines.  Ends
 * with the final ".".  MAILDROP_CHANGED: the file no longer holds the
 * message (the reply is then incomplete and the connection must be
 * dropped); MAILDROP_IOERR: reading the maildrop or writing to the
 * client failed.
 */
enum maildrop_status maildrop_send(struct maildrop *, size_t idx, struct io *,
		    int64_t max_body_lines);

/*
 * Removes the messages marked deleted, keeping everything else and any
 * mail delivered since maildrop_open().  Writes nothing when nothing is
 * marked.
 *
 * MAILDROP_OK: the deletions are done.  Any other status means they are
 * not done yet, which is not the same as "nothing is deleted": when the
 * failure came before the commit was decided, the maildrop is as it was;
 * when it came after (the journal of the commit was already durable),
 * the commit is decided and the next maildrop_open() or
 * maildrop_recover() of this maildrop completes it.  Either way no kept
 * message and no newer mail is ever lost.
 */
enum maildrop_status maildrop_commit(struct maildrop *);

/*
 * pop3d -l: writes the UIDL listing of the maildrop at path to out, one
 * "N UIDL" line per message, as the UIDL command lists it.  Read-only: it
 * takes the locks to read and writes nothing, so it refuses
 * (MAILDROP_CHANGED) a maildrop whose last commit is unfinished.
 */
enum maildrop_status maildrop_list(const char *path, const char *statedir,
		    const struct maildrop_hooks *, FILE *out);

/*
 * Finishes an interrupted commit of the maildrop at path, if any, with
 * its state in statedir.
 */
enum maildrop_status maildrop_recover(const char *path, const char *statedir,
		    const struct maildrop_hooks *);

/*
 * Takes the session lock of the maildrop at path in statedir: an
 * open-file-description lock on "INO.lock", INO being the mailbox's
 * inode number, so that every path to one mailbox (/var/mail/u and
 * /var/spool/mail/u) names one lock; it dies with the process.  *fd_r
 * keeps it; MAILDROP_INUSE when another session holds it.
 */
enum maildrop_status maildrop_session_lock(const char *statedir,
		    const char *path, int *fd_r);

#endif
