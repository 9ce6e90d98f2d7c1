/*
 * peer.h: who is on the other end of the connection, for the logs,
 * PAM_RHOST, the cleartext policy (-c) and the failure limits.  Read
 * before the greeting, in the process that pop3d starts as (root under
 * xinetd or systemd).  Nothing here proves anything: it is what the
 * socket or the launcher says.
 */
#ifndef POP3D_PEER_H
#define POP3D_PEER_H

#include <netinet/in.h>

#include <stddef.h>

#define PEER_NAME_MAX	(INET6_ADDRSTRLEN + 64)

struct peer {
	char	 name[PEER_NAME_MAX];	/* an address, or "local" */
	int	 local;		/* loopback, a Unix socket, or no socket */
};

/*
 * Names the peer of the connection on fd: the socket's address, else
 * what the launcher put in REMOTE_ADDR or REMOTE_HOST (systemd, stunnel,
 * xinetd), else "local".
 */
void	 peer_identify(int fd, struct peer *);

#endif
