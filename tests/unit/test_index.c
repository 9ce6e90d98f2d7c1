/*
 * test_index.c: the mailbox index (mbox_index.c).  A table read
 * from the index must equal the one a fresh parse makes of the file as
 * it is now, whatever happened to the file or to the index in between;
 * and the index must be used where it may be.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "mbox.h"
#include "mbox_impl.h"
#include "testutil.h"

static char	*scratch;
static char	*statedir;	/* scratch/state: the state directory */
static char	*path;		/* scratch/mbox */
static char	*idxpath;	/* scratch/state/INO.index */
static char	*oldidx;	/* scratch/mbox.pop3d-index: never read */

/* Messages of about 5 KB, with identical pairs; n of them. */
static void
build(struct tu_buf *b, size_t n, const char *salt)
{
	char	 line[200];
	size_t	 i, k;

	for (i = 0; i < n; i++) {
		size_t id = i % 50 == 7 ? i - 1 : i;	/* a duplicate */

		snprintf(line, sizeof(line), "From a%zu@example.org Mon Jan  5 "
		    "10:%02zu:00 2026\nReceived: by mx; %s %zu\n"
		    "Message-ID: <%zu@x>\nSubject: %zu\n\n", id, id % 60,
		    salt, id, id, id);
		tu_buf_str(b, line);
		for (k = 0; k < 60; k++) {
			snprintf(line, sizeof(line), "%s%zu line %zu of a body "
			    "long enough to be about eighty bytes wide ....\n",
			    k % 9 == 0 ? "." : k % 13 == 0 ? ">From " : "",
			    id, k);
			tu_buf_str(b, line);
		}
		tu_buf_str(b, "\n");
	}
}

/* Writes the mailbox and lets its ctime age past the index's settle time. */
static void
write_aged(const void *data, size_t len)
{
	assert_int_equal(tu_write_file(path, data, len), 0);
	usleep(80 * 1000);
}

/* The table of an open mailbox, as a client sees it. */
struct table {
	size_t		 n;
	uint64_t	*size;
	char		(*uidl)[MAILDROP_UIDL_MAX];
};

static void
table_of(const struct maildrop *mb, struct table *t)
{
	size_t	 i;

	t->n = maildrop_count(mb);
	t->size = calloc(t->n + 1, sizeof(*t->size));
	t->uidl = calloc(t->n + 1, sizeof(*t->uidl));
	for (i = 0; i < t->n; i++) {
		t->size[i] = maildrop_size(mb, i);
		maildrop_uidl(mb, i, t->uidl[i]);
	}
}

static void
table_free(struct table *t)
{
	free(t->size);
	free(t->uidl);
}

/* Opens the mailbox; checks its table against a fresh parse; returns how. */
static enum mbox_table_source
open_and_compare(void)
{
	struct maildrop	*mb, *ref;
	struct table	 a, b;
	size_t		 i;
	int		 fd;
	enum mbox_table_source how;

	assert_int_equal(maildrop_open(path, statedir, NULL, &mb), MAILDROP_OK);
	how = mbox_table_source(mb);
	table_of(mb, &a);
	maildrop_close(mb);
	assert_true((fd = open(path, O_RDONLY)) >= 0);
	assert_int_equal(mbox_parse_fd(fd, &ref), MAILDROP_OK);
	table_of(ref, &b);
	maildrop_close(ref);
	close(fd);
	assert_int_equal(a.n, b.n);
	for (i = 0; i < a.n; i++) {
		assert_int_equal(a.size[i], b.size[i]);
		assert_string_equal(a.uidl[i], b.uidl[i]);
	}
	table_free(&a);
	table_free(&b);
	return how;
}

static int
exists(const char *p)
{
	struct stat	 sb;

	return lstat(p, &sb) == 0;
}

/* A fresh 5 MB mailbox with its index made by a first session. */
static void
indexed_mailbox(struct tu_buf *b)
{
	memset(b, 0, sizeof(*b));
	build(b, 1000, "one");
	assert_true(b->len > 4 * 1024 * 1024);
	(void)unlink(idxpath);
	write_aged(b->p, b->len);
	assert_int_equal(open_and_compare(), MBOX_TABLE_PARSED);
	assert_true(exists(idxpath));
}

static void
test_unchanged_uses_index(void **state)
{
	struct tu_buf	 b;
	struct stat	 sb;

	(void)state;
	indexed_mailbox(&b);
	assert_int_equal(lstat(idxpath, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_int_equal(open_and_compare(), MBOX_TABLE_INDEX);
	assert_int_equal(open_and_compare(), MBOX_TABLE_INDEX);
	tu_buf_free(&b);
}

static void
test_small_mailbox_has_none(void **state)
{
	struct tu_buf	 b = { NULL, 0, 0 };

	(void)state;
	(void)unlink(idxpath);
	build(&b, 100, "small");
	write_aged(b.p, b.len);
	assert_int_equal(open_and_compare(), MBOX_TABLE_PARSED);
	assert_false(exists(idxpath));
	tu_buf_free(&b);
}

/* New mail: only the last indexed message and the new ones are parsed. */
static void
test_grown_parses_new_mail(void **state)
{
	struct tu_buf	 b;
	int		 fd;
	static const char more[] = "From new@example.org Tue Jan  6 09:00:00 "
	    "2026\nSubject: new\n\nnew mail\n";

	(void)state;
	indexed_mailbox(&b);
	assert_true((fd = open(path, O_WRONLY | O_APPEND)) >= 0);
	assert_int_equal(write(fd, more, sizeof(more) - 1), sizeof(more) - 1);
	close(fd);
	assert_int_equal(open_and_compare(), MBOX_TABLE_INDEX_GROWN);
	/* The last message grew (no separator): parsed again, still right. */
	assert_true((fd = open(path, O_WRONLY | O_APPEND)) >= 0);
	assert_int_equal(write(fd, "more\n", 5), 5);
	close(fd);
	assert_int_equal(open_and_compare(), MBOX_TABLE_INDEX_GROWN);
	tu_buf_free(&b);
}

/* Rewritten to the same size: ctime moved, so a full parse. */
static void
test_same_size_rewrite(void **state)
{
	struct tu_buf	 b;

	(void)state;
	indexed_mailbox(&b);
	b.p[b.len / 2] = b.p[b.len / 2] == 'x' ? 'y' : 'x';
	assert_int_equal(tu_write_file(path, b.p, b.len), 0);
	assert_int_equal(open_and_compare(), MBOX_TABLE_PARSED);
	tu_buf_free(&b);
}

/* Rewritten larger (a header added early): the spot checks see it. */
static void
test_grown_rewrite(void **state)
{
	struct tu_buf	 b, c = { NULL, 0, 0 };
	char		*cut;

	(void)state;
	indexed_mailbox(&b);
	cut = strstr(b.p + 20000, "\nSubject:");
	assert_non_null(cut);
	tu_buf_add(&c, b.p, (size_t)(cut - b.p) + 1);
	tu_buf_str(&c, "Status: RO\n");
	tu_buf_add(&c, cut + 1, b.len - (size_t)(cut - b.p) - 1);
	assert_int_equal(tu_write_file(path, c.p, c.len), 0);
	assert_int_equal(open_and_compare(), MBOX_TABLE_PARSED);
	tu_buf_free(&b);
	tu_buf_free(&c);
}

/* Damaged, truncated, shared or someone else's: not used. */
static void
test_bad_index_ignored(void **state)
{
	struct tu_buf	 b;
	char		*ix;
	size_t		 len;

	(void)state;
	indexed_mailbox(&b);
	ix = tu_read_file(idxpath, &len);
	assert_non_null(ix);

	ix[len / 2] ^= 1;			/* a record */
	assert_int_equal(tu_write_file(idxpath, ix, len), 0);
	assert_int_equal(open_and_compare(), MBOX_TABLE_PARSED);

	ix[len / 2] ^= 1;			/* the header */
	ix[20] ^= 1;
	assert_int_equal(tu_write_file(idxpath, ix, len), 0);
	assert_int_equal(open_and_compare(), MBOX_TABLE_PARSED);

	ix[20] ^= 1;
	assert_int_equal(tu_write_file(idxpath, ix, len - 100), 0);
	assert_int_equal(open_and_compare(), MBOX_TABLE_PARSED);

	/* Intact again (the last open rewrote it), but readable by others. */
	assert_int_equal(open_and_compare(), MBOX_TABLE_INDEX);
	assert_int_equal(chmod(idxpath, 0644), 0);
	assert_int_equal(open_and_compare(), MBOX_TABLE_PARSED);

	/* A symlink is not followed. */
	assert_int_equal(unlink(idxpath), 0);
	assert_int_equal(symlink(path, idxpath), 0);
	assert_int_equal(open_and_compare(), MBOX_TABLE_PARSED);
	assert_int_equal(unlink(idxpath), 0);
	free(ix);
	tu_buf_free(&b);
}

/*
 * Planted in the state directory: a hard link (two links), a FIFO (which
 * must not hang the open), a file of another uid: not used.  The index an
 * older version left in the spool is never read at all.
 */
static void
test_planted_index_ignored(void **state)
{
	struct tu_buf	 b;
	struct stat	 sb;
	char		*ix, *link2;
	size_t		 len;

	(void)state;
	indexed_mailbox(&b);
	assert_int_equal(open_and_compare(), MBOX_TABLE_INDEX);
	if (asprintf(&link2, "%s/other", statedir) == -1)
		abort();
	assert_int_equal(link(idxpath, link2), 0);
	assert_int_equal(open_and_compare(), MBOX_TABLE_PARSED);
	(void)unlink(link2);
	free(link2);
	assert_int_equal(open_and_compare(), MBOX_TABLE_INDEX);

	ix = tu_read_file(idxpath, &len);
	assert_non_null(ix);
	assert_int_equal(unlink(idxpath), 0);
	assert_int_equal(mkfifo(idxpath, 0600), 0);
	assert_int_equal(open_and_compare(), MBOX_TABLE_PARSED);
	/* The open rewrote it as a fresh index: a regular file again. */
	assert_int_equal(lstat(idxpath, &sb), 0);
	assert_true(S_ISREG(sb.st_mode));

	if (geteuid() == 0) {
		assert_int_equal(chown(idxpath, 4242, (gid_t)-1), 0);
		assert_int_equal(open_and_compare(), MBOX_TABLE_PARSED);
	}

	/* A valid index, but in the spool where an older version kept it. */
	assert_int_equal(unlink(idxpath), 0);
	assert_int_equal(tu_write_file(oldidx, ix, len), 0);
	write_aged(b.p, b.len);
	assert_int_equal(open_and_compare(), MBOX_TABLE_PARSED);
	assert_int_equal(unlink(oldidx), 0);
	free(ix);
	tu_buf_free(&b);
}

/* A commit removes the index; the next session makes a new one. */
static void
test_commit_drops_index(void **state)
{
	struct tu_buf	 b;
	struct maildrop	*mb;

	(void)state;
	indexed_mailbox(&b);
	assert_int_equal(maildrop_open(path, statedir, NULL, &mb), MAILDROP_OK);
	assert_int_equal(mbox_table_source(mb), MBOX_TABLE_INDEX);
	maildrop_set_deleted(mb, 3, 1);
	assert_int_equal(maildrop_commit(mb), MAILDROP_OK);
	maildrop_close(mb);
	assert_false(exists(idxpath));
	usleep(80 * 1000);
	assert_int_equal(open_and_compare(), MBOX_TABLE_PARSED);
	assert_int_equal(open_and_compare(), MBOX_TABLE_INDEX);
	tu_buf_free(&b);
}

static int
setup(void **unused)
{
	(void)unused;
	struct stat	 sb;

	scratch = tu_mkdtemp();
	if (asprintf(&path, "%s/mbox", scratch) == -1 ||
	    asprintf(&statedir, "%s/state", scratch) == -1 ||
	    asprintf(&oldidx, "%s/mbox.pop3d-index", scratch) == -1 ||
	    mkdir(statedir, 0700) == -1 ||
	    tu_write_file(path, "", 0) == -1 || lstat(path, &sb) == -1 ||
	    asprintf(&idxpath, "%s/%ju.index", statedir,
	    (uintmax_t)sb.st_ino) == -1)
		abort();
	return 0;
}

static int
teardown(void **unused)
{
	(void)unused;
	(void)unlink(idxpath);
	(void)unlink(oldidx);
	(void)unlink(path);
	(void)rmdir(statedir);
	(void)rmdir(scratch);
	free(scratch);
	free(statedir);
	free(path);
	free(idxpath);
	free(oldidx);
	return 0;
}

/*
 * A change is settled once it is old enough that a later one gets a later
 * ctime; on a shared file system, old enough for other hosts' clocks too
 * (up to a second apart), and a ctime ahead of ours never is.
 */
static void
test_settled_allows_for_other_clocks(void **state)
{
	struct stat	 sb;
	struct timespec	 now = { 1700000000, 500000000 };

	(void)state;
	memset(&sb, 0, sizeof(sb));
	sb.st_ctim = now;
	sb.st_ctim.tv_sec -= 1;			/* a second ago */
	assert_true(mbox_ctime_settled(&sb, &now, 0));
	assert_false(mbox_ctime_settled(&sb, &now, 1));
	sb.st_ctim.tv_sec -= 2;			/* three seconds ago */
	assert_true(mbox_ctime_settled(&sb, &now, 1));
	sb.st_ctim = now;
	sb.st_ctim.tv_nsec -= 10000000;		/* 10 ms ago */
	assert_false(mbox_ctime_settled(&sb, &now, 0));
	sb.st_ctim = now;
	sb.st_ctim.tv_sec += 1;			/* a clock ahead of ours */
	assert_false(mbox_ctime_settled(&sb, &now, 0));
	assert_false(mbox_ctime_settled(&sb, &now, 1));
}

/* The file systems other hosts share are told from local ones. */
static void
test_netfs_detection(void **state)
{
	int	 fd;

	(void)state;
	/* /proc is neither local disk nor shared: not in the list. */
	assert_true((fd = open("/proc/self/status", O_RDONLY)) != -1);
	assert_false(mbox_on_netfs(fd));
	close(fd);
	/* A descriptor fstatfs() refuses: the cautious answer. */
	assert_true(mbox_on_netfs(-1));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unchanged_uses_index),
		cmocka_unit_test(test_small_mailbox_has_none),
		cmocka_unit_test(test_grown_parses_new_mail),
		cmocka_unit_test(test_same_size_rewrite),
		cmocka_unit_test(test_planted_index_ignored),
		cmocka_unit_test(test_grown_rewrite),
		cmocka_unit_test(test_bad_index_ignored),
		cmocka_unit_test(test_commit_drops_index),
		cmocka_unit_test(test_settled_allows_for_other_clocks),
		cmocka_unit_test(test_netfs_detection),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
