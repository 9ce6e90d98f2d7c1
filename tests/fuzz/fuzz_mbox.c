/*
 * fuzz_mbox.c: libFuzzer harness for the mbox parser and the body
 * writer.  Each input is a mailbox; every message it yields is streamed
 * through maildrop_send() and must come out as the wire form the size promised:
 * only CRLF line ends, dot-stuffed, ".\r\n" last, and exactly maildrop_size()
 * octets once un-stuffed.  UIDLs must be 1-70 printable characters and
 * unique.
 */
#include <sys/mman.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io.h"
#include "log.h"
#include "mbox.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);
int	LLVMFuzzerInitialize(int *, char ***);

static int	 in_fd = -1, out_fd = -1;
static char	*wire;
static size_t	 wire_cap;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_init("fuzz", 1, 0);
	in_fd = memfd_create("mbox", 0);
	out_fd = memfd_create("wire", 0);
	if (in_fd == -1 || out_fd == -1)
		abort();
	return 0;
}

/* Checks one message's wire form; returns its un-stuffed length. */
static uint64_t
check_wire(const char *w, size_t n)
{
	uint64_t	 octets = 0;
	size_t		 i = 0, eol;

	if (n < 3 || memcmp(w + n - 3, ".\r\n", 3) != 0)
		abort();
	n -= 3;
	while (i < n) {
		const char *lf = memchr(w + i, '\n', n - i);

		if (lf == NULL || lf == w + i || lf[-1] != '\r')
			abort();	/* every line ends in CRLF */
		eol = (size_t)(lf - w);
		if (w[i] == '.') {
			if (eol - i < 2 || w[i + 1] != '.')
				abort();	/* a '.' line was not stuffed */
			i++;
		}
		octets += eol + 1 - i;
		i = eol + 1;
	}
	return octets;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct maildrop	*mb;
	struct io	*io;
	char		 uid[MAILDROP_UIDL_MAX], (*uids)[MAILDROP_UIDL_MAX];
	size_t		 i, j, k, n, len;
	ssize_t		 r;

	if (ftruncate(in_fd, 0) == -1 ||
	    pwrite(in_fd, data, size, 0) != (ssize_t)size)
		abort();
	if (mbox_parse_fd(in_fd, &mb) != MAILDROP_OK)
		return 0;
	n = maildrop_count(mb);
	if ((uids = calloc(n + 1, sizeof(*uids))) == NULL ||
	    (io = io_new(-1, out_fd, 5)) == NULL)
		abort();
	for (i = 0; i < n; i++) {
		if (ftruncate(out_fd, 0) == -1 || lseek(out_fd, 0, SEEK_SET) != 0)
			abort();
		if (maildrop_send(mb, i, io, -1) != MAILDROP_OK ||
		    io_flush(io) != IO_OK)
			abort();
		len = (size_t)lseek(out_fd, 0, SEEK_CUR);
		if (len > wire_cap) {
			free(wire);
			wire_cap = len * 2;
			if ((wire = malloc(wire_cap)) == NULL)
				abort();
		}
		if ((r = pread(out_fd, wire, len, 0)) != (ssize_t)len)
			abort();
		if (check_wire(wire, len) != maildrop_size(mb, i))
			abort();	/* the size lied */
		/* TOP n 0 is a prefix of the same wire form. */
		if (ftruncate(out_fd, 0) == -1 || lseek(out_fd, 0, SEEK_SET) != 0 ||
		    maildrop_send(mb, i, io, 0) != MAILDROP_OK ||
		    io_flush(io) != IO_OK)
			abort();
		k = (size_t)lseek(out_fd, 0, SEEK_CUR);
		if (k < 3 || k > len)
			abort();
		{
			char	*top = malloc(k);

			if (top == NULL || pread(out_fd, top, k, 0) != (ssize_t)k)
				abort();
			if (memcmp(top + k - 3, ".\r\n", 3) != 0 ||
			    memcmp(top, wire, k - 3) != 0)
				abort();
			free(top);
		}
		maildrop_uidl(mb, i, uid);
		len = strlen(uid);
		if (len < 1 || len > 70)
			abort();
		for (j = 0; j < len; j++)
			if (uid[j] < 0x21 || uid[j] > 0x7e)
				abort();
		for (j = 0; j < i; j++)
			if (strcmp(uids[j], uid) == 0)
				abort();	/* not unique */
		memcpy(uids[i], uid, sizeof(uid));
	}
	io_free(io);
	free(uids);
	maildrop_close(mb);
	return 0;
}
