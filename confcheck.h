/*
 * confcheck.h: the configuration check of pop3d -n.  Runs as root (or as
 * the user a non-root pop3d would serve, with only the checks that apply
 * to one process); reads only: it creates, changes and removes nothing,
 * and never touches the connection.
 */
#ifndef POP3D_CONFCHECK_H
#define POP3D_CONFCHECK_H

struct pop3d_config;

/*
 * Prints the effective settings of cf (defaults applied: run directory
 * and chroot set) on standard output, one "name = value" a line, then
 * checks what a session will need: the PAM service file or the password
 * file, the APOP secrets, the pre-login account and chroot, the run,
 * spool and state directories, and liblockfile's helper.  Each thing
 * that would stop a session, or expose a secret, is one line
 * "pop3d: problem: ..." on standard error; each thing that works but
 * differs from what Debian ships is one line "pop3d: warning: ...".
 * Returns pop3d's exit status: 0 when there is no problem, else 1.
 */
int	 confcheck_run(const struct pop3d_config *cf);

#endif
