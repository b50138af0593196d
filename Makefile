# tern - thin wrapper over Meson/Ninja; the contract's targets.
#   make        build build/ternd and build/tern
#   make run    demo server on 127.0.0.1:2525 (etc/demo.conf)
#   make check  unit + end-to-end tests, plain and ASan+UBSan builds
#   make fuzz   libFuzzer targets, each run for FUZZ_SECONDS
#   make bench  throughput against Postfix and smtp-sink (see bench/run)

FUZZ_SECONDS ?= 60

.PHONY: all deps run check fuzz bench clean format

all: deps build/build.ninja
	ninja -C build
	ln -sf tern build/mailq

deps:
	@scripts/deps

build/build.ninja:
	meson setup build --buildtype=debugoptimized

build-asan/build.ninja:
	CC=gcc meson setup build-asan --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false

build-fuzz/build.ninja:
	CC=clang meson setup build-fuzz --buildtype=debug -Dfuzz=true -Dtests=false

run: all
	mkdir -p build/demo
	build/ternd -f -c etc/demo.conf

check: deps build/build.ninja build-asan/build.ninja
	ninja -C build
	ninja -C build-asan
	scripts/check build build-asan

fuzz: deps build-fuzz/build.ninja
	ninja -C build-fuzz
	scripts/fuzz build-fuzz $(FUZZ_SECONDS)

bench: deps
	bench/run

format:
	clang-format -i src/*.c src/*/*.c src/*/*.h tests/unit/*.c fuzz/*.c

clean:
	rm -rf build build-asan build-fuzz build-release
