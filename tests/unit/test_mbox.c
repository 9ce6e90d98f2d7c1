/*
 * test_mbox.c: the mbox parser, sender, UIDLs and commit, checked
 * against the hand-written fixture corpus in tests/fixtures and against
 * mailboxes built here.
 */
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cmocka.h>

#include "io.h"
#include "mbox.h"
#include "privdrop.h"
#include "statedir.h"
#include "mbox_impl.h"		/* hash64(), to plant journals */
#include "testutil.h"

static char	*scratch;	/* this run's temporary directory */
static char	*statedir;	/* scratch/state: the maildrops' state */

/* ---- fixtures ------------------------------------------------------ */

struct fixture {
	char	*name;
	char	*mbox_path;
	int	 notmbox;
	size_t	 n;
	char	**eml;
	size_t	*eml_len;
};

static struct fixture	*fixtures;
static size_t		 nfixtures;

static int
name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
fixture_load(struct fixture *f, const char *dir, const char *name)
{
	char		*exp, *path, *err;
	size_t		 len, i;
	DIR		*d;
	struct dirent	*de;

	f->name = strdup(name);
	if (asprintf(&f->mbox_path, "%s/%s.mbox", dir, name) == -1 ||
	    asprintf(&exp, "%s/%s.expect", dir, name) == -1)
		abort();
	if ((d = opendir(exp)) == NULL) {
		fprintf(stderr, "missing %s\n", exp);
		abort();
	}
	if (asprintf(&path, "%s/ERROR", exp) == -1)
		abort();
	if ((err = tu_read_file(path, &len)) != NULL) {
		if (strncmp(err, "notmbox", 7) != 0 ||
		    strspn(err + 7, " \t\r\n") != len - 7) {
			fprintf(stderr, "%s: unknown ERROR\n", path);
			abort();
		}
		f->notmbox = 1;
		free(err);
	}
	free(path);
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.' || strcmp(de->d_name, "ERROR") == 0)
			continue;
		f->n++;
	}
	closedir(d);
	if (f->notmbox && f->n != 0) {
		fprintf(stderr, "%s: ERROR and messages\n", exp);
		abort();
	}
	f->eml = calloc(f->n + 1, sizeof(*f->eml));
	f->eml_len = calloc(f->n + 1, sizeof(*f->eml_len));
	for (i = 0; i < f->n; i++) {
		if (asprintf(&path, "%s/%zu.eml", exp, i + 1) == -1)
			abort();
		if ((f->eml[i] = tu_read_file(path, &f->eml_len[i])) == NULL) {
			fprintf(stderr, "%s: expected files must be 1.eml.."
			    "%zu.eml\n", exp, f->n);
			abort();
		}
		free(path);
	}
	free(exp);
}

static void
fixtures_load(void)
{
	const char	*dir = tu_fixtures_dir();
	char		**names = NULL;
	size_t		 n = 0, i, len;
	DIR		*d;
	struct dirent	*de;

	if ((d = opendir(dir)) == NULL) {
		fprintf(stderr, "cannot open fixture directory %s (set "
		    "FIXTURES)\n", dir);
		exit(1);
	}
	while ((de = readdir(d)) != NULL) {
		len = strlen(de->d_name);
		if (de->d_name[0] == '.' || len <= 5 ||
		    strcmp(de->d_name + len - 5, ".mbox") != 0)
			continue;
		names = realloc(names, (n + 1) * sizeof(*names));
		names[n++] = strndup(de->d_name, len - 5);
	}
	closedir(d);
	if (n == 0) {
		fprintf(stderr, "no fixtures in %s\n", dir);
		exit(1);
	}
	qsort(names, n, sizeof(*names), name_cmp);
	fixtures = calloc(n, sizeof(*fixtures));
	for (i = 0; i < n; i++) {
		fixture_load(&fixtures[i], dir, names[i]);
		free(names[i]);
	}
	free(names);
	nfixtures = n;
}

static void
fixtures_free(void)
{
	size_t	 i, j;

	for (i = 0; i < nfixtures; i++) {
		for (j = 0; j < fixtures[i].n; j++)
			free(fixtures[i].eml[j]);
		free(fixtures[i].eml);
		free(fixtures[i].eml_len);
		free(fixtures[i].name);
		free(fixtures[i].mbox_path);
	}
	free(fixtures);
}

static const struct fixture *
fixture_get(const char *name)
{
	size_t	 i;

	for (i = 0; i < nfixtures; i++)
		if (strcmp(fixtures[i].name, name) == 0)
			return &fixtures[i];
	fail_msg("fixture %s is missing", name);
	return NULL;
}

/* ---- helpers -------------------------------------------------------- */

static int
open_ro(const char *path)
{
	int	 fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd == -1)
		fail_msg("open %s: %s", path, strerror(errno));
	return fd;
}

/* The bytes maildrop_send() puts on the wire, through an io over a file. */
static char *
send_capture(struct maildrop *mb, size_t idx, int64_t max_body_lines,
    size_t *len_r)
{
	char		*path, *out;
	struct io	*io;
	int		 in, fd;

	if (asprintf(&path, "%s/send-XXXXXX", scratch) == -1)
		abort();
	fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	free(path);
	in = open("/dev/null", O_RDONLY | O_CLOEXEC);
	assert_true(in >= 0);
	io = io_new(in, fd, 5);
	assert_non_null(io);
	assert_int_equal(maildrop_send(mb, idx, io, max_body_lines),
	    MAILDROP_OK);
	assert_int_equal(io_flush(io), IO_OK);
	io_free(io);
	close(in);
	out = tu_read_fd(fd, len_r);
	close(fd);
	return out;
}

static void
assert_bytes(const char *what, const char *got, size_t got_len,
    const char *want, size_t want_len)
{
	size_t	 i;

	if (got_len == want_len && memcmp(got, want, got_len) == 0)
		return;
	for (i = 0; i < got_len && i < want_len && got[i] == want[i]; i++)
		;
	fail_msg("%s: got %zu bytes, want %zu; first difference at offset "
	    "%zu (got 0x%02x, want 0x%02x)", what, got_len, want_len, i,
	    i < got_len ? (unsigned char)got[i] : 0,
	    i < want_len ? (unsigned char)want[i] : 0);
}

/* Checks that message idx is sent exactly as want (unstuffed CRLF lines). */
static void
check_send(struct maildrop *mb, size_t idx, int64_t max, const char *want,
    size_t want_len, const char *what)
{
	char	*got, *exp, label[256];
	size_t	 got_len, exp_len;

	got = send_capture(mb, idx, max, &got_len);
	exp = tu_stuff(want, tu_top_len(want, want_len, max), &exp_len);
	(void)snprintf(label, sizeof(label), "%s message %zu (max %lld)",
	    what, idx + 1, (long long)max);
	assert_bytes(label, got, got_len, exp, exp_len);
	free(got);
	free(exp);
}

static void
check_uidl_format(const char *uid)
{
	size_t	 i, n = strlen(uid);

	assert_true(n >= 1 && n <= 70);
	assert_true(n < MAILDROP_UIDL_MAX);
	for (i = 0; i < n; i++)
		assert_true((unsigned char)uid[i] >= 0x21 &&
		    (unsigned char)uid[i] <= 0x7e);
}

/* All UIDLs of mb into a new array of MAILDROP_UIDL_MAX strings. */
static char (*uidls(const struct maildrop *mb))[MAILDROP_UIDL_MAX]
{
	char	(*u)[MAILDROP_UIDL_MAX];
	size_t	 i, n = maildrop_count(mb);

	u = calloc(n + 1, sizeof(*u));
	for (i = 0; i < n; i++) {
		memset(u[i], 'Z', sizeof(u[i]));
		maildrop_uidl(mb, i, u[i]);
		check_uidl_format(u[i]);
	}
	return u;
}

/*
 * Whether a message (CRLF lines) is a folder-data pseudo-message: a
 * Subject: with FOLDER INTERNAL DATA, an X-IMAP: or X-IMAPbase: header,
 * and no Received: header (a delivered message is real mail).  Such a
 * message is hidden when it is first in the file.
 */
static int
eml_is_folder_data(const char *eml, size_t len)
{
	const char	*p = eml, *end = eml + len, *eol;
	int		 subject = 0, ximap = 0, received = 0;

	while (p < end) {
		eol = memchr(p, '\n', (size_t)(end - p));
		eol = eol == NULL ? end : eol + 1;
		if (eol - p == 2 && p[0] == '\r')
			break;		/* the end of the header */
		if (strncasecmp(p, "Subject:", 8) == 0 &&
		    memmem(p, (size_t)(eol - p), "FOLDER INTERNAL DATA", 20))
			subject = 1;
		if (strncasecmp(p, "X-IMAP:", 7) == 0 ||
		    strncasecmp(p, "X-IMAPbase:", 11) == 0)
			ximap = 1;
		if (strncasecmp(p, "Received:", 9) == 0)
			received = 1;
		p = eol;
	}
	return subject && ximap && !received;
}

/*
 * Checks the mailbox in the open file fd against the expected messages
 * eml[0..n), leaving out index skip (or none when skip >= n).  A
 * folder-data message that has become first is expected to be hidden.
 */
static void
check_fd_messages(int fd, const struct fixture *f, size_t skip,
    const char *what)
{
	struct maildrop	*mb;
	size_t		 i, j = 0, want = skip < f->n ? f->n - 1 : f->n;
	int		 first = 1;

	assert_int_equal(mbox_parse_fd(fd, &mb), MAILDROP_OK);
	for (i = 0; i < f->n; i++) {
		if (i == skip)
			continue;
		if (first && eml_is_folder_data(f->eml[i], f->eml_len[i])) {
			want--;
			first = 0;
			continue;
		}
		first = 0;
		assert_true(j < maildrop_count(mb));
		assert_int_equal(maildrop_size(mb, j), f->eml_len[i]);
		check_send(mb, j, -1, f->eml[i], f->eml_len[i], what);
		j++;
	}
	assert_int_equal(maildrop_count(mb), want);
	maildrop_close(mb);
}

static char *
path_in(const char *dir, const char *name)
{
	char	*p;

	if (asprintf(&p, "%s/%s", dir, name) == -1)
		abort();
	return p;
}

/* A copy of data at DIR/mbox for maildrop_open(); returns the path. */
static char *
make_mbox(const char *data, size_t len)
{
	char	*p = path_in(scratch, "mbox");

	(void)unlink(p);
	assert_int_equal(tu_write_file(p, data, len), 0);
	return p;
}

/* No dotlock or journal in the spool, no journal in the state dir. */
static void
assert_no_leftovers(const char *path)
{
	char		*j, *l, *n;
	struct stat	 sb;
	struct dirent	*de;
	DIR		*d;

	if (asprintf(&j, "%s.pop3d-journal", path) == -1 ||
	    asprintf(&n, "%s.pop3d-journal.new", path) == -1 ||
	    asprintf(&l, "%s.lock", path) == -1)
		abort();
	assert_int_equal(lstat(j, &sb), -1);
	assert_int_equal(lstat(n, &sb), -1);
	assert_int_equal(lstat(l, &sb), -1);
	free(j);
	free(n);
	free(l);
	assert_non_null(d = opendir(statedir));
	while ((de = readdir(d)) != NULL)
		if (strstr(de->d_name, ".journal") != NULL)
			fail_msg("%s/%s left behind", statedir, de->d_name);
	closedir(d);
}

static void
assert_file_is(const char *path, const char *want, size_t want_len,
    const char *what)
{
	char	*got;
	size_t	 got_len;

	got = tu_read_file(path, &got_len);
	assert_non_null(got);
	assert_bytes(what, got, got_len, want, want_len);
	free(got);
}

/* ---- per-fixture tests ---------------------------------------------- */

/*
 * The expected UIDLs, when the fixture has them: NAME.uidl, one a line,
 * made once with md5sum over the documented header lines (see
 * tests/fixtures/README.md), never with pop3d's own code.
 */
static void
check_uidl_file(const struct fixture *f, char (*u)[MAILDROP_UIDL_MAX])
{
	char	*path, *data, *line, *next;
	size_t	 len, i = 0;

	if (asprintf(&path, "%s/%s.uidl", tu_fixtures_dir(), f->name) == -1)
		abort();
	if ((data = tu_read_file(path, &len)) == NULL) {
		free(path);
		return;		/* not every fixture has one */
	}
	for (line = data; *line != '\0'; line = next) {
		if ((next = strchr(line, '\n')) == NULL)
			next = line + strlen(line);
		else
			*next++ = '\0';
		if (i >= f->n)
			fail_msg("%s: more UIDLs than messages", path);
		if (strcmp(line, u[i]) != 0)
			fail_msg("%s: message %zu has UIDL %s, %s expects %s",
			    f->name, i + 1, u[i], path, line);
		i++;
	}
	if (i != f->n)
		fail_msg("%s: %zu UIDLs for %zu messages", path, i, f->n);
	free(data);
	free(path);
}

static void
test_fixture_parse(void **state)
{
	const struct fixture *f = *state;
	static const int64_t tops[] = { 0, 1, 2, INT64_MAX };
	struct maildrop	*mb, *mb2;
	char		(*u)[MAILDROP_UIDL_MAX], (*u2)[MAILDROP_UIDL_MAX];
	size_t		 i, j, count;
	uint64_t	 octets, total = 0;
	int		 fd;

	fd = open_ro(f->mbox_path);
	if (f->notmbox) {
		mb = NULL;
		assert_int_equal(mbox_parse_fd(fd, &mb), MAILDROP_BADFORMAT);
		close(fd);
		return;
	}
	assert_int_equal(mbox_parse_fd(fd, &mb), MAILDROP_OK);
	assert_int_equal(maildrop_count(mb), f->n);
	for (i = 0; i < f->n; i++) {
		/* LIST size == the octets RETR sends. */
		assert_int_equal(maildrop_size(mb, i), f->eml_len[i]);
		total += f->eml_len[i];
		assert_false(maildrop_deleted(mb, i));
		check_send(mb, i, -1, f->eml[i], f->eml_len[i], f->name);
		for (j = 0; j < sizeof(tops) / sizeof(tops[0]); j++)
			check_send(mb, i, tops[j], f->eml[i], f->eml_len[i],
			    f->name);
	}
	maildrop_stat(mb, &count, &octets);
	assert_int_equal(count, f->n);
	assert_int_equal(octets, total);

	/* UIDLs: well-formed, unique, the same when parsed again. */
	u = uidls(mb);
	check_uidl_file(f, u);
	for (i = 0; i < f->n; i++)
		for (j = i + 1; j < f->n; j++)
			if (strcmp(u[i], u[j]) == 0)
				fail_msg("%s: messages %zu and %zu share UIDL "
				    "%s", f->name, i + 1, j + 1, u[i]);
	assert_int_equal(mbox_parse_fd(fd, &mb2), MAILDROP_OK);
	u2 = uidls(mb2);
	for (i = 0; i < f->n; i++)
		assert_string_equal(u[i], u2[i]);
	free(u);
	free(u2);
	maildrop_close(mb2);
	maildrop_close(mb);
	/* maildrop_close() leaves a borrowed fd open. */
	assert_true(fcntl(fd, F_GETFD) != -1);
	close(fd);
}

static void
test_fixture_commit(void **state)
{
	const struct fixture *f = *state;
	struct maildrop	*mb;
	struct stat	 sb0, sb1;
	char		*orig, *path, *line_end;
	size_t		 orig_len, i, count;
	uint64_t	 octets;
	off_t		 start, end;
	int		 fd;

	orig = tu_read_file(f->mbox_path, &orig_len);
	assert_non_null(orig);
	path = make_mbox(orig, orig_len);

	if (f->notmbox) {
		assert_int_equal(maildrop_open(path, statedir, NULL, &mb),
		    MAILDROP_BADFORMAT);
		assert_file_is(path, orig, orig_len, f->name);
		assert_no_leftovers(path);
		goto out;
	}

	/* Nothing deleted: not a byte written, mtime and inode kept. */
	assert_int_equal(stat(path, &sb0), 0);
	assert_int_equal(maildrop_open(path, statedir, NULL, &mb), MAILDROP_OK);
	assert_int_equal(maildrop_count(mb), f->n);
	assert_int_equal(maildrop_commit(mb), MAILDROP_OK);
	maildrop_close(mb);
	assert_int_equal(stat(path, &sb1), 0);
	assert_int_equal(sb0.st_ino, sb1.st_ino);
	assert_int_equal(sb0.st_mtim.tv_sec, sb1.st_mtim.tv_sec);
	assert_int_equal(sb0.st_mtim.tv_nsec, sb1.st_mtim.tv_nsec);
	assert_file_is(path, orig, orig_len, f->name);
	assert_no_leftovers(path);

	/*
	 * Each message deleted alone: the others are served exactly as
	 * before.
	 */
	for (i = 0; i < f->n; i++) {
		path = (free(path), make_mbox(orig, orig_len));
		assert_int_equal(stat(path, &sb0), 0);
		assert_int_equal(maildrop_open(path, statedir, NULL, &mb), MAILDROP_OK);
		maildrop_set_deleted(mb, i, 1);
		assert_int_equal(maildrop_commit(mb), MAILDROP_OK);
		maildrop_close(mb);
		assert_no_leftovers(path);
		assert_int_equal(stat(path, &sb1), 0);
		assert_int_equal(sb0.st_ino, sb1.st_ino);
		assert_true(sb1.st_size < sb0.st_size);
		fd = open_ro(path);
		check_fd_messages(fd, f, i, f->name);
		close(fd);
	}

	/* All deleted: the inode stays, empty (or the hidden message). */
	if (f->n > 0) {
		path = (free(path), make_mbox(orig, orig_len));
		assert_int_equal(stat(path, &sb0), 0);
		assert_int_equal(maildrop_open(path, statedir, NULL, &mb), MAILDROP_OK);
		for (i = 0; i < f->n; i++)
			maildrop_set_deleted(mb, i, 1);
		maildrop_stat(mb, &count, &octets);
		assert_int_equal(count, 0);
		assert_int_equal(octets, 0);
		assert_int_equal(maildrop_commit(mb), MAILDROP_OK);
		maildrop_close(mb);
		assert_no_leftovers(path);
		assert_int_equal(stat(path, &sb1), 0);
		assert_int_equal(sb0.st_ino, sb1.st_ino);
		/*
		 * Without a hidden first message, the first visible message
		 * starts right after the file's first line: then nothing is
		 * left at all.
		 */
		line_end = memchr(orig, '\n', orig_len);
		fd = open_ro(path);
		assert_int_equal(mbox_parse_fd(fd, &mb), MAILDROP_OK);
		assert_int_equal(maildrop_count(mb), 0);
		maildrop_close(mb);
		close(fd);
		fd = open_ro(f->mbox_path);
		assert_int_equal(mbox_parse_fd(fd, &mb), MAILDROP_OK);
		mbox_extent(mb, 0, &start, &end);
		if (line_end == NULL || start == (off_t)(line_end - orig) + 1)
			assert_int_equal(sb1.st_size, 0);
		else
			assert_true(sb1.st_size > 0 && sb1.st_size < start);
		maildrop_close(mb);
		close(fd);
	}
out:
	free(path);
	free(orig);
}

/* ---- built mailboxes ------------------------------------------------ */

#define FROM_A	"From alice@example.org Mon Jan  1 10:00:00 2024\n"
#define FROM_B	"From bob@example.org Tue Jan  2 10:00:00 2024\n"
#define FROM_C	"From carol@example.org Wed Jan  3 10:00:00 2024\n"
#define FROM_D	"From dave@example.org Thu Jan  4 10:00:00 2024\n"
#define MSG_A	FROM_A "Message-ID: <a@example.org>\nSubject: a\n\nA.\n"
#define MSG_B	FROM_B "Message-ID: <b@example.org>\nSubject: b\n\nB.\nB2.\n"
#define MSG_C	FROM_C "Message-ID: <c@example.org>\nSubject: c\n\nC.\n"
#define MSG_D	FROM_D "Message-ID: <d@example.org>\nSubject: d\n\nD.\n"

static void
commit_case(const char *label, const int *del, const char *want)
{
	static const char src[] = MSG_A "\n" MSG_B "\n" MSG_C;
	struct maildrop	*mb;
	struct stat	 sb0, sb1;
	char		*path;
	size_t		 i;

	path = make_mbox(src, sizeof(src) - 1);
	assert_int_equal(stat(path, &sb0), 0);
	assert_int_equal(maildrop_open(path, statedir, NULL, &mb), MAILDROP_OK);
	assert_int_equal(maildrop_count(mb), 3);
	for (i = 0; i < 3; i++)
		maildrop_set_deleted(mb, i, del[i]);
	assert_int_equal(maildrop_commit(mb), MAILDROP_OK);
	maildrop_close(mb);
	assert_int_equal(stat(path, &sb1), 0);
	assert_int_equal(sb0.st_ino, sb1.st_ino);
	assert_int_equal(sb0.st_mode, sb1.st_mode);
	assert_int_equal(sb0.st_uid, sb1.st_uid);
	assert_int_equal(sb0.st_gid, sb1.st_gid);
	assert_file_is(path, want, strlen(want), label);
	assert_no_leftovers(path);
	if (!del[0] && !del[1] && !del[2]) {
		assert_int_equal(sb0.st_mtim.tv_sec, sb1.st_mtim.tv_sec);
		assert_int_equal(sb0.st_mtim.tv_nsec, sb1.st_mtim.tv_nsec);
	}
	free(path);
}

static void
test_commit_cases(void **state)
{
	static const int none[] = { 0, 0, 0 }, first[] = { 1, 0, 0 },
	    middle[] = { 0, 1, 0 }, last[] = { 0, 0, 1 },
	    ends[] = { 1, 0, 1 }, two[] = { 1, 1, 0 }, all[] = { 1, 1, 1 };

	(void)state;
	commit_case("none", none, MSG_A "\n" MSG_B "\n" MSG_C);
	commit_case("first", first, MSG_B "\n" MSG_C);
	commit_case("middle", middle, MSG_A "\n" MSG_C);
	commit_case("last", last, MSG_A "\n" MSG_B "\n");
	commit_case("first and last", ends, MSG_B "\n");
	commit_case("first two", two, MSG_C);
	commit_case("all", all, "");
}

/* Mail delivered between maildrop_open() and maildrop_commit() survives. */
static void
test_commit_keeps_new_mail(void **state)
{
	static const char src[] = MSG_A "\n" MSG_B "\n";
	static const char late[] = MSG_C;
	struct maildrop	*mb;
	char		*path;
	int		 fd;

	(void)state;
	path = make_mbox(src, sizeof(src) - 1);
	assert_int_equal(maildrop_open(path, statedir, NULL, &mb), MAILDROP_OK);
	assert_int_equal(maildrop_count(mb), 2);
	fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, late, sizeof(late) - 1),
	    (ssize_t)(sizeof(late) - 1));
	close(fd);
	maildrop_set_deleted(mb, 0, 1);
	assert_int_equal(maildrop_commit(mb), MAILDROP_OK);
	maildrop_close(mb);
	assert_file_is(path, MSG_B "\n" MSG_C, strlen(MSG_B "\n" MSG_C),
	    "late mail");
	assert_no_leftovers(path);
	free(path);
}

/* A mailbox that shrank since it was parsed: nothing is deleted. */
static void
test_commit_changed(void **state)
{
	static const char src[] = MSG_A "\n" MSG_B "\n" MSG_C;
	static const char cut[] = MSG_A "\n" MSG_B;
	struct maildrop	*mb;
	char		*path;

	(void)state;
	path = make_mbox(src, sizeof(src) - 1);
	assert_int_equal(maildrop_open(path, statedir, NULL, &mb), MAILDROP_OK);
	assert_int_equal(truncate(path, (off_t)(sizeof(cut) - 1)), 0);
	maildrop_set_deleted(mb, 0, 1);
	assert_int_equal(maildrop_commit(mb), MAILDROP_CHANGED);
	maildrop_close(mb);
	assert_file_is(path, cut, sizeof(cut) - 1, "shrunk");
	assert_no_leftovers(path);
	free(path);
}

/* A missing mailbox is an empty maildrop; an empty file too. */
static void
test_open_missing_and_empty(void **state)
{
	struct maildrop	*mb;
	struct stat	 sb;
	char		*path;
	size_t		 n;
	uint64_t	 o;

	(void)state;
	path = path_in(scratch, "does-not-exist");
	assert_int_equal(maildrop_open(path, statedir, NULL, &mb), MAILDROP_OK);
	assert_int_equal(maildrop_count(mb), 0);
	maildrop_stat(mb, &n, &o);
	assert_int_equal(n, 0);
	assert_int_equal(o, 0);
	assert_int_equal(maildrop_commit(mb), MAILDROP_OK);
	maildrop_close(mb);
	assert_int_equal(lstat(path, &sb), -1);	/* not created */
	assert_no_leftovers(path);
	free(path);

	path = make_mbox("", 0);
	assert_int_equal(maildrop_open(path, statedir, NULL, &mb), MAILDROP_OK);
	assert_int_equal(maildrop_count(mb), 0);
	maildrop_close(mb);
	assert_no_leftovers(path);
	free(path);
}

static void
test_status_text(void **state)
{
	int	 i;

	(void)state;
	for (i = 0; i < MAILDROP_STATUS_MAX; i++) {
		assert_non_null(maildrop_status_text[i]);
		assert_true(strlen(maildrop_status_text[i]) > 0);
	}
}

static void
test_deleted_and_stat(void **state)
{
	const struct fixture *f = fixture_get("simple");
	struct maildrop	*mb;
	size_t		 n;
	uint64_t	 o, all;
	int		 fd;

	(void)state;
	fd = open_ro(f->mbox_path);
	assert_int_equal(mbox_parse_fd(fd, &mb), MAILDROP_OK);
	all = f->eml_len[0] + f->eml_len[1] + f->eml_len[2];
	maildrop_stat(mb, &n, &o);
	assert_int_equal(n, 3);
	assert_int_equal(o, all);

	maildrop_set_deleted(mb, 1, 1);
	assert_false(maildrop_deleted(mb, 0));
	assert_true(maildrop_deleted(mb, 1));
	assert_false(maildrop_deleted(mb, 2));
	maildrop_stat(mb, &n, &o);
	assert_int_equal(n, 2);
	assert_int_equal(o, all - f->eml_len[1]);
	/* Sizes and UIDLs of deleted messages stay available. */
	assert_int_equal(maildrop_size(mb, 1), f->eml_len[1]);

	maildrop_set_deleted(mb, 1, 7);	/* any non-zero value */
	assert_true(maildrop_deleted(mb, 1));
	maildrop_set_deleted(mb, 0, 1);
	maildrop_set_deleted(mb, 2, 1);
	maildrop_stat(mb, &n, &o);
	assert_int_equal(n, 0);
	assert_int_equal(o, 0);

	maildrop_set_deleted(mb, 1, 0);
	assert_false(maildrop_deleted(mb, 1));
	maildrop_stat(mb, &n, &o);
	assert_int_equal(n, 1);
	assert_int_equal(o, f->eml_len[1]);

	/* A mailbox from mbox_parse_fd() cannot be written back. */
	assert_int_equal(maildrop_commit(mb), MAILDROP_READONLY);
	maildrop_close(mb);
	close(fd);
}

/* The FOLDER INTERNAL DATA message: hidden, not counted, kept. */
static void
test_folder_hidden(void **state)
{
	static const char *const names[] = { "folder_internal",
	    "folder_imapbase" };
	const struct fixture *f;
	struct maildrop	*mb;
	char		*orig, *path, *first;
	size_t		 orig_len, i, n;
	uint64_t	 o;

	(void)state;
	for (i = 0; i < 2; i++) {
		f = fixture_get(names[i]);
		orig = tu_read_file(f->mbox_path, &orig_len);
		assert_non_null(orig);
		path = make_mbox(orig, orig_len);
		assert_int_equal(maildrop_open(path, statedir, NULL, &mb), MAILDROP_OK);
		assert_int_equal(maildrop_count(mb), 2);
		maildrop_stat(mb, &n, &o);
		assert_int_equal(n, 2);
		assert_int_equal(o, f->eml_len[0] + f->eml_len[1]);
		maildrop_set_deleted(mb, 0, 1);
		maildrop_set_deleted(mb, 1, 1);
		assert_int_equal(maildrop_commit(mb), MAILDROP_OK);
		maildrop_close(mb);
		/* The pseudo-message ends where the first real one starts. */
		first = memmem(orig, orig_len, "\n" FROM_A, strlen(FROM_A) + 1);
		assert_non_null(first);
		assert_file_is(path, orig, (size_t)(first - orig) + 1,
		    names[i]);
		assert_no_leftovers(path);

		/* What is left is still a maildrop without messages. */
		assert_int_equal(maildrop_open(path, statedir, NULL, &mb), MAILDROP_OK);
		assert_int_equal(maildrop_count(mb), 0);
		maildrop_close(mb);
		free(path);
		free(orig);
	}
}

/*
 * TOP on a message without an empty line sends it whole; mbox_extent()
 * gives the stored bytes of a message (From_ line and framing excluded).
 */
static void
test_top_headers_only_and_extent(void **state)
{
	const struct fixture *f = fixture_get("headers_only");
	const struct fixture *s = fixture_get("simple");
	struct maildrop	*mb;
	char		*whole, *top, *raw;
	size_t		 wlen, tlen, rlen, i;
	off_t		 start, end;
	int		 fd;

	(void)state;
	fd = open_ro(f->mbox_path);
	assert_int_equal(mbox_parse_fd(fd, &mb), MAILDROP_OK);
	for (i = 0; i < maildrop_count(mb); i++) {
		whole = send_capture(mb, i, -1, &wlen);
		top = send_capture(mb, i, 0, &tlen);
		assert_int_equal(wlen, tlen);
		assert_memory_equal(whole, top, wlen);
		free(whole);
		free(top);
	}
	maildrop_close(mb);
	close(fd);

	/* simple.mbox is all LF: the stored message is the .eml without CRs. */
	raw = tu_read_file(s->mbox_path, &rlen);
	assert_non_null(raw);
	fd = open_ro(s->mbox_path);
	assert_int_equal(mbox_parse_fd(fd, &mb), MAILDROP_OK);
	for (i = 0; i < maildrop_count(mb); i++) {
		struct tu_buf	 lf = { NULL, 0, 0 };
		size_t		 k;

		for (k = 0; k < s->eml_len[i]; k++)
			if (s->eml[i][k] != '\r')
				tu_buf_add(&lf, &s->eml[i][k], 1);
		mbox_extent(mb, i, &start, &end);
		assert_true(start > 0 && end <= (off_t)rlen && start <= end);
		assert_int_equal((size_t)(end - start), lf.len);
		assert_memory_equal(raw + start, lf.p, lf.len);
		tu_buf_free(&lf);
	}
	maildrop_close(mb);
	close(fd);
	free(raw);
}

/* Identical messages: X, X-2, X-3 in file order. */
static void
test_uidl_duplicates(void **state)
{
	const struct fixture *f = fixture_get("duplicates");
	struct maildrop	*mb;
	char		(*u)[MAILDROP_UIDL_MAX], want[MAILDROP_UIDL_MAX + 8];
	int		 fd;

	(void)state;
	fd = open_ro(f->mbox_path);
	assert_int_equal(mbox_parse_fd(fd, &mb), MAILDROP_OK);
	assert_int_equal(maildrop_count(mb), 4);
	u = uidls(mb);
	/* The values themselves: tests/fixtures/duplicates.uidl. */
	check_uidl_file(f, u);
	assert_null(strchr(u[0], '-'));
	assert_null(strchr(u[1], '-'));
	assert_string_not_equal(u[0], u[1]);
	(void)snprintf(want, sizeof(want), "%s-2", u[0]);
	assert_string_equal(u[2], want);
	(void)snprintf(want, sizeof(want), "%s-3", u[0]);
	assert_string_equal(u[3], want);
	free(u);
	maildrop_close(mb);
	close(fd);
}

static char (*uidls_of(const char *data))[MAILDROP_UIDL_MAX]
{
	struct maildrop	*mb;
	char		*path, (*u)[MAILDROP_UIDL_MAX];
	int		 fd;

	path = path_in(scratch, "uidl");
	assert_int_equal(tu_write_file(path, data, strlen(data)), 0);
	fd = open_ro(path);
	assert_int_equal(mbox_parse_fd(fd, &mb), MAILDROP_OK);
	u = uidls(mb);
	maildrop_close(mb);
	close(fd);
	free(path);
	return u;
}

/* A message's UIDL does not depend on the messages before it. */
static void
test_uidl_stable(void **state)
{
	char	(*abcd)[MAILDROP_UIDL_MAX], (*bcd)[MAILDROP_UIDL_MAX],
		(*acd)[MAILDROP_UIDL_MAX], (*d)[MAILDROP_UIDL_MAX];

	(void)state;
	abcd = uidls_of(MSG_A "\n" MSG_B "\n" MSG_C "\n" MSG_D);
	bcd = uidls_of(MSG_B "\n" MSG_C "\n" MSG_D);
	acd = uidls_of(MSG_A "\n" MSG_C "\n" MSG_D);
	d = uidls_of(MSG_D);
	assert_string_equal(abcd[1], bcd[0]);
	assert_string_equal(abcd[2], bcd[1]);
	assert_string_equal(abcd[3], bcd[2]);
	assert_string_equal(abcd[0], acd[0]);
	assert_string_equal(abcd[2], acd[1]);
	assert_string_equal(abcd[3], acd[2]);
	assert_string_equal(abcd[3], d[0]);
	free(abcd);
	free(bcd);
	free(acd);
	free(d);
}

/* ... and after a real commit that removed the first message. */
static void
test_uidl_stable_after_commit(void **state)
{
	static const char src[] = MSG_A "\n" MSG_B "\n" MSG_C;
	struct maildrop	*mb;
	char		*path;
	char		(*before)[MAILDROP_UIDL_MAX], (*after)[MAILDROP_UIDL_MAX];

	(void)state;
	path = make_mbox(src, sizeof(src) - 1);
	assert_int_equal(maildrop_open(path, statedir, NULL, &mb), MAILDROP_OK);
	before = uidls(mb);
	maildrop_set_deleted(mb, 0, 1);
	assert_int_equal(maildrop_commit(mb), MAILDROP_OK);
	maildrop_close(mb);
	assert_int_equal(maildrop_open(path, statedir, NULL, &mb), MAILDROP_OK);
	assert_int_equal(maildrop_count(mb), 2);
	after = uidls(mb);
	maildrop_close(mb);
	assert_string_equal(before[1], after[0]);
	assert_string_equal(before[2], after[1]);
	free(before);
	free(after);
	free(path);
}

/*
 * Big messages: a line longer than the parser looks at, a message larger
 * than one read chunk, CRLF and dots across chunk boundaries.
 */
static void
test_large_message(void **state)
{
	struct tu_buf	 file = { NULL, 0, 0 }, eml = { NULL, 0, 0 };
	struct maildrop	*mb;
	char		*path, *line;
	size_t		 i, n;
	int		 fd;

	(void)state;
	tu_buf_str(&file, FROM_A "Subject: big\n\n");
	tu_buf_str(&eml, "Subject: big\r\n\r\n");
	/* A 10000-octet line, then one of 200000 (beyond 128 KiB). */
	for (n = 10000; n <= 200000; n += 190000) {
		line = malloc(n);
		for (i = 0; i < n; i++)
			line[i] = (char)('a' + i % 26);
		line[0] = '.';
		tu_buf_add(&file, line, n);
		tu_buf_add(&file, "\n", 1);
		tu_buf_add(&eml, line, n);
		tu_buf_add(&eml, "\r\n", 2);
		free(line);
	}
	/* Short CRLF lines, every other one dotted, for 300 KiB. */
	for (i = 0; file.len < 520000; i++) {
		char	 l[32];
		int	 k = snprintf(l, sizeof(l), "%s%zu", i % 2 ? "." : "",
			    i);

		tu_buf_add(&file, l, (size_t)k);
		tu_buf_add(&file, "\r\n", 2);
		tu_buf_add(&eml, l, (size_t)k);
		tu_buf_add(&eml, "\r\n", 2);
	}
	tu_buf_str(&file, "\n" FROM_B "Subject: after\n\nafter\n");

	path = path_in(scratch, "big");
	assert_int_equal(tu_write_file(path, file.p, file.len), 0);
	fd = open_ro(path);
	assert_int_equal(mbox_parse_fd(fd, &mb), MAILDROP_OK);
	assert_int_equal(maildrop_count(mb), 2);
	assert_int_equal(maildrop_size(mb, 0), eml.len);
	check_send(mb, 0, -1, eml.p, eml.len, "big");
	check_send(mb, 0, 1, eml.p, eml.len, "big");
	check_send(mb, 1, -1, "Subject: after\r\n\r\nafter\r\n", 25, "big");
	maildrop_close(mb);
	close(fd);
	unlink(path);
	free(path);
	tu_buf_free(&file);
	tu_buf_free(&eml);
}

/*
 * A CR LF pair cut by a read chunk (maildrop_send reads 128 KiB from the
 * start of the message; the parser 132 KiB from the start of the file),
 * at offsets around each boundary: the size and the bytes sent agree.
 */
static void
test_crlf_across_chunks(void **state)
{
	static const char head[] = FROM_A "Subject: chunk\n\n";
	static const size_t bounds[] = { 131072 + sizeof(FROM_A) - 1,
	    131072 + 4096 };
	struct tu_buf	 file = { NULL, 0, 0 }, eml = { NULL, 0, 0 };
	struct maildrop	*mb;
	char		*path, *pad;
	size_t		 b, padlen;
	int		 fd, k;

	(void)state;
	path = path_in(scratch, "chunk");
	for (b = 0; b < 2; b++)
		for (k = -3; k <= 3; k++) {
			/* The CR of the long line's CRLF is at bounds[b] + k. */
			padlen = (size_t)((ssize_t)bounds[b] + k) -
			    (sizeof(head) - 1);
			pad = malloc(padlen);
			memset(pad, 'x', padlen);
			file.len = eml.len = 0;
			tu_buf_str(&file, head);
			tu_buf_add(&file, pad, padlen);
			tu_buf_str(&file, "\r\n.dot\r\n\rcr\n");
			tu_buf_str(&eml, "Subject: chunk\r\n\r\n");
			tu_buf_add(&eml, pad, padlen);
			tu_buf_str(&eml, "\r\n.dot\r\n\rcr\r\n");
			free(pad);
			assert_int_equal(tu_write_file(path, file.p, file.len),
			    0);
			fd = open_ro(path);
			assert_int_equal(mbox_parse_fd(fd, &mb), MAILDROP_OK);
			assert_int_equal(maildrop_count(mb), 1);
			assert_int_equal(maildrop_size(mb, 0), eml.len);
			check_send(mb, 0, -1, eml.p, eml.len, "chunk");
			maildrop_close(mb);
			close(fd);
		}
	unlink(path);
	free(path);
	tu_buf_free(&file);
	tu_buf_free(&eml);
}

/*
 * Product bug (mbox_parse.c, clen_target): a Content-Length whose target is
 * followed by "\n" and a From_ line that is the file's last line, without
 * a newline, is not honoured, although the parser itself accepts such a
 * last line as a separator (see the from_only_nonl fixture).  The rule:
 * "the bytes at T are \n or \r\n followed by a valid From_ line".
 * clen_target() looks for an LF after the From_ line and gives up.
 */
static void
test_cl_target_from_line_at_eof(void **state)
{
	static const char body[] = "x\n\nFrom carol@example.org Wed Jan  3 "
	    "10:00:00 2024\ny\n";
	struct tu_buf	 file = { NULL, 0, 0 };
	struct maildrop	*mb;
	char		*path, n[32];
	size_t		 count;
	int		 fd;

	(void)state;
	(void)snprintf(n, sizeof(n), "%zu", sizeof(body) - 1);
	tu_buf_str(&file, FROM_A "Content-Length: ");
	tu_buf_str(&file, n);
	tu_buf_str(&file, "\n\n");
	tu_buf_str(&file, body);
	tu_buf_str(&file, "\nFrom bob@example.org Tue Jan  2 10:00:00 2024");
	path = path_in(scratch, "cl-eof");
	assert_int_equal(tu_write_file(path, file.p, file.len), 0);
	fd = open_ro(path);
	unlink(path);
	free(path);
	tu_buf_free(&file);
	assert_int_equal(mbox_parse_fd(fd, &mb), MAILDROP_OK);
	count = maildrop_count(mb);
	maildrop_close(mb);
	close(fd);
	/* Want: the body whole (with its From carol line), then bob's. */
	assert_int_equal(count, 2);
}

static void	rm_dir(const char *, int);

/* ---- journals planted in the state directory and in the spool ------- */

/*
 * The journal header as mbox_journal.c writes it: the tests plant
 * journals by hand, valid ones and ones that must be refused.
 */
struct plant_hdr {
	char		 magic[8];
	uint32_t	 version;
	uint32_t	 phase;
	uint64_t	 ident;
	uint64_t	 ino;
	uint64_t	 x;
	uint64_t	 s;
	uint64_t	 l;
	unsigned char	 marker[16];
	uint64_t	 seal;
};

#define PLANT_SRC	MSG_A "\n" MSG_B "\n" MSG_C
#define PLANT_NOT_A	MSG_B "\n" MSG_C	/* after deleting message 1 */
#define PLANT_NOT_B	MSG_A "\n" MSG_C	/* after deleting message 2 */

enum plant_flaw { PLANT_VALID, PLANT_OTHER_INODE, PLANT_OTHER_BYTES };

static uint64_t
plant_fnv1a(const void *buf, size_t len)
{
	const unsigned char	*p = buf;
	uint64_t		 h = 0xcbf29ce484222325ULL;

	while (len-- > 0) {
		h ^= *p++;
		h *= 0x100000001b3ULL;
	}
	return h;
}

/*
 * Writes at jpath (mode 0600) the journal of a decided commit of the
 * mailbox at mbox, which holds PLANT_SRC: deleting message del (1 or 2).
 * Version 1 names the device, as the version before wrote it in the
 * spool; version 2 the bytes before the deletion.
 */
static void
plant_journal(const char *jpath, const char *mbox, uint32_t version,
    int del, enum plant_flaw flaw)
{
	static const char src[] = PLANT_SRC;
	const char	*tail = del == 1 ? PLANT_NOT_A : MSG_C;
	struct plant_hdr h;
	struct stat	 sb;
	char		*buf;
	size_t		 len;

	assert_int_equal(lstat(mbox, &sb), 0);
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, "POP3DJN1", 8);
	h.version = version;
	h.x = del == 1 ? 0 : strlen(MSG_A "\n");
	h.s = sizeof(src) - 1;
	h.l = strlen(tail);
	h.ino = (uint64_t)sb.st_ino + (flaw == PLANT_OTHER_INODE);
	h.ident = version == 1 ? (uint64_t)sb.st_dev :
	    hash64(src, (size_t)h.x);
	if (flaw == PLANT_OTHER_BYTES)
		h.ident ^= 1;
	memset(h.marker, 0x5a, sizeof(h.marker));
	h.marker[0] = '\0';
	h.seal = plant_fnv1a(&h, offsetof(struct plant_hdr, seal));
	len = 4096 + h.l;
	assert_non_null(buf = calloc(1, len));
	memcpy(buf, &h, sizeof(h));
	memcpy(buf + 4096, tail, h.l);
	(void)unlink(jpath);
	assert_int_equal(tu_write_file(jpath, buf, len), 0);
	assert_int_equal(chmod(jpath, 0600), 0);
	free(buf);
}

/* STATEDIR/INO.journal for the mailbox at path. */
static char *
state_journal(const char *path)
{
	struct stat	 sb;
	char		*p;

	assert_int_equal(lstat(path, &sb), 0);
	if (asprintf(&p, "%s/%ju.journal", statedir, (uintmax_t)sb.st_ino) ==
	    -1)
		abort();
	return p;
}

/* Opens the mailbox; asserts what it holds and serves. */
static void
open_expect(const char *path, size_t count, const char *want)
{
	struct maildrop	*mb;

	assert_int_equal(maildrop_open(path, statedir, NULL, &mb),
	    MAILDROP_OK);
	assert_int_equal(maildrop_count(mb), count);
	maildrop_close(mb);
	assert_file_is(path, want, strlen(want), "mailbox");
}

/* A decided journal of our own is finished by the next open. */
static void
test_journal_finished(void **state)
{
	char	*path, *j;

	(void)state;
	path = make_mbox(PLANT_SRC, strlen(PLANT_SRC));
	j = state_journal(path);
	plant_journal(j, path, 2, 2, PLANT_VALID);
	open_expect(path, 2, PLANT_NOT_B);
	assert_no_leftovers(path);
	/* And by maildrop_recover(), deleting the first message. */
	path = (free(path), make_mbox(PLANT_SRC, strlen(PLANT_SRC)));
	j = (free(j), state_journal(path));
	plant_journal(j, path, 2, 1, PLANT_VALID);
	assert_int_equal(maildrop_recover(path, statedir, NULL), MAILDROP_OK);
	assert_file_is(path, PLANT_NOT_A, strlen(PLANT_NOT_A), "recovered");
	assert_no_leftovers(path);
	free(j);
	free(path);
}

/*
 * Journals in the state directory that fail a check: each is not
 * applied, and the mailbox is served as it is (not a lock-out).
 */
static void
test_journal_planted_not_applied(void **state)
{
	static const char *const what[] = { "symlink", "other owner",
	    "group-writable", "two links", "fifo", "other inode",
	    "other bytes", "version 1, other device" };
	struct stat	 sb;
	char		*path, *j, *other;
	size_t		 i;

	(void)state;
	other = path_in(statedir, "elsewhere");
	for (i = 0; i < sizeof(what) / sizeof(what[0]); i++) {
		path = make_mbox(PLANT_SRC, strlen(PLANT_SRC));
		j = state_journal(path);
		plant_journal(other, path, 2, 2, PLANT_VALID);
		if (i == 1 && geteuid() != 0) {
			print_message("skipped: %s (not root)\n", what[i]);
			(void)unlink(other);
			free(j);
			free(path);
			continue;
		}
		switch (i) {
		case 0:
			assert_int_equal(symlink(other, j), 0);
			break;
		case 1:
			plant_journal(j, path, 2, 2, PLANT_VALID);
			assert_int_equal(chown(j, 4242, (gid_t)-1), 0);
			break;
		case 2:
			plant_journal(j, path, 2, 2, PLANT_VALID);
			assert_int_equal(chmod(j, 0620), 0);
			break;
		case 3:
			assert_int_equal(link(other, j), 0);
			break;
		case 4:
			assert_int_equal(mkfifo(j, 0600), 0);
			break;
		case 5:
			plant_journal(j, path, 2, 2, PLANT_OTHER_INODE);
			break;
		case 6:
			plant_journal(j, path, 2, 2, PLANT_OTHER_BYTES);
			break;
		case 7:
			plant_journal(j, path, 1, 2, PLANT_VALID);
			assert_int_equal(lstat(path, &sb), 0);
			/* Version 1 names the device: make it another. */
			{
				char		*buf;
				size_t		 len;
				struct plant_hdr *h;

				buf = tu_read_file(j, &len);
				assert_non_null(buf);
				h = (struct plant_hdr *)(void *)buf;
				h->ident ^= 1;
				h->seal = plant_fnv1a(h,
				    offsetof(struct plant_hdr, seal));
				assert_int_equal(tu_write_file(j, buf, len), 0);
				free(buf);
			}
			break;
		}
		print_message("planted: %s\n", what[i]);
		open_expect(path, 3, PLANT_SRC);
		/* Served as it is, the next time too. */
		open_expect(path, 3, PLANT_SRC);
		(void)unlink(j);
		(void)unlink(other);
		free(j);
		free(path);
	}
	free(other);
}

/*
 * Upgrade: a journal the version before left in the spool is finished
 * when it is the owner's, one link, mode 0600; anything else is ignored.
 * A spool journal found beside a valid journal in the state directory
 * is the copy already made: retired, never applied.
 */
static void
test_spool_journal(void **state)
{
	struct stat	 sb;
	char		*path, *sj, *j, *other;
	int		 i;

	(void)state;
	path = make_mbox(PLANT_SRC, strlen(PLANT_SRC));
	if (asprintf(&sj, "%s.pop3d-journal", path) == -1)
		abort();
	plant_journal(sj, path, 1, 2, PLANT_VALID);
	open_expect(path, 2, PLANT_NOT_B);
	assert_int_equal(lstat(sj, &sb), -1);	/* the spool keeps nothing */
	assert_no_leftovers(path);

	other = path_in(scratch, "elsewhere");
	for (i = 0; i < 4; i++) {
		path = (free(path), make_mbox(PLANT_SRC, strlen(PLANT_SRC)));
		plant_journal(other, path, 1, 2, PLANT_VALID);
		if (i == 0)
			assert_int_equal(symlink(other, sj), 0);
		else if (i == 1)
			assert_int_equal(link(other, sj), 0);
		else {
			plant_journal(sj, path, 1, 2, PLANT_VALID);
			if (i == 2)
				assert_int_equal(chmod(sj, 0644), 0);
			else if (geteuid() == 0)
				assert_int_equal(chown(sj, 4242, (gid_t)-1),
				    0);
			else
				continue;
		}
		open_expect(path, 3, PLANT_SRC);
		assert_int_equal(lstat(sj, &sb), 0);	/* not ours to remove */
		assert_int_equal(unlink(sj), 0);
		(void)unlink(other);
	}
	free(other);

	/* Both: the state directory's is the one; the spool's is retired. */
	path = (free(path), make_mbox(PLANT_SRC, strlen(PLANT_SRC)));
	j = state_journal(path);
	plant_journal(j, path, 2, 2, PLANT_VALID);
	plant_journal(sj, path, 1, 1, PLANT_VALID);
	open_expect(path, 2, PLANT_NOT_B);
	assert_int_equal(lstat(sj, &sb), -1);
	assert_no_leftovers(path);
	free(j);
	free(sj);
	free(path);
}

/* Two paths to one mailbox (a symlinked spool) give one session lock. */
static void
test_session_lock_by_inode(void **state)
{
	char	*path, *link_dir, *via, *missing;
	int	 fd, fd2 = -1;

	(void)state;
	path = make_mbox(PLANT_SRC, strlen(PLANT_SRC));
	link_dir = path_in(scratch, "spool");
	assert_int_equal(symlink(scratch, link_dir), 0);
	via = path_in(link_dir, "mbox");
	assert_int_equal(maildrop_session_lock(statedir, path, &fd),
	    MAILDROP_OK);
	assert_int_equal(maildrop_session_lock(statedir, via, &fd2),
	    MAILDROP_INUSE);
	close(fd);
	assert_int_equal(maildrop_session_lock(statedir, via, &fd),
	    MAILDROP_OK);
	assert_int_equal(maildrop_session_lock(statedir, path, &fd2),
	    MAILDROP_INUSE);
	close(fd);

	/* A missing mailbox: locked by its name. */
	missing = path_in(scratch, "nobody-here");
	assert_int_equal(maildrop_session_lock(statedir, missing, &fd),
	    MAILDROP_OK);
	assert_int_equal(maildrop_session_lock(statedir, missing, &fd2),
	    MAILDROP_INUSE);
	close(fd);
	free(missing);
	missing = path_in(statedir, "new-nobody-here.lock");
	assert_true(access(missing, F_OK) == 0);

	/* A state directory open to others is refused. */
	assert_int_equal(chmod(statedir, 0722), 0);
	assert_int_equal(maildrop_session_lock(statedir, path, &fd),
	    MAILDROP_IOERR);
	assert_int_equal(chmod(statedir, 0700), 0);
	(void)unlink(link_dir);
	free(missing);
	free(via);
	free(link_dir);
	free(path);
}

/*
 * As a real unprivileged user (nobody) in a spool it cannot write
 * (root:mail 2775), with a state directory statedir_prepare() made:
 * the user's own journal left in the spool by the version before is
 * finished and retired by emptying it (the user cannot unlink it); the
 * dotlock goes through liblockfile's helper.  And statedir_prepare()
 * refuses what it must.  Root only.
 */
static void
test_unprivileged_spool(void **state)
{
	char		 sd[PATH_MAX], *d, *spool, *base, *path, *sj, *p;
	struct stat	 sb;
	pid_t		 pid;
	int		 status;

	(void)state;
	if (geteuid() != 0)
		skip();
	d = tu_mkdtemp();
	assert_int_equal(chmod(d, 0755), 0);
	spool = path_in(d, "spool");
	base = path_in(d, "state");
	assert_int_equal(mkdir(spool, 0755), 0);
	assert_int_equal(chown(spool, 0, 8), 0);	/* Debian's mail gid */
	assert_int_equal(chmod(spool, 02775), 0);

	assert_int_equal(statedir_prepare(base, "nobody", 65534, 65534, sd,
	    sizeof(sd)), 0);
	assert_int_equal(lstat(sd, &sb), 0);
	assert_true(S_ISDIR(sb.st_mode));
	assert_int_equal(sb.st_uid, 65534);
	assert_int_equal(sb.st_mode & 07777, 0700);
	assert_int_equal(lstat(base, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0755);
	/* Again: it exists, and is right. */
	assert_int_equal(statedir_prepare(base, "nobody", 65534, 65534, sd,
	    sizeof(sd)), 0);
	/* Not another's, not a symlink, not a bad name, not an open DIR. */
	p = path_in(base, "other");
	assert_int_equal(mkdir(p, 0700), 0);
	assert_int_equal(chown(p, 4242, 4242), 0);
	assert_int_equal(statedir_prepare(base, "other", 4243, 4243, sd,
	    sizeof(sd)), -1);
	assert_int_equal(rmdir(p), 0);
	assert_int_equal(symlink("/tmp", p), 0);
	assert_int_equal(statedir_prepare(base, "other", 4243, 4243, sd,
	    sizeof(sd)), -1);
	assert_int_equal(unlink(p), 0);
	free(p);
	assert_int_equal(statedir_prepare(base, "..", 4243, 4243, sd,
	    sizeof(sd)), -1);
	assert_int_equal(statedir_prepare(base, "a/b", 4243, 4243, sd,
	    sizeof(sd)), -1);
	assert_int_equal(chmod(base, 0775), 0);
	assert_int_equal(statedir_prepare(base, "nobody", 65534, 65534, sd,
	    sizeof(sd)), -1);
	assert_int_equal(chmod(base, 0755), 0);
	assert_int_equal(statedir_prepare(base, "nobody", 65534, 65534, sd,
	    sizeof(sd)), 0);

	path = path_in(spool, "nobody");
	assert_int_equal(tu_write_file(path, PLANT_SRC, strlen(PLANT_SRC)),
	    0);
	assert_int_equal(chown(path, 65534, 8), 0);
	if (asprintf(&sj, "%s.pop3d-journal", path) == -1)
		abort();
	plant_journal(sj, path, 1, 2, PLANT_VALID);
	assert_int_equal(chown(sj, 65534, 65534), 0);

	if ((pid = fork()) == 0) {
		struct maildrop	*mb;
		int		 fd, rc = 0;

		privdrop_permanently(65534, 65534);
		if (maildrop_open(path, sd, NULL, &mb) != MAILDROP_OK)
			_exit(10);
		if (maildrop_count(mb) != 2)
			rc = 11;
		maildrop_set_deleted(mb, 0, 1);	/* through the helper */
		if (rc == 0 && maildrop_commit(mb) != MAILDROP_OK)
			rc = 12;
		maildrop_close(mb);
		/* The retired (empty) spool journal is passed over. */
		if (rc == 0 && (maildrop_open(path, sd, NULL, &mb) !=
		    MAILDROP_OK || maildrop_count(mb) != 1))
			rc = 13;
		if (rc == 0)
			maildrop_close(mb);
		/* And a missing mailbox: empty, nothing locked. */
		p = path_in(spool, "ghost");
		if (rc == 0 && (maildrop_session_lock(sd, p, &fd) !=
		    MAILDROP_OK || maildrop_open(p, sd, NULL, &mb) !=
		    MAILDROP_OK || maildrop_count(mb) != 0 ||
		    maildrop_commit(mb) != MAILDROP_OK))
			rc = 14;
		_exit(rc);
	}
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_file_is(path, MSG_C, strlen(MSG_C), "after the commit");
	assert_int_equal(lstat(sj, &sb), 0);
	assert_int_equal(sb.st_size, 0);
	p = path_in(spool, "ghost");
	assert_int_equal(lstat(p, &sb), -1);
	free(p);
	p = path_in(spool, "nobody.lock");
	assert_int_equal(lstat(p, &sb), -1);
	free(p);
	rm_dir(d, 2);
	free(sj);
	free(path);
	free(base);
	free(spool);
	free(d);
}

/* ---- main ------------------------------------------------------------ */

/* Removes dir and everything in it, one level of subdirectories deep. */
static void
rm_dir(const char *dir, int depth)
{
	DIR		*d;
	struct dirent	*de;
	char		*p;

	if ((d = opendir(dir)) != NULL) {
		while ((de = readdir(d)) != NULL) {
			if (strcmp(de->d_name, ".") == 0 ||
			    strcmp(de->d_name, "..") == 0)
				continue;
			p = path_in(dir, de->d_name);
			if (unlink(p) == -1 && depth > 0)
				rm_dir(p, depth - 1);
			free(p);
		}
		closedir(d);
	}
	(void)rmdir(dir);
}

static void
rm_scratch(void)
{
	rm_dir(scratch, 2);
	free(scratch);
	free(statedir);
}

int
main(void)
{
	static const struct CMUnitTest fixed[] = {
		cmocka_unit_test(test_status_text),
		cmocka_unit_test(test_deleted_and_stat),
		cmocka_unit_test(test_folder_hidden),
		cmocka_unit_test(test_top_headers_only_and_extent),
		cmocka_unit_test(test_uidl_duplicates),
		cmocka_unit_test(test_uidl_stable),
		cmocka_unit_test(test_uidl_stable_after_commit),
		cmocka_unit_test(test_commit_cases),
		cmocka_unit_test(test_commit_keeps_new_mail),
		cmocka_unit_test(test_commit_changed),
		cmocka_unit_test(test_open_missing_and_empty),
		cmocka_unit_test(test_large_message),
		cmocka_unit_test(test_crlf_across_chunks),
		cmocka_unit_test(test_cl_target_from_line_at_eof),
		cmocka_unit_test(test_journal_finished),
		cmocka_unit_test(test_journal_planted_not_applied),
		cmocka_unit_test(test_spool_journal),
		cmocka_unit_test(test_session_lock_by_inode),
		cmocka_unit_test(test_unprivileged_spool),
	};
	struct CMUnitTest *t;
	char		**names;
	size_t		 i, nt = 0;
	int		 fails = 0;

	fixtures_load();
	scratch = tu_mkdtemp();
	statedir = path_in(scratch, "state");
	if (mkdir(statedir, 0700) == -1)
		abort();
	t = calloc(2 * nfixtures, sizeof(*t));
	names = calloc(2 * nfixtures, sizeof(*names));
	for (i = 0; i < nfixtures; i++) {
		if (asprintf(&names[nt], "parse %s", fixtures[i].name) == -1)
			abort();
		t[nt].name = names[nt];
		t[nt].test_func = test_fixture_parse;
		t[nt].initial_state = &fixtures[i];
		nt++;
	}
	for (i = 0; i < nfixtures; i++) {
		if (asprintf(&names[nt], "commit %s", fixtures[i].name) == -1)
			abort();
		t[nt].name = names[nt];
		t[nt].test_func = test_fixture_commit;
		t[nt].initial_state = &fixtures[i];
		nt++;
	}
	fails += _cmocka_run_group_tests("fixtures", t, nt, NULL, NULL);
	fails += cmocka_run_group_tests(fixed, NULL, NULL);
	for (i = 0; i < nt; i++)
		free(names[i]);
	free(names);
	free(t);
	fixtures_free();
	rm_scratch();
	return fails == 0 ? 0 : 1;
}
