/*
 * fuzz_sasl.c: libFuzzer harness for the SASL path of the dialogue: AUTH
 * (RFC 5034) with PLAIN (RFC 4616), as initial response and as
 * continuation line, and session_base64_decode under it.  It runs as
 * whoever runs the fuzzer and needs no privilege: the client's bytes come
 * from a memfd, the replies go to /dev/null.  Each input is used twice:
 *
 * 1. Directly against session_base64_decode, raw and mapped onto the
 *    base64 alphabet, compared with a decoder written here (strict RFC
 *    4648: length a multiple of four, "=" only as the last one or two
 *    characters of the input): the same verdict, the same bytes, and the
 *    output bound honoured to the byte (the buffer is exactly that big).
 * 2. As a script for a client (first byte: bit 0 chooses "free", bit 1
 *    turns cleartext logins off).  In script mode every record (a
 *    form byte, a length byte, a payload) becomes one AUTH exchange, and
 *    a model of the rules (session.c's AUTH, RFC 4616's message, the
 *    tally of auth.h, POP3_MAX_BAD) predicts every request that reaches
 *    the checker and how the session ends.  In free mode the lines of the
 *    input become AUTH lines and continuation lines as they are, and
 *    only the invariants are checked: requests are terminated and carry
 *    a valid name, and no more checks than the tally allows.
 */
#include <sys/mman.h>

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "auth.h"
#include "io.h"
#include "log.h"
#include "session.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);
int	LLVMFuzzerInitialize(int *, char ***);

/* A script's client stream at most; records past it are not sent. */
#define STREAM_MAX	(256 * 1024)
/* Requests one session can make at most, with room to spare. */
#define CALLS_MAX	(AUTH_MAX_FAILS + AUTH_MAX_TEMPFAILS)
/* The longest initial response that keeps "AUTH PLAIN x" in a line. */
#define IR_MAX		(POP3_LINE_MAX - 2 - 11)
/* The longest continuation line (CRLF excluded). */
#define CONT_MAX	(POP3_SASL_MAX - 2)

static const char b64chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int		 in_fd = -1, out_fd = -1;
static char		 stream[STREAM_MAX];
static size_t		 slen;
static unsigned char	 dec[CONT_MAX], dec2[CONT_MAX], mapped[STREAM_MAX];
/* Does this session.c offer LOGIN (asked once, as a client would)? */
static int		 have_login;

/* What the checker is expected to see, and what it saw. */
static struct auth_request want_req[CALLS_MAX];
static int		 want_calls, calls, free_mode;

/* Keeps the fuzzer's many warnings out of the mail log (see fuzz_privsep.c). */
void
syslog(int pri, const char *fmt, ...)
{
	(void)pri;
	(void)fmt;
}

/* ---- the reference decoder ----------------------------------------- */

static int
sextet(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/*
 * Decodes n characters quad by quad into out (room for n / 4 * 3): the
 * length, or -1.  A final quad "xx==" or "xxx=" gives one or two bytes;
 * padding anywhere else, or a character outside the alphabet, is wrong.
 * Pad bits that are not zero are accepted (RFC 4648 3.5 lets a decoder
 * choose; session.c accepts them too).
 */
static long
ref_decode(const unsigned char *in, size_t n, unsigned char *out)
{
	size_t	 q, j, o = 0;
	int	 v[4], pads;

	if (n % 4 != 0)
		return -1;
	for (q = 0; q < n; q += 4) {
		pads = 0;
		if (in[q + 3] == '=')
			pads = in[q + 2] == '=' ? 2 : 1;
		if (pads > 0 && q + 4 != n)
			return -1;
		for (j = 0; j < 4; j++) {
			v[j] = j < 4 - (size_t)pads ? sextet(in[q + j]) : 0;
			if (v[j] < 0)
				return -1;
		}
		out[o++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
		if (pads < 2)
			out[o++] = (unsigned char)((v[1] & 0xf) << 4 |
			    v[2] >> 2);
		if (pads < 1)
			out[o++] = (unsigned char)((v[2] & 0x3) << 6 | v[3]);
	}
	return (long)o;
}

/* session_base64_decode into a buffer of exactly outsize bytes. */
static int
real_decode(const unsigned char *in, size_t n, size_t outsize,
    unsigned char *copy)
{
	unsigned char	*out;
	int		 r;

	if ((out = malloc(outsize > 0 ? outsize : 1)) == NULL)
		abort();
	r = session_base64_decode((const char *)in, n, out, outsize);
	if (r > 0)
		memcpy(copy, out, (size_t)r);
	free(out);
	return r;
}

static void
decode_compare(const unsigned char *in, size_t n)
{
	unsigned char	*want, *got;
	long		 w;
	int		 r;

	if ((want = malloc(n / 4 * 3 + 1)) == NULL ||
	    (got = malloc(n / 4 * 3 + 1)) == NULL)
		abort();
	w = ref_decode(in, n, want);
	/* Room to spare, then exactly enough, then one byte short. */
	r = real_decode(in, n, n, got);
	if (r != w || (w > 0 && memcmp(got, want, (size_t)w) != 0))
		abort();
	if (w > 0) {
		r = real_decode(in, n, (size_t)w, got);
		if (r != w || memcmp(got, want, (size_t)w) != 0)
			abort();
		if (real_decode(in, n, (size_t)w - 1, got) != -1)
			abort();
	}
	free(want);
	free(got);
}

/* Any bytes onto base64 characters and "=", so that many inputs decode. */
static void
map_b64(const uint8_t *in, size_t n, unsigned char *out)
{
	size_t	 i;

	for (i = 0; i < n; i++)
		out[i] = in[i] % 65 == 64 ? '=' :
		    (unsigned char)b64chars[in[i] % 65];
}

/* ---- the script and its model -------------------------------------- */

struct model {
	int		 cleartext;
	struct auth_tally tally;
	int		 bad;
	enum session_end end;
};

static void
put(const void *p, size_t n)
{
	if (n > sizeof(stream) - slen)
		abort();	/* the caller checked the room */
	memcpy(stream + slen, p, n);
	slen += n;
}

static void
put_line(const void *p, size_t n)
{
	put(p, n);
	put("\r\n", 2);
}

/* Encodes n bytes into out (room for 4 per 3, rounded up); the length. */
static size_t
b64_encode(const uint8_t *p, size_t n, unsigned char *out)
{
	size_t	 i, o = 0;
	uint32_t v;

	for (i = 0; i < n; i += 3) {
		v = (uint32_t)p[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < n)
			v |= p[i + 2];
		out[o++] = (unsigned char)b64chars[v >> 18 & 63];
		out[o++] = (unsigned char)b64chars[v >> 12 & 63];
		out[o++] = i + 1 < n ?
		    (unsigned char)b64chars[v >> 6 & 63] : '=';
		out[o++] = i + 2 < n ? (unsigned char)b64chars[v & 63] : '=';
	}
	return o;
}

/* The checker's verdict, from the password's first byte. */
static enum auth_status
verdict(const char *pass)
{
	static const enum auth_status v[3] = {
		AUTH_OK, AUTH_FAIL, AUTH_TEMPFAIL
	};

	if (pass[0] == '\0')
		return AUTH_FAIL;
	return v[(unsigned char)pass[0] % 3];
}

/* A user name: 1 to 255 bytes, none below 0x20 nor DEL. */
static int
name_ok(const unsigned char *p, size_t n)
{
	size_t	 i;

	if (n == 0 || n > 255)
		return 0;
	for (i = 0; i < n; i++)
		if (p[i] < 0x20 || p[i] == 0x7f)
			return 0;
	return 1;
}

/* An invalid command: counted, and the twentieth ends the session. */
static void
model_bad(struct model *m)
{
	if (++m->bad >= POP3_MAX_BAD)
		m->end = END_ABUSE;
}

/* A request that reaches the checker, and what the tally makes of it. */
static void
model_check(struct model *m, const unsigned char *user, size_t ul,
    const unsigned char *pass, size_t pl)
{
	struct auth_request *rq;
	enum auth_status st;

	if (want_calls >= CALLS_MAX)
		abort();	/* the model's own tally failed */
	rq = &want_req[want_calls++];
	memset(rq, 0, sizeof(*rq));
	rq->kind = AUTH_KIND_PASS;
	memcpy(rq->user, user, ul);
	memcpy(rq->pass, pass, pl);
	st = verdict(rq->pass);
	if (st == AUTH_OK) {
		m->end = END_LOGIN;
		return;
	}
	if (st == AUTH_FAIL)
		m->tally.fails++;
	else
		m->tally.tempfails++;
	if (m->tally.fails >= AUTH_MAX_FAILS)
		m->end = END_AUTHFAIL;
	else if (m->tally.tempfails >= AUTH_MAX_TEMPFAILS)
		m->end = END_TEMPFAIL;
}

/*
 * A PLAIN response as text: RFC 4616's message is authzid NUL authcid
 * NUL passwd, two NULs exactly; the authzid empty or the authcid itself.
 */
static void
model_plain(struct model *m, const unsigned char *t, size_t n)
{
	const unsigned char *nul1, *nul2;
	size_t		 zl, cl, pl, i, nuls = 0;
	long		 k;

	if ((n == 1 && t[0] == '=') || (k = ref_decode(t, n, dec)) < 0) {
		model_bad(m);
		return;
	}
	for (i = 0; i < (size_t)k; i++)
		nuls += dec[i] == '\0';
	if (nuls != 2) {
		model_bad(m);
		return;
	}
	nul1 = memchr(dec, '\0', (size_t)k);
	nul2 = memchr(nul1 + 1, '\0', (size_t)k - (size_t)(nul1 + 1 - dec));
	zl = (size_t)(nul1 - dec);
	cl = (size_t)(nul2 - nul1 - 1);
	pl = (size_t)k - zl - cl - 2;
	if (!name_ok(nul1 + 1, cl) || pl >= AUTH_PASS_MAX ||
	    (zl != 0 && (zl != cl || memcmp(dec, nul1 + 1, cl) != 0))) {
		model_bad(m);
		return;
	}
	model_check(m, nul1 + 1, cl, nul2 + 1, pl);
}

/*
 * One step of LOGIN: 1 and the decoded response in out (*k bytes), or 0
 * when the step fails (cancelled, too long, bad base64).  "=" is the
 * empty response.
 */
static int
login_step(int ir, const unsigned char *t, size_t n, unsigned char *out,
    long *k)
{
	if (!ir && ((n == 1 && t[0] == '*') || n > CONT_MAX))
		return 0;
	if (n == 1 && t[0] == '=') {
		*k = 0;
		return 1;
	}
	return (*k = ref_decode(t, n, out)) >= 0;
}

/*
 * "AUTH LOGIN", the user name u as initial response (ir) or on its
 * line, then the password p on its line: the password is asked for only
 * after a good name, so only then is it sent.
 */
static void
sasl_login_model(struct model *m, int ir, const unsigned char *u, size_t un,
    const unsigned char *p, size_t pn)
{
	long	 uk, pk;

	if (ir) {
		put("AUTH LOGIN ", 11);
		put_line(u, un);
	} else {
		put_line("AUTH LOGIN", 10);
		if (m->cleartext)
			put_line(u, un);
	}
	if (!m->cleartext || !login_step(ir, u, un, dec, &uk) ||
	    !name_ok(dec, (size_t)uk)) {
		model_bad(m);
		return;
	}
	put_line(p, pn);
	if (!login_step(0, p, pn, dec2, &pk) || pk >= AUTH_PASS_MAX ||
	    memchr(dec2, '\0', (size_t)pk) != NULL) {
		model_bad(m);
		return;
	}
	model_check(m, dec, (size_t)uk, dec2, (size_t)pk);
}

/*
 * "AUTH PLAIN" with response text t as an initial response (ir) or on a
 * continuation line; with cleartext logins off the continuation is not
 * asked for, so it is not sent.
 */
static void
sasl_plain_model(struct model *m, int ir, const unsigned char *t, size_t n)
{
	if (ir) {
		put("AUTH PLAIN ", 11);
		put_line(t, n);
	} else {
		put_line("AUTH PLAIN", 10);
		if (m->cleartext)
			put_line(t, n);
	}
	if (!m->cleartext)
		model_bad(m);
	else if (!ir && n == 1 && t[0] == '*')
		model_bad(m);		/* cancelled */
	else if (!ir && n > CONT_MAX)
		model_bad(m);		/* too long */
	else
		model_plain(m, t, n);
}

/*
 * A LOGIN record: the payload's first byte says where the name ends and
 * the password begins; the forms are PLAIN's.
 */
static void
login_record(struct model *m, uint8_t f, const uint8_t *p, size_t len)
{
	static const unsigned char alice[] = "YWxpY2U=", star[] = "*",
	    empty[] = "=";
	unsigned char	*u = mapped, *pw = mapped + 2 * POP3_SASL_MAX;
	size_t		 k = 0, un, pn, umax;
	int		 ir = f % 2 == 0, second = (f & 0x20) != 0;

	switch (f % 8) {
	case 0:
	case 1:
	case 2:
	case 3:
		if (len > 0) {
			k = p[0];
			p++;
			len--;
		}
		k = k < len ? k : len;
		umax = ir ? IR_MAX : CONT_MAX;
		if (f % 8 < 2) {
			un = b64_encode(p, k < umax / 4 * 3 ? k : umax / 4 * 3,
			    u);
			pn = len - k < CONT_MAX / 4 * 3 ? len - k :
			    CONT_MAX / 4 * 3;
			pn = b64_encode(p + k, pn, pw);
		} else {
			un = k < umax ? k : umax;
			map_b64(p, un, u);
			pn = len - k < CONT_MAX ? len - k : CONT_MAX;
			map_b64(p + k, pn, pw);
		}
		sasl_login_model(m, ir, u, un, pw, pn);
		break;
	case 4:		/* cancelled at the name, or at the password */
		if (second)
			sasl_login_model(m, 0, alice, 8, star, 1);
		else
			sasl_login_model(m, 0, star, 1, NULL, 0);
		break;
	case 5:		/* a name or a password too long */
		memset(pw, 'A', CONT_MAX + 1);
		if (second)
			sasl_login_model(m, 0, alice, 8, pw, CONT_MAX + 1);
		else
			sasl_login_model(m, 0, pw, CONT_MAX + 1, NULL, 0);
		break;
	case 6:		/* an empty name, or an empty password */
		if (second)
			sasl_login_model(m, 0, alice, 8, empty, 1);
		else
			sasl_login_model(m, 0, empty, 1, NULL, 0);
		break;
	}
}

/*
 * Turns the records of the input into a client stream and predicts the
 * session.  A record: form byte f, length byte (times 8 when f & 0x10),
 * payload; f & 0x40 makes it LOGIN where this session.c has LOGIN.
 */
static enum session_end
script(const uint8_t *data, size_t size, int cleartext)
{
	struct model	 m = { cleartext, { 0, 0 }, 0, END_NONE };
	unsigned char	*t = mapped;
	size_t		 off = 0, len, n;
	uint8_t		 f;

	slen = 0;
	while (m.end == END_NONE && off < size &&
	    sizeof(stream) - slen > 3 * CONT_MAX) {
		f = data[off++];
		len = off < size ? data[off++] : 0;
		if (f & 0x10)
			len *= 8;
		if (len > size - off)
			len = size - off;
		if ((f & 0x40) && have_login && f % 8 != 7) {
			login_record(&m, f, data + off, len);
			off += len;
			continue;
		}
		switch (f % 8) {
		case 0:		/* initial response, well encoded */
		case 1:		/* continuation, well encoded */
			n = (f % 8 == 0 ? IR_MAX : CONT_MAX) / 4 * 3;
			n = b64_encode(data + off, len < n ? len : n, t);
			sasl_plain_model(&m, f % 8 == 0, t, n);
			break;
		case 2:		/* initial response, any base64 text */
		case 3:		/* continuation, any base64 text */
			n = f % 8 == 2 ? IR_MAX : CONT_MAX;
			n = len < n ? len : n;
			map_b64(data + off, n, t);
			sasl_plain_model(&m, f % 8 == 2, t, n);
			break;
		case 4:		/* cancelled */
			sasl_plain_model(&m, 0, (const unsigned char *)"*", 1);
			break;
		case 5:		/* one too long */
			memset(t, 'A', CONT_MAX + 1);
			sasl_plain_model(&m, 0, t, CONT_MAX + 1);
			break;
		case 6:		/* the empty response, "=" */
			sasl_plain_model(&m, (f & 0x20) != 0,
			    (const unsigned char *)"=", 1);
			break;
		case 7:
			switch (len % 4) {
			case 0:		/* the mechanisms */
				put_line("AUTH", 4);
				break;
			case 1:		/* a mechanism we lack */
				put_line("AUTH X-UNKNOWN", 14);
				model_bad(&m);
				break;
			case 2:		/* one argument too many */
				put_line("AUTH PLAIN AGFAAHM= x", 21);
				model_bad(&m);
				break;
			case 3:		/* any case */
				put_line("auth Plain AGFsaWNlADA=", 23);
				if (!m.cleartext)
					model_bad(&m);
				else
					model_plain(&m, (const unsigned char *)
					    "AGFsaWNlADA=", 12);
				break;
			}
			break;
		}
		off += len;
	}
	return m.end == END_NONE ? END_EOF : m.end;
}

/* Free mode: each input line is an AUTH line or a continuation. */
static void
free_stream(const uint8_t *data, size_t size)
{
	const uint8_t	*p = data, *end = data + size, *nl;
	size_t		 n;

	slen = 0;
	while (p < end && sizeof(stream) - slen > 16) {
		nl = memchr(p, '\n', (size_t)(end - p));
		n = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
		if (n + 16 > sizeof(stream) - slen)
			break;
		switch (n > 0 ? p[0] % 4 : 2) {
		case 0:
			put("AUTH PLAIN ", 11);
			put_line(p + 1, n - 1);
			break;
		case 1:		/* alone: the next line answers, or EOF */
			put_line("AUTH PLAIN", 10);
			if (n > 1)
				put_line(p + 1, n - 1);
			break;
		case 3:
			put_line("AUTH LOGIN", 10);
			if (n > 1)
				put_line(p + 1, n - 1);
			break;
		default:
			put(p, n);
			put("\n", 1);
			break;
		}
		p += n + 1;
	}
}

static enum auth_status
check(void *arg, struct auth_request *req)
{
	(void)arg;
	if (calls >= CALLS_MAX ||
	    memchr(req->user, '\0', sizeof(req->user)) == NULL ||
	    memchr(req->pass, '\0', sizeof(req->pass)) == NULL ||
	    !name_ok((const unsigned char *)req->user, strlen(req->user)) ||
	    req->kind != AUTH_KIND_PASS)
		abort();
	if (!free_mode && (calls >= want_calls ||
	    memcmp(req, &want_req[calls], sizeof(*req)) != 0))
		abort();
	calls++;
	return verdict(req->pass);
}

/* Asks for the mechanisms, as a client would: is LOGIN among them? */
static int
offers_login(void)
{
	struct session	 s;
	struct io	*io;
	char		 out[1024];
	ssize_t		 n;
	int		 fd;

	if ((fd = memfd_create("probe", 0)) == -1 ||
	    pwrite(in_fd, "AUTH\r\n", 6, 0) != 6 ||
	    (io = io_new(in_fd, fd, 5)) == NULL)
		abort();
	session_init(&s, io, check, NULL);
	if (session_authorization(&s) != END_EOF)
		abort();
	(void)io_flush(io);
	io_free(io);
	if ((n = pread(fd, out, sizeof(out) - 1, 0)) <= 0)
		abort();
	out[n] = '\0';
	close(fd);
	return strstr(out, "\r\nLOGIN\r\n") != NULL;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_init("fuzz", 0, 0);
	in_fd = memfd_create("client", 0);
	out_fd = open("/dev/null", O_WRONLY);
	if (in_fd == -1 || out_fd == -1)
		abort();
	have_login = offers_login();
	fprintf(stderr, "fuzz_sasl: mechanisms PLAIN%s\n",
	    have_login ? " LOGIN" : "");
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct session	 s;
	struct io	*io;
	enum session_end end, want = END_EOF;
	size_t		 n;

	decode_compare(data, size);
	n = size < sizeof(mapped) ? size : sizeof(mapped);
	map_b64(data, n, mapped);
	decode_compare(mapped, n);

	if (size == 0)
		return 0;
	free_mode = data[0] & 1;
	calls = want_calls = 0;
	if (free_mode)
		free_stream(data + 1, size - 1);
	else
		want = script(data + 1, size - 1, !(data[0] & 2));
	if (ftruncate(in_fd, 0) == -1 || pwrite(in_fd, stream, slen, 0) !=
	    (ssize_t)slen || lseek(in_fd, 0, SEEK_SET) != 0)
		abort();
	if ((io = io_new(in_fd, out_fd, 5)) == NULL)
		abort();
	session_init(&s, io, check, NULL);
	s.cleartext_ok = !(data[0] & 2);
	(void)session_greet(&s, "pop3d ready");
	end = session_authorization(&s);
	if (end == END_NONE)
		abort();
	if (!free_mode && (end != want || calls != want_calls))
		abort();
	io_free(io);
	return 0;
}
