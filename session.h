/*
 * session.h: the POP3 dialogue (RFC 1939, RFC 2449).  A command table,
 * strict argument parsing, and one dispatcher that writes every +OK and
 * -ERR.  No fork, no PAM, no file paths: the AUTHORIZATION state reaches
 * the checker only through the authenticate callback, so that it can run
 * in an unprivileged process that forwards a fixed-size request.
 */
#ifndef POP3D_SESSION_H
#define POP3D_SESSION_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "auth.h"
#include "maildrop.h"

#define POP3_LINE_MAX	255	/* octets, CRLF included (RFC 2449) */
#define POP3_ARGS_MAX	2
#define POP3_REPLY_MAX	512
#define POP3_MAX_BAD	20	/* invalid commands before it ends (Dovecot's) */
#define POP3_SASL_MAX	2048	/* a SASL continuation line (RFC 5034) */

enum pop3_state {
	STATE_AUTHORIZATION = 0x1,
	STATE_TRANSACTION = 0x2
};

enum cmd_result {
	CMD_OK,			/* "+OK " and s->reply */
	CMD_ERR_UNKNOWN,
	CMD_ERR_STATE,
	CMD_ERR_SYNTAX,
	CMD_ERR_LINE,
	CMD_ERR_BADBYTE,
	CMD_ERR_NUMBER,
	CMD_ERR_NOMSG,
	CMD_ERR_DELETED,
	CMD_ERR_NOUSER,
	CMD_ERR_BADNAME,
	CMD_ERR_AUTH,
	CMD_ERR_AUTH_LAST,
	CMD_ERR_AUTH_TEMP,
	CMD_ERR_AUTH_TEMP_LAST,
	CMD_ERR_CLEARTEXT,
	CMD_ERR_NOAPOP,
	CMD_ERR_MECH,
	CMD_ERR_SASL_CANCEL,
	CMD_ERR_SASL_BAD,
	CMD_ERR_ABUSE,
	CMD_ERR_MAILDROP,	/* maildrop_status_text[s->maildrop_error] */
	CMD_RESULT_MAX
};

/* The text after "-ERR " for each error; every entry is set. */
extern const char *const cmd_result_text[CMD_RESULT_MAX];

enum session_end {
	END_NONE,
	END_LOGIN,	/* credentials accepted: open the maildrop */
	END_QUIT,
	END_EOF,	/* the client went away without QUIT */
	END_TIMEOUT,
	END_IOERR,
	END_AUTHFAIL,	/* too many failed logins */
	END_TEMPFAIL,	/* authentication unavailable, too often */
	END_ABUSE,	/* too many invalid commands */
	END_MAX
};

/* The word for each end in the summary line ("quit", "timeout"...). */
extern const char *const session_end_name[END_MAX];

/* A command line split in place: keyword and up to POP3_ARGS_MAX args. */
struct pop3_cmdline {
	char	*keyword;
	int	 argc;
	char	*argv[POP3_ARGS_MAX];
	char	*rest;		/* everything after "KEYWORD " (for PASS) */
};

/* What a session did, for the summary line at its end. */
struct session_stats {
	uint64_t	 retr;		/* RETR replies sent */
	uint64_t	 retr_octets;	/* their message octets, as sent */
	uint64_t	 top;
	uint64_t	 top_octets;
	uint64_t	 dele;		/* messages removed by a commit */
	uint64_t	 dele_octets;
	int		 committed;	/* QUIT's commit succeeded */
	size_t		 left;		/* messages kept by that commit */
	uint64_t	 left_octets;
};

struct session;
typedef enum auth_status (*session_auth_fn)(void *, struct auth_request *);
typedef void (*session_body_fn)(struct session *);

struct session {
	struct io		*io;
	enum pop3_state		 state;
	enum session_end	 end;
	session_auth_fn		 authenticate;
	void			*auth_arg;
	char			 user[AUTH_NAME_MAX];	/* from USER */
	int			 have_user;
	struct auth_tally	 tally;		/* checks so far */
	int			 bad;		/* invalid commands so far */
	int			 cleartext_ok;	/* USER/PASS and PLAIN allowed */
	const char		*apop_stamp;	/* NULL: APOP not offered */
	const char		*login;		/* after login, for logs */
	struct maildrop		*maildrop;
	enum maildrop_status	 maildrop_error;
	char			 reply[POP3_REPLY_MAX];
	session_body_fn		 body;		/* multi-line part, if any */
	size_t			 body_idx;
	int64_t			 body_lines;
	struct timespec		 start;		/* CLOCK_MONOTONIC, session_init */
	struct session_stats	 stats;
};

/*
 * Sets up s in AUTHORIZATION.  Cleartext logins are allowed and APOP is
 * off until the caller says otherwise (s->cleartext_ok, s->apop_stamp).
 */
void		 session_init(struct session *, struct io *, session_auth_fn,
		    void *);
/* Sends the greeting. */
int		 session_greet(struct session *, const char *banner);

/*
 * Runs AUTHORIZATION until the credentials are accepted (END_LOGIN; the
 * reply to PASS is not sent yet) or the session ends.
 */
enum session_end session_authorization(struct session *);

/*
 * Answers the accepted PASS with the outcome of opening the maildrop
 * (st, and md when MAILDROP_OK) and runs TRANSACTION; QUIT commits.
 */
enum session_end session_transaction(struct session *, const char *login,
		    struct maildrop *md, enum maildrop_status st);

/*
 * Logs how a session ended (nothing for QUIT or a login): login is the
 * user, or NULL before a login; peer names the client.
 */
void		 session_log_end(enum session_end, const char *login,
		    const char *peer);

/*
 * Logs the one summary line of a session that ended with end:
 *
 *   session end: user=NAME peer=ADDR end=WORD retr=N/OCTETS
 *       top=N/OCTETS dele=N/OCTETS left=N/OCTETS time=SECONDS.MSs
 *
 * NAME is s->login ("-" before a login); NAME and ADDR have every byte
 * outside 0x21-0x7e, and '%', written as %XX, so no value holds a space.
 */
void		 session_log_summary(const struct session *, enum session_end,
		    const char *peer);

/*
 * Writes src into dst (dstsize > 0, truncated to fit) with every byte
 * outside 0x21-0x7e, and '%', as %XX; returns dst.
 */
char		*session_escape(char *dst, size_t dstsize, const char *src);

/* Runs one command line (terminator stripped) and writes its reply. */
void		 session_command(struct session *, char *line, size_t len);

/* Splits line in place; -1 on NUL/CR bytes (CMD_ERR_BADBYTE). */
int		 session_parse(char *line, size_t len, struct pop3_cmdline *);

/*
 * Decodes strict base64 (RFC 4648, padding required) into out; returns
 * the length, or -1 on bad input or when it does not fit.
 */
int		 session_base64_decode(const char *in, size_t inlen,
		    unsigned char *out, size_t outsize);

/*
 * Parses a decimal number: digits only, no sign or space, at most max.
 * Returns 0 and *n_r, or -1.
 */
int		 session_parse_number(const char *, uint64_t max,
		    uint64_t *n_r);

#endif
