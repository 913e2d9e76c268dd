# The threaded cases of tests/c/node_test.c (nodes on their own threads,
# asked, stopped and forked from others) under ThreadSanitizer: the library
# is compiled once more into build/tsan/ (liblua, libev, yajl and libsodium
# stay as Debian ships them, uninstrumented). scripts/suite-tsan.sh runs it;
# `make test-tsan` alone builds and runs just that.
TSAN_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=thread
TSAN_OBJS  := $(LIB_SRCS:src/%.c=build/tsan/%.o) build/tsan/embedded.o

build/tsan/%.o: src/%.c
	@mkdir -p $(@D)
	$(CC) $(QC_CFLAGS) $(DEPFLAGS) $(CPPFLAGS) $(TSAN_FLAGS) -c $< -o $@

build/tsan/embedded.o: build/embedded.c | build/tsan
	$(CC) $(QC_CFLAGS) $(DEPFLAGS) $(TSAN_FLAGS) -c $< -o $@

build/tsan/node_test: tests/c/node_test.c tests/c/fd_birth.c $(TSAN_OBJS)
	$(DEPEND)
	$(CC) $(QC_CFLAGS) $(CPPFLAGS) $(TSAN_FLAGS) $(FD_BIRTH_WRAP) tests/c/node_test.c \
	  tests/c/fd_birth.c $(TSAN_OBJS) -o $@ $(QC_LDLIBS) $(LDLIBS)

build/tsan:
	mkdir -p $@

test-tsan: build/tsan/node_test
	@sh scripts/suite-tsan.sh

.PHONY: test-tsan
