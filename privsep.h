/*
 * privsep.h: what crosses between the pre-login process (unprivileged,
 * chrooted, talking to the network) and the root monitor.  One fixed-size
 * record type over a SOCK_SEQPACKET socketpair; the monitor trusts nothing
 * in it that it has not checked (type, order, lengths, NUL termination).
 */
#ifndef POP3D_PRIVSEP_H
#define POP3D_PRIVSEP_H

#include <stdint.h>

#include "auth.h"
#include "io.h"

enum ps_type {
	PS_AUTH = 1,		/* child -> monitor: check these credentials */
	PS_RESULT,		/* monitor -> child: enum auth_status */
	PS_HANDOVER		/* child -> monitor: unread input; then exit */
};

struct ps_msg {
	uint32_t		 type;
	uint32_t		 status;	/* PS_RESULT */
	uint32_t		 len;		/* PS_HANDOVER: bytes of data */
	struct auth_request	 req;		/* PS_AUTH */
	char			 data[IO_INBUF_SIZE];	/* PS_HANDOVER */
};

/* Sends one record; 0, or -1 (errno). */
int	ps_send(int fd, const struct ps_msg *);
/*
 * Receives one record and checks it: 1, 0 at EOF, -1 on error or a
 * malformed record.  The record is wiped before it is filled.
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
 * handed-over input in *handover_r) or goes away (0).  After max_tries
 * failures (3 * max_tries requests in all) it stops; one login ends the
 * dialogue.
 */
int	ps_monitor(int fd, ps_check_fn, void *arg, int max_tries,
	    struct auth_user *user_r, struct ps_msg *handover_r);

#endif
