/*
 * auth.h: who may log in, and as whom the session then runs.  auth_check()
 * runs as root (PAM can check other users' passwords only as root) and
 * holds the password only as long as the check takes.  The request is a
 * fixed-size record so that it can cross from an unprivileged process.
 */
#ifndef POP3D_AUTH_H
#define POP3D_AUTH_H

#include <sys/types.h>

#include <limits.h>
#include <stdint.h>

#define AUTH_NAME_MAX	256	/* a user name, NUL included */
#define AUTH_PASS_MAX	512	/* a password, NUL included */

enum auth_kind {
	AUTH_KIND_PASS = 1,	/* USER + PASS, or SASL PLAIN */
	AUTH_KIND_APOP = 2	/* APOP: pass holds the 32 hex digits */
};

/* What the AUTHORIZATION dialogue hands to the checker. */
struct auth_request {
	uint32_t	 kind;
	char		 user[AUTH_NAME_MAX];
	char		 pass[AUTH_PASS_MAX];
};

#define AUTH_APOP_DIGEST	32	/* hex digits of an APOP digest */

/* Who logged in, and what the session runs as. */
struct auth_user {
	char		 name[AUTH_NAME_MAX];	/* login name (after PAM) */
	uid_t		 uid;
	gid_t		 gid;
	char		 account[AUTH_NAME_MAX];	/* the system account */
	char		 mailbox[PATH_MAX];
	int		 known;		/* on failure: the name exists */
};

enum auth_status {
	AUTH_OK,
	AUTH_FAIL,	/* wrong name or password: "-ERR [AUTH]" */
	AUTH_TEMPFAIL	/* the check itself failed: "-ERR [SYS/TEMP]" */
};

/*
 * How many checks one connection gets, counted the same way by the
 * session and by the monitor: AUTH_MAX_FAILS wrong credentials, or
 * AUTH_MAX_TEMPFAILS checks that could not be made (a PAM outage), and
 * the connection ends.
 */
#define AUTH_MAX_FAILS		3
#define AUTH_MAX_TEMPFAILS	3

struct auth_tally {
	int	 fails;
	int	 tempfails;
};

/* Counts one outcome; returns 1 when no further check is allowed. */
int		 auth_tally_add(struct auth_tally *, enum auth_status);
/* Returns 1 when another check is allowed. */
int		 auth_tally_open(const struct auth_tally *);

struct auth_config {
	const char	*pam_service;	/* used when passwd_file is NULL */
	const char	*passwd_file;	/* name:crypt-hash:account:mailbox */
	const char	*mailbox_template;	/* %u, %h, %% */
	const char	*rhost;		/* the peer, for PAM_RHOST */
	const char	*apop_file;	/* name:secret; NULL: no APOP */
	const char	*apop_stamp;	/* this greeting's <timestamp> */
};

/*
 * Checks req and fills *user_r.  Wipes req->pass whatever the outcome.
 * An unknown user costs the same work as a wrong password and gets the
 * same answer.
 */
enum auth_status auth_check(const struct auth_config *, struct auth_request *,
		    struct auth_user *user_r);

/*
 * auth_check() under pop3d's login policy: uid 0 is never served, and a
 * pop3d that is not root serves only its own uid.  Sets user_r->known
 * when the name exists.  Logs nothing: see auth_log_result().
 */
enum auth_status auth_login(const struct auth_config *, int as_root,
		    struct auth_request *, struct auth_user *user_r);

/*
 * Logs the outcome of a login by name (the name the client sent; it is
 * logged only when it exists) from peer: one line, and never a secret.
 */
void		 auth_log_result(enum auth_status, const struct auth_user *,
		    const char *name, const char *peer);

/* Makes a failed login cost at least ms milliseconds since *start. */
struct timespec;
void		 auth_fail_delay(const struct timespec *start, int ms);

/*
 * Expands a mailbox template: %u the login name, %h the account's home,
 * %% a percent sign.  Returns 0, or -1 when the result does not fit or
 * the name could escape the directory ("/", "..", control bytes).
 */
int		 auth_expand(const char *tmpl, const char *name,
		    const char *home, char *buf, size_t bufsize);

/*
 * Is the APOP secrets file safe to use: a regular file owned by root that
 * nobody else may read or write?  Logs why not.  0 or -1.
 */
int		 auth_apop_usable(const char *path);
/*
 * auth_apop_usable()'s rule on the file's own status (lstat, or fstat of
 * a descriptor opened with O_NOFOLLOW): 1 safe, 0 not.
 */
struct stat;
int		 auth_apop_safe(const struct stat *);

/* Computes the APOP digest of stamp and secret as 32 lowercase hex digits. */
void		 auth_apop_digest(const char *stamp, const char *secret,
		    char out[AUTH_APOP_DIGEST + 1]);

/* A user name a client may send: 1-255 bytes, no control bytes. */
int		 auth_name_valid(const char *name, size_t len);

#endif
