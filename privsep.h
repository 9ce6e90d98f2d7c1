/*
 * privsep.h: the records that cross between pop3d's processes.  The
 * pre-login process (unprivileged, chrooted, talking to the network)
 * sends credentials and the unread input to the root monitor, and gets
 * a verdict back; the checker process (root, no client) sends the
 * monitor its result.  Each record is one SOCK_SEQPACKET packet: a type
 * and a payload of exactly the length that type defines.  A receiver
 * trusts nothing it has not checked (type, direction, exact length,
 * field bounds, no NUL inside a string).
 */
#ifndef POP3D_PRIVSEP_H
#define POP3D_PRIVSEP_H

#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "io.h"

/*
 * On the wire, in host byte order (both ends are one binary on one host):
 *
 *	PS_AUTH      u32 type, u32 kind, u32 ulen, u32 plen, user[ulen], pass[plen]
 *	PS_RESULT    u32 type, u32 status
 *	PS_HANDOVER  u32 type, data[0 .. IO_INBUF_SIZE]
 *	PS_CHECKED   u32 type, u32 status, u32 uid, u32 gid, u32 known,
 *		     u32 nlen, u32 alen, u32 mlen, name[nlen], account[alen],
 *		     mailbox[mlen]
 *
 * Strings carry no NUL and are NUL-terminated only once decoded.
 */
enum ps_type {
	PS_AUTH = 1,		/* pre-login -> monitor: check these credentials */
	PS_RESULT,		/* monitor -> pre-login: enum auth_status */
	PS_HANDOVER,		/* pre-login -> monitor: unread input; then exit */
	PS_CHECKED		/* checker -> monitor: the verdict and the user */
};

/* The largest record any type allows: a full handover. */
#define PS_RECORD_MAX	(4 + IO_INBUF_SIZE)
_Static_assert(8 * 4 + AUTH_NAME_MAX * 2 + PATH_MAX <= PS_RECORD_MAX,
    "a PS_CHECKED record fits");

/* A record once received and checked; only the type's fields are set. */
struct ps_msg {
	enum ps_type		 type;
	enum auth_status	 status;	/* PS_RESULT, PS_CHECKED */
	struct auth_request	 req;		/* PS_AUTH */
	struct auth_user	 user;		/* PS_CHECKED */
	size_t			 len;		/* PS_HANDOVER: bytes of data */
	char			 data[IO_INBUF_SIZE];	/* PS_HANDOVER */
};

/* Each sends one record: 0, or -1 (errno).  Sent credentials are wiped. */
int	ps_send_auth(int fd, const struct auth_request *);
int	ps_send_result(int fd, enum auth_status);
int	ps_send_handover(int fd, const void *, size_t);
int	ps_send_checked(int fd, enum auth_status, const struct auth_user *);

/*
 * Receives one record and checks it: 1, 0 at EOF, -1 on error or on a
 * malformed record (errno EBADMSG; EMSGSIZE when it was too long).  The
 * record is wiped before it is filled and after a failed check.
 */
int	ps_recv(int fd, struct ps_msg *);

/* The pre-login side: the session's authenticate callback (arg: int *fd). */
enum auth_status ps_child_authenticate(void *arg, struct auth_request *);
/* The pre-login side after a login: hands over the unread input. */
int	ps_child_handover(int fd, struct io *);

/* The monitor: checks one request as root; fills *user_r on AUTH_OK. */
typedef enum auth_status (*ps_check_fn)(void *, struct auth_request *,
	    struct auth_user *);

/*
 * Serves the pre-login process until it logs in (1: *user_r and the
 * handed-over input in *handover_r) or goes away (0).  It answers only
 * as many requests as auth_tally() allows the session (the same rule on
 * both sides), and one login ends the dialogue.
 */
int	ps_monitor(int fd, ps_check_fn, void *arg, struct auth_user *user_r,
	    struct ps_msg *handover_r);

#endif
