# qc_assert's own test program (tests/unit/assert_spec.lua), built as every
# build compiles it and again with -DNDEBUG -O2 as a release build might:
# both must stop at a broken invariant.
ASSERT_SRCS := tests/c/assert_fire.c src/base/common.c

all: build/assert_fire build/assert_fire_ndebug

build/assert_fire: $(ASSERT_SRCS) | build
	$(DEPEND)
	$(CC) $(QC_CFLAGS) $(CFLAGS) $(LDFLAGS) $(ASSERT_SRCS) -o $@

build/assert_fire_ndebug: $(ASSERT_SRCS) | build
	$(DEPEND)
	$(CC) $(QC_CFLAGS) $(CFLAGS) -DNDEBUG -O2 $(LDFLAGS) $(ASSERT_SRCS) -o $@
