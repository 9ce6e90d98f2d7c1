# pop3d: one POP3 session on stdin/stdout.  GNU make.
PREFIX	?= /usr/local
SBINDIR	?= $(PREFIX)/sbin
MANDIR	?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
LOCALSTATEDIR ?= /var
DESTDIR	?=

CC	?= cc
PKGS	 = pam libxcrypt libmd libseccomp
# pop3d is started for every connection, and each shared library costs
# the loader tens of microseconds before the greeting: the three small,
# stable ones (libmd's MD5, liblockfile's dotlock, libseccomp's filter
# compiler) are linked in (debian/control names them in Built-Using);
# libpam and libxcrypt, which get security updates, stay shared.
STATIC_LIBS = -Wl,-Bstatic -lmd -llockfile -lseccomp -Wl,-Bdynamic
CFLAGS	?= -O2 -g
# Quiet until make deps has installed pkg-config and the -dev packages.
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs pam libxcrypt 2>/dev/null)
# _FORTIFY_SOURCE needs optimisation: glibc warns without it, and -Werror
# would turn a user's CFLAGS=-g into a failed build.
OPTIMIZED  := $(filter-out -O0,$(filter -O%,$(CFLAGS)))
override CFLAGS += -std=c17 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow \
	   -Wpointer-arith -Wstrict-prototypes -Wmissing-prototypes \
	   -Wformat=2 -MMD -MP $(PKG_CFLAGS)
# pop3d starts as root on every connection: the hardening Debian uses for
# its daemons (dpkg-buildflags hardening=+all).
override CFLAGS += -fstack-protector-strong -fstack-clash-protection -fPIE \
	   $(if $(OPTIMIZED),-D_FORTIFY_SOURCE=2)
override LDFLAGS += -fPIE -pie -Wl,-z,relro,-z,now
override LDLIBS += $(PKG_LIBS) $(STATIC_LIBS)
ifeq ($(SANITIZE),1)
override CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -O1 \
	   -U_FORTIFY_SOURCE
override LDFLAGS += -fsanitize=address,undefined
endif

# Rebuild everything when the flags change (make SANITIZE=1 after make).
# Goals that build nothing leave the stamp alone: "make install" after
# "make" must not make the next build start over.
FLAGS_STAMP = .flags
FLAGS_NOW  := $(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) $(LDLIBS)
NOBUILD	   := $(filter install uninstall clean deps,$(MAKECMDGOALS))
ifeq ($(or $(MAKECMDGOALS),all),$(NOBUILD))
else ifneq ($(FLAGS_NOW),$(shell cat $(FLAGS_STAMP) 2>/dev/null))
$(shell echo '$(FLAGS_NOW)' > $(FLAGS_STAMP))
endif

LIBSRCS	 = auth.c confcheck.c io.c log.c maildrop.c mbox.c mbox_from.c \
	   mbox_index.c mbox_journal.c mbox_lock.c mbox_parse.c mbox_uidl.c \
	   monitor.c peer.c prelogin.c privdrop.c privsep.c proxy.c sandbox.c \
	   scan.c session.c statedir.c
LIBOBJS	 = $(LIBSRCS:.c=.o)
UNITS	 = $(patsubst %.c,%,$(wildcard tests/unit/test_*.c))
FAULTLIB = tests/fault/fault.so

all: pop3d

$(FLAGS_STAMP): ;

%.o: %.c $(FLAGS_STAMP)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

pop3d: pop3d.o $(LIBOBJS)
	$(CC) $(LDFLAGS) -o $@ pop3d.o $(LIBOBJS) $(LDLIBS)

tests/unit/%: tests/unit/%.c $(LIBOBJS) $(FLAGS_STAMP)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -I. -o $@ $< $(LIBOBJS) $(LDLIBS) \
	    $(shell pkg-config --libs cmocka)

units: $(UNITS) $(FAULTLIB)

# libFuzzer (clang): the mbox parser and body writer, the privsep records,
# the PROXY header, the SASL path and the dispatcher.  make fuzz runs each
# for FUZZ_TIME seconds from its seed corpus; make check runs them briefly.
FUZZ_TIME ?= 60
FUZZERS	 = tests/fuzz/fuzz_mbox tests/fuzz/fuzz_privsep tests/fuzz/fuzz_proxy \
	   tests/fuzz/fuzz_sasl tests/fuzz/fuzz_session
FUZZ_CFLAGS = -std=c17 -D_GNU_SOURCE -g -O1 -Wall -Wextra -Werror \
	   -fsanitize=fuzzer,address,undefined -I. \
	   $(PKG_CFLAGS)

tests/fuzz/%: tests/fuzz/%.c $(LIBSRCS) $(wildcard *.h)
	clang $(FUZZ_CFLAGS) -o $@ $< $(LIBSRCS) $(LDLIBS)

fuzzers: $(FUZZERS)

fuzz: $(FUZZERS)
	@sh tests/fuzz/run.sh $(FUZZ_TIME)

# The fault injector is never built with sanitizers: it only wraps calls.
$(FAULTLIB): tests/fault/fault.c
	$(CC) -shared -fPIC -O2 -Wall -Wextra -Werror -o $@ $< -ldl

# Both entry points install their own Debian packages when missing.
deps:
	@sh tools/deps.sh build

check:
	@sh tools/deps.sh test
	@$(MAKE) --no-print-directory all units fuzzers
	@sh tests/run.sh

demo:
	@sh tools/deps.sh build
	@$(MAKE) --no-print-directory all
	@sh demo/run.sh

# The benchmark against popa3d, Dovecot and GNU mailutils (README.md,
# "Performance"): installs its peers from Debian, runs on 127.0.0.1,
# prints one table.
# make bench BENCH_ARGS=--quick for a short try.
BENCH_ARGS ?=
bench:
	@sh tools/deps.sh demo
	@$(MAKE) --no-print-directory all
	@/usr/bin/python3 bench/bench.py $(BENCH_ARGS)

# The parser alone beside wc -l on a page-cached mailbox (README.md,
# "Performance"): make bench-parse PARSE_MBOX=FILE PARSE_RUNS=N.
PARSE_MBOX ?= $(shell /usr/bin/python3 bench/gen.py 10000)
PARSE_RUNS ?= 10
bench/parse_bench: bench/parse_bench.c $(LIBOBJS) $(FLAGS_STAMP)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -I. -o $@ $< $(LIBOBJS) $(LDLIBS)

bench-parse: bench/parse_bench
	@bench/parse_bench -n $(PARSE_RUNS) $(PARSE_MBOX)

SYSTEMDDIR ?= $(SYSCONFDIR)/systemd/system
DOCDIR	?= $(PREFIX)/share/doc/pop3d
FIXPATH	 = sed 's|/usr/local/sbin/pop3d|$(SBINDIR)/pop3d|g'

# Configuration files are installed only where missing; the account of
# the pre-login process is created only on the real system (no DESTDIR).
install: pop3d
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 \
	    $(DESTDIR)$(SYSCONFDIR)/pam.d $(DESTDIR)$(SYSCONFDIR)/xinetd.d \
	    $(DESTDIR)$(SYSTEMDDIR) $(DESTDIR)$(DOCDIR)/examples
	install -d -m 755 $(DESTDIR)$(LOCALSTATEDIR)/lib/pop3d
	install -m 755 pop3d $(DESTDIR)$(SBINDIR)/pop3d
	$(FIXPATH) pop3d.8 >$(DESTDIR)$(MANDIR)/man8/pop3d.8
	chmod 644 $(DESTDIR)$(MANDIR)/man8/pop3d.8
	test -e $(DESTDIR)$(SYSCONFDIR)/pam.d/pop3d || \
	    install -m 644 pam.d/pop3d $(DESTDIR)$(SYSCONFDIR)/pam.d/pop3d
	test -e $(DESTDIR)$(SYSCONFDIR)/xinetd.d/pop3d || { \
	    $(FIXPATH) xinetd.d/pop3d >$(DESTDIR)$(SYSCONFDIR)/xinetd.d/pop3d && \
	    chmod 644 $(DESTDIR)$(SYSCONFDIR)/xinetd.d/pop3d; }
	install -m 644 systemd/pop3d.socket $(DESTDIR)$(SYSTEMDDIR)/pop3d.socket
	$(FIXPATH) 'systemd/pop3d@.service' >'$(DESTDIR)$(SYSTEMDDIR)/pop3d@.service'
	$(FIXPATH) stunnel/pop3s.conf >$(DESTDIR)$(DOCDIR)/examples/stunnel-pop3s.conf
	$(FIXPATH) stunnel/pop3-starttls.conf >$(DESTDIR)$(DOCDIR)/examples/stunnel-pop3-starttls.conf
	install -m 644 fail2ban/filter.d/pop3d.conf $(DESTDIR)$(DOCDIR)/examples/fail2ban-filter-pop3d.conf
	install -m 644 fail2ban/jail.d/pop3d.conf $(DESTDIR)$(DOCDIR)/examples/fail2ban-jail-pop3d.conf
	$(FIXPATH) xinetd.d/pop3d >$(DESTDIR)$(DOCDIR)/examples/xinetd-pop3d
	$(FIXPATH) xinetd.d/pop3s >$(DESTDIR)$(DOCDIR)/examples/xinetd-pop3s
	chmod 644 '$(DESTDIR)$(SYSTEMDDIR)/pop3d@.service' \
	    $(DESTDIR)$(DOCDIR)/examples/stunnel-pop3s.conf \
	    $(DESTDIR)$(DOCDIR)/examples/stunnel-pop3-starttls.conf \
	    $(DESTDIR)$(DOCDIR)/examples/xinetd-pop3d \
	    $(DESTDIR)$(DOCDIR)/examples/xinetd-pop3s
	if [ -z "$(DESTDIR)" ] && ! getent passwd pop3d >/dev/null; then \
	    useradd --system --no-create-home --home-dir /nonexistent \
	        --shell /usr/sbin/nologin --user-group pop3d; fi

# Leaves configuration files that were changed after installation.
uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/pop3d $(DESTDIR)$(MANDIR)/man8/pop3d.8 \
	    $(DESTDIR)$(SYSTEMDDIR)/pop3d.socket '$(DESTDIR)$(SYSTEMDDIR)/pop3d@.service'
	rm -rf $(DESTDIR)$(DOCDIR)
	-rmdir $(DESTDIR)$(LOCALSTATEDIR)/lib/pop3d 2>/dev/null	# kept if in use
	cmp -s pam.d/pop3d $(DESTDIR)$(SYSCONFDIR)/pam.d/pop3d && \
	    rm -f $(DESTDIR)$(SYSCONFDIR)/pam.d/pop3d || true
	$(FIXPATH) xinetd.d/pop3d | cmp -s - $(DESTDIR)$(SYSCONFDIR)/xinetd.d/pop3d && \
	    rm -f $(DESTDIR)$(SYSCONFDIR)/xinetd.d/pop3d || true

clean:
	rm -f pop3d *.o $(LIBSRCS:.c=.d) pop3d.d $(UNITS) tests/unit/*.d $(FLAGS_STAMP) \
	    $(FAULTLIB) $(FUZZERS) bench/parse_bench bench/parse_bench.d
	rm -rf tests/out
	rm -rf tests/__pycache__ tests/e2e/__pycache__ .pytest_cache

.PHONY: all units fuzzers fuzz deps check demo bench bench-parse install uninstall clean

-include $(wildcard $(LIBSRCS:.c=.d) pop3d.d tests/unit/*.d)
