/*
 * fuzz_session.c: libFuzzer harness for the command parser and
 * dispatcher.  Each input is everything a client sends: it runs through
 * AUTHORIZATION (USER/PASS, APOP, AUTH PLAIN with continuations) and, once
 * logged in ("alice"/"secret"), TRANSACTION against a small mailbox, QUIT
 * included (the mailbox is opened read-only, so a commit writes nothing).
 */
#include <sys/mman.h>

#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "io.h"
#include "log.h"
#include "mbox.h"
#include "session.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);
int	LLVMFuzzerInitialize(int *, char ***);

#define STAMP	"<1896.697170952@dbc.mtview.ca.us>"

static const char mailbox[] =
	"From a@example.org Mon Jan  1 10:00:00 2024\n"
	"Subject: one\n\n.dotted\nbody\n\n"
	"From b@example.org Mon Jan  1 11:00:00 2024\n"
	"Subject: two\r\n\r\nCRLF body\r\n\r\n"
	"From c@example.org Mon Jan  1 12:00:00 2024\n"
	"Subject: three\n\nno final newline";

static int	 in_fd = -1, out_fd = -1, mb_fd = -1;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_init("fuzz", 0, 0);
	in_fd = memfd_create("client", 0);
	mb_fd = memfd_create("mbox", 0);
	out_fd = open("/dev/null", O_WRONLY);
	if (in_fd == -1 || mb_fd == -1 || out_fd == -1 ||
	    write(mb_fd, mailbox, sizeof(mailbox) - 1) !=
	    (ssize_t)sizeof(mailbox) - 1)
		abort();
	return 0;
}

static enum auth_status
check(void *arg, struct auth_request *req)
{
	char	 d[AUTH_APOP_DIGEST + 1];

	(void)arg;
	if (memchr(req->user, '\0', sizeof(req->user)) == NULL ||
	    memchr(req->pass, '\0', sizeof(req->pass)) == NULL)
		abort();	/* requests are always terminated */
	if (strcmp(req->user, "alice") != 0)
		return AUTH_FAIL;
	if (req->kind == AUTH_KIND_APOP) {
		auth_apop_digest(STAMP, "tanstaaf", d);
		return strcmp(d, req->pass) == 0 ? AUTH_OK : AUTH_FAIL;
	}
	if (strcmp(req->pass, "temp") == 0)
		return AUTH_TEMPFAIL;
	return strcmp(req->pass, "secret") == 0 ? AUTH_OK : AUTH_FAIL;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct session	 s;
	struct io	*io;
	struct maildrop	*mb;
	enum session_end end;

	if (ftruncate(in_fd, 0) == -1 || pwrite(in_fd, data, size, 0) !=
	    (ssize_t)size || lseek(in_fd, 0, SEEK_SET) != 0)
		abort();
	if ((io = io_new(in_fd, out_fd, 5)) == NULL)
		abort();
	session_init(&s, io, check, NULL);
	s.apop_stamp = STAMP;
	s.cleartext_ok = size > 0 && (data[0] & 1);
	(void)session_greet(&s, "pop3d ready " STAMP);
	end = session_authorization(&s);
	if (end == END_LOGIN) {
		if (mbox_parse_fd(mb_fd, &mb) != MAILDROP_OK)
			abort();
		end = session_transaction(&s, "alice", mb, MAILDROP_OK);
		maildrop_close(mb);
	}
	if (end == END_NONE || end == END_LOGIN)
		abort();	/* a session always ends for a reason */
	io_free(io);
	return 0;
}
