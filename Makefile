# cachemed. `make` builds ./cachemed; `make test` installs what is missing, then runs every suite
# (unit + integration, release and ASan+UBSan builds). See README.md.

PKGS    := libevent libevent_pthreads hiredis libpq libmariadb libmongoc-1.0 sqlite3 msgpack zlib \
           inih libcurl jansson
WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wpointer-arith \
           -Wformat=2 -Wundef -Wvla -Wno-missing-field-initializers
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lhttp_parser -pthread -lm # http_parser: no .pc in Debian
CHECK_FLAGS = $(shell pkg-config --cflags --libs check 2>/dev/null)

CC      ?= cc
OPT     ?= -O2
CFLAGS  := -std=gnu11 -g $(OPT) $(WARN) $(if $(filter 0,$(WERROR)),,-Werror) -I. -MMD -MP \
           -D_GNU_SOURCE $(PKG_CFLAGS) $(EXTRA_CFLAGS)
LDFLAGS += $(EXTRA_LDFLAGS)

BUILD   ?= build
LIB_SRCS := $(filter-out daemon/main.c,$(wildcard daemon/*.c)) $(wildcard conf/*.c) $(wildcard storages/*.c) $(wildcard storages/redis/*.c)
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o)
UNIT_SRCS := $(wildcard tests/unit/check_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
BENCH_SRCS := $(wildcard bench/*.c)
BENCH_BINS := $(BENCH_SRCS:bench/%.c=$(BUILD)/bench/%)

ASAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer

.PHONY: all deps test unit integration asan asan-build fuzz bench bench-hitratio bench-trace bench-mem \
        bench-badday soak \
        conftest format clean demo

all: $(BUILD)/cachemed cachemed

cachemed: $(BUILD)/cachemed
	@if [ "$(BUILD)" = build ]; then cp $< $@; fi

$(BUILD)/cachemed: $(BUILD)/daemon/main.o $(LIB_OBJS)
	@$(if $(V),,echo "  LINK  $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

Q := $(if $(V),,@)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(V),,echo "  CC    $@")
	$(Q)$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(LIB_OBJS)
	@mkdir -p $(dir $@)
	@$(if $(V),,echo "  TEST  $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB_OBJS) $(PKG_LIBS) $(CHECK_FLAGS)

$(BUILD)/bench/%: bench/%.c $(LIB_OBJS)
	@mkdir -p $(dir $@)
	@$(if $(V),,echo "  BENCH $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB_OBJS) $(PKG_LIBS)

unit-bins: $(UNIT_BINS)
bench-bins: $(BENCH_BINS)

# Runs every unit suite of this build.
unit: $(UNIT_BINS)
	@scripts/run-unit.sh $(BUILD)/tests

deps:
	@scripts/install-deps.sh

# The single test command (CI runs it through .ci/run).
test:
	@scripts/run-tests.sh

integration: all
	@scripts/run-integration.sh $(CURDIR)/$(BUILD)/cachemed

asan-build:
	@$(MAKE) --no-print-directory BUILD=build/asan CC=clang OPT=-O1 \
	    EXTRA_CFLAGS="$(ASAN_FLAGS)" EXTRA_LDFLAGS="$(ASAN_FLAGS)" build/asan/cachemed unit-bins

asan: asan-build
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	    scripts/run-unit.sh build/asan/tests

FUZZ_SECS ?= 30
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
fuzz:
	@$(MAKE) --no-print-directory BUILD=build/fuzz CC=clang OPT=-O1 \
	    EXTRA_CFLAGS="-fsanitize=fuzzer-no-link,address,undefined" $(LIB_OBJS:$(BUILD)/%=build/fuzz/%)
	@for f in $(FUZZ_SRCS); do n=$$(basename $$f .c); \
	    clang -std=gnu11 -g -O1 -I. -D_GNU_SOURCE $(PKG_CFLAGS) -fsanitize=fuzzer,address,undefined \
	      -o build/fuzz/$$n $$f $(LIB_OBJS:$(BUILD)/%=build/fuzz/%) $(PKG_LIBS) || exit 1; \
	    c=build/fuzz/corpus/$${n#fuzz_}; rm -rf $$c; mkdir -p $$c; \
	    cp tests/fuzz/corpus/$${n#fuzz_}/* $$c/ 2>/dev/null; \
	    echo "== $$n ($(FUZZ_SECS)s, corpus copy in $$c)"; \
	    build/fuzz/$$n -max_total_time=$(FUZZ_SECS) -print_final_stats=1 -artifact_prefix=build/fuzz/ \
	      $$c > build/fuzz/$$n.log 2>&1; rc=$$?; \
	    grep -E 'stat::number_of_executed_units|ERROR|SUMMARY' build/fuzz/$$n.log; \
	    [ $$rc -eq 0 ] || { tail -30 build/fuzz/$$n.log; exit 1; }; \
	done

bench: all bench-bins
	@bench/run.sh

bench-hitratio: all bench-bins
	@bench/hitratio.sh

bench-trace: all bench-bins
	@bench/trace.sh

# Bytes per key of 1M SETs, daemon (lru, tlfu; glibc, jemalloc, mimalloc) vs redis-server.
bench-mem: all
	@bench/mem.sh

# 10 minutes (SOAK_SECS) of ~200 clients with faults injected; not part of `make test`. Knobs:
# bench/soak.sh. SOAK_BIN=build/asan/cachemed (after `make asan-build`) soaks the ASan build.
soak: all
	@bench/soak.sh

# The origin's bad day (issue 15): cachemed, nginx and Varnish through a 503 outage and a slow
# phase, in one run (bench/badday.sh).
bench-badday: all bench-bins
	@bench/badday.sh

conftest: all
	./cachemed --check -c cachemed.conf.example

# The README's quick start: installs what is missing first (a fresh machine has no libraries).
demo:
	@scripts/install-deps.sh
	@$(MAKE) --no-print-directory -s all
	@scripts/demo.sh

format:
	clang-format -i daemon/*.[ch] conf/*.[ch] storages/*.[ch] tests/unit/*.c tests/fuzz/*.c

clean:
	rm -rf build cachemed

-include $(LIB_OBJS:.o=.d) $(BUILD)/daemon/main.d $(UNIT_BINS:=.d)
