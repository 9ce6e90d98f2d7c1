/*
 * io.h: the connection's bytes.  A bounded line reader with a poll()
 * deadline, a buffered writer that sends what it holds before it waits
 * for input, and a body writer for multi-line replies (LF to CRLF,
 * dot-stuffing, a body line limit).  It knows nothing of POP3 commands.
 */
#ifndef POP3D_IO_H
#define POP3D_IO_H

#include <stddef.h>
#include <stdint.h>

/* Input buffered ahead of the parser; pipelined commands wait here. */
#define IO_INBUF_SIZE	16384
/* Replies are gathered here and leave in as few writes as possible. */
#define IO_OUTBUF_SIZE	65536

enum io_status {
	IO_OK,
	IO_EOF,		/* the peer closed its side */
	IO_TIMEOUT,	/* no progress before the deadline */
	IO_ERROR,	/* read or write failed; errno is set */
	IO_TOOLONG	/* the line was longer than allowed; it was drained */
};

struct io;

/*
 * Returns a new connection over in_fd and out_fd whose reads and writes
 * give up after timeout_sec seconds without progress, or NULL (errno).
 */
struct io	*io_new(int in_fd, int out_fd, int timeout_sec);
void		 io_free(struct io *);

/* Queues bytes as if they had been read (input handed over by a child). */
int		 io_preload(struct io *, const void *, size_t);

/* Returns the number of buffered, unread input bytes; *buf_r points to them. */
size_t		 io_pending(const struct io *, const void **buf_r);

/*
 * Zeroes every byte of the input buffer but the pending ones: the lines
 * already read (which may have held a password) and any stale copy of
 * input left behind when the buffer was compacted.
 */
void		 io_wipe_consumed(struct io *);

/* For the unit tests: the whole input buffer, and its size. */
const void	*io_inbuf(const struct io *, size_t *size_r);

/* Octets queued for the client so far, sent or still buffered. */
uint64_t	 io_output_octets(const struct io *);

/*
 * Reads one line of at most maxlen octets including its terminator (LF or
 * CRLF) into buf (bufsize > maxlen), strips the terminator and
 * NUL-terminates it; *len_r is its length (the line may hold NUL bytes).
 * Output is flushed before it blocks.  A longer line is read to its end,
 * discarded, and IO_TOOLONG is returned.
 */
enum io_status	 io_getline(struct io *, char *buf, size_t bufsize,
		    size_t maxlen, size_t *len_r);

/* Did a read or write give up at the deadline (the autologout)? */
int		 io_timed_out(const struct io *);

enum io_status	 io_write(struct io *, const void *, size_t);
enum io_status	 io_printf(struct io *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));
enum io_status	 io_flush(struct io *);

/*
 * The body writer.  Lines end in LF or CRLF in the source and always in
 * CRLF on the wire; a line that starts with '.' gets one more.  With
 * max_body_lines >= 0 only the header, the empty line after it and that
 * many body lines are sent.  io_body_write returns IO_OK and sets
 * b->done once nothing more is wanted.  io_body_end ends an unterminated
 * last line; b->octets then counts what was sent, stuffing excluded, so
 * that the caller can check it before io_body_dot sends the final ".".
 */
struct io_body {
	int		 at_bol;	/* next byte starts a line */
	int		 cr_held;	/* a CR not yet known to end a line */
	int		 in_header;
	int64_t		 lines_left;	/* -1: no limit */
	int		 done;
	uint64_t	 octets;	/* sent so far, stuffing excluded */
};

void		 io_body_begin(struct io_body *, int64_t max_body_lines);
enum io_status	 io_body_write(struct io *, struct io_body *, const char *,
		    size_t);
enum io_status	 io_body_end(struct io *, struct io_body *);
enum io_status	 io_body_dot(struct io *);

#endif
