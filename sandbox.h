/*
 * sandbox.h: the last walls around the pre-login process, in the manner
 * of OpenSSH's seccomp sandbox.  sandbox_prepare() runs as root in the
 * freshly forked pre-login process, before its chroot; sandbox_enter()
 * runs in the same process after the drop to the unprivileged account,
 * once everything the AUTHORIZATION dialogue needs is open and allocated.
 * From then on the process can read, write and poll the descriptors it
 * holds, manage its own memory and exit; any other system call kills it.
 */
#ifndef POP3D_SANDBOX_H
#define POP3D_SANDBOX_H

/*
 * As root, before the chroot: reads what libc would load lazily later
 * (the time zone syslog(3) stamps lines with) and moves the process into
 * an empty network namespace where the kernel allows one.  A kernel or
 * container that refuses the namespace (EPERM, EINVAL, ENOSPC, EUSERS) is
 * logged at debug level and is not an error.  Returns 0, or -1 (errno).
 */
int	sandbox_prepare(void);

/*
 * After the drop: no core, no new processes, no file growth (except a
 * log file given as stderr, and under valgrind: see sandbox.c), no new
 * descriptor numbered above maxfd, the highest one the process holds;
 * then no_new_privs and the seccomp filter.  Returns 0, or -1 (errno)
 * with the process perhaps partly confined: the caller must then exit.
 */
int	sandbox_enter(int maxfd);

/*
 * For tests and diagnostics: 1 when the filter lets the system call of
 * that name through (perhaps only with some arguments: mmap and mprotect
 * without PROT_EXEC), 0 when it kills or refuses it.
 */
int	sandbox_allows(const char *name);

#endif
