/*
 * scan.h: the byte loops under the two hot paths, the mbox parser's walk
 * over message bodies and the body writer's LF to CRLF copy.  They look
 * at every byte of a mailbox, so they work a vector of bytes at a time;
 * they know lines and "From " and nothing else of mail.
 */
#ifndef POP3D_SCAN_H
#define POP3D_SCAN_H

#include <stddef.h>
#include <stdint.h>

struct scan_count {
	uint64_t	 lines;		/* LFs */
	uint64_t	 crlf;		/* of them, LFs right after a CR */
};

/*
 * buf starts a line.  Returns the length of the longest prefix of
 * buf[0..len) made of whole lines (each ending in LF) none of which
 * begins with "From ", and counts its lines into *c (which it sets).
 * *more_r is 0 when the scan stopped at a line that begins with "From ",
 * 1 when it ran out of bytes (an unfinished line, or a line starting
 * with 'F' too short to tell).
 */
size_t	scan_lines(const char *buf, size_t len, struct scan_count *c,
	    int *more_r);
/* The same without AVX2, as on CPUs that lack it (for the tests). */
size_t	scan_lines_portable(const char *buf, size_t len,
	    struct scan_count *c, int *more_r);

/*
 * Copies whole lines of src[0..len) to dst in POP3 form: each LF or
 * CRLF becomes CRLF, and a line that begins with '.' gets another '.'.
 * src starts a line; copying stops at the first line that does not fit
 * in dstsize bytes or is unfinished.  Returns the bytes of src consumed
 * (whole lines only); *out_r is the bytes written to dst, *lines_r the
 * lines copied and *stuffed_r the dots added.
 */
size_t	scan_crlf(char *dst, size_t dstsize, const char *src, size_t len,
	    size_t *out_r, uint64_t *lines_r, uint64_t *stuffed_r);
/* The same without AVX2 (for the tests). */
size_t	scan_crlf_portable(char *dst, size_t dstsize, const char *src,
	    size_t len, size_t *out_r, uint64_t *lines_r, uint64_t *stuffed_r);

#endif
