/*
 * log.h: one line per event, to syslog (LOG_MAIL) or to stderr when a
 * person runs pop3d by hand.  Every function preserves errno.
 */
#ifndef POP3D_LOG_H
#define POP3D_LOG_H

#include <stdarg.h>
#include <stddef.h>

/* Opens the log.  to_stderr != 0 sends lines to stderr instead of syslog. */
void	log_init(const char *ident, int to_stderr, int verbose);

void	log_info(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_notice(const char *, ...) __attribute__((format(printf, 1, 2)));
/* log_warn appends ": strerror(errno)"; log_warnx does not. */
void	log_warn(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_warnx(const char *, ...) __attribute__((format(printf, 1, 2)));
void	log_debug(const char *, ...) __attribute__((format(printf, 1, 2)));
/* Log and exit(EXIT_FAILURE). */
void	fatal(const char *, ...)
	    __attribute__((format(printf, 1, 2), noreturn));
void	fatalx(const char *, ...)
	    __attribute__((format(printf, 1, 2), noreturn));

/*
 * Copies at most dstsize - 1 bytes of client-supplied text into dst for
 * logging, replacing control and 8-bit bytes with '?'.  Returns dst.
 */
char	*log_sanitize(char *dst, size_t dstsize, const char *src, size_t len);

#endif
