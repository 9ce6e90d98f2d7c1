/*
 * prelogin.c: the pre-login process (see prelogin.h).  Starts as root in
 * a child of the monitor, and within a few lines is chrooted to an empty
 * directory and holds nothing but an unprivileged account's ids; all the
 * parsing of the client's commands before a login happens after that,
 * inside the seccomp sandbox of sandbox.c.
 */
#include <sys/types.h>

#include <stdlib.h>
#include <unistd.h>

#include "io.h"
#include "log.h"
#include "peer.h"
#include "pop3d.h"
#include "prelogin.h"
#include "privdrop.h"
#include "privsep.h"
#include "sandbox.h"
#include "session.h"

void
prelogin_run(const struct pop3d_config *cf, const struct peer *peer,
    const struct prelogin_args *pa)
{
	struct session	 s;
	struct io	*io;
	enum session_end end;
	int		 fd = pa->monitor_fd;

	/* As root: an empty network namespace, where the kernel allows one. */
	if (sandbox_prepare() == -1)
		fatal("sandbox_prepare");
	if (chroot(cf->chroot_dir) == -1 || chdir("/") == -1)
		fatal("chroot %s", cf->chroot_dir);
	privdrop_permanently(pa->uid, pa->gid);
	log_debug("pre-login process %ld: uid %lu, gid %lu, chroot %s",
	    (long)getpid(), (unsigned long)getuid(), (unsigned long)getgid(),
	    cf->chroot_dir);
	if ((io = io_new(STDIN_FILENO, STDOUT_FILENO, cf->timeout)) == NULL)
		fatal("io_new");
	/* From here on it can only talk: seccomp, no new privileges, rlimits. */
	if (sandbox_enter(fd > STDERR_FILENO ? fd : STDERR_FILENO) == -1)
		fatal("sandbox_enter");
	session_init(&s, io, ps_child_authenticate, &fd);
	s.cleartext_ok = pa->cleartext_ok;
	s.apop_stamp = pa->apop_stamp;
	end = session_authorization(&s);
	if (end == END_LOGIN) {
		/* Replies to earlier pipelined commands leave first. */
		if (io_flush(io) != IO_OK || ps_child_handover(fd, io) == -1)
			_exit(1);
		_exit(0);
	}
	session_log_end(end, NULL, peer->name);
	session_log_summary(&s, end, peer->name);
	_exit(end == END_QUIT ? 0 : 1);
}
