/*
 * prelogin.h: the pre-login process.  Forked by the monitor, it chroots
 * to an empty directory, drops to an unprivileged account and runs the
 * AUTHORIZATION dialogue: the only code that reads the network before a
 * login.  It can only talk: to the client on fds 0 and 1, and to the
 * monitor on one socket.
 */
#ifndef POP3D_PRELOGIN_H
#define POP3D_PRELOGIN_H

#include <sys/types.h>

struct pop3d_config;
struct peer;

/* What the monitor gives the pre-login process. */
struct prelogin_args {
	int		 monitor_fd;	/* SOCK_SEQPACKET to the monitor */
	uid_t		 uid;		/* the unprivileged account */
	gid_t		 gid;
	int		 cleartext_ok;	/* USER/PASS and PLAIN allowed */
	const char	*apop_stamp;	/* NULL: no APOP */
};

/*
 * Runs as root until the drop, then as the account.  Exits 0 after
 * handing a login's unread input to the monitor, or after QUIT; else 1.
 */
void	 prelogin_run(const struct pop3d_config *, const struct peer *,
	    const struct prelogin_args *) __attribute__((noreturn));

#endif
