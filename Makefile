# sluice build. `make` builds everything into build/ and bin/; `make demo` and `make test` also
# install their prerequisites on a fresh Debian machine (see README).

ARCH        := $(shell uname -m)
CLANG       ?= clang
CC          ?= cc
BPF_CFLAGS  := -O2 -g -Wall -Werror -target bpf -I/usr/include/$(ARCH)-linux-gnu
SHIM_CFLAGS := -O2 -g -Wall -Wextra -Werror -fPIC
APT_PKGS    := clang llvm bpftool libbpf-dev containernetworking-plugins iproute2 iptables podman runc busybox-static
VITEST      := node_modules/.bin/vitest

BPF_SRCS    := $(wildcard bpf/*.c)
BPF_OBJS    := $(patsubst bpf/%.c,build/bpf/%.o,$(BPF_SRCS))
BPF_HDRS    := $(wildcard bpf/lib/*.h)
TS_SRCS     := $(shell find src -name '*.ts')

.PHONY: all deps apt-deps npm-deps test test-unit bench demo clean install

all: $(BPF_OBJS) build/libsluice.so build/sl-probe build/zt-standin build/dist/.stamp bin/sluice bin/sluice-cni

build/bpf/%.o: bpf/%.c $(BPF_HDRS)
	@mkdir -p $(@D)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

SHIM_SRCS   := native/shim.c native/io.c
SHIM_HDRS   := native/shim.h native/io.h native/fail.h

build/libsluice.so: $(SHIM_SRCS) $(SHIM_HDRS)
	@mkdir -p $(@D)
	$(CC) $(SHIM_CFLAGS) -shared -o $@ $(SHIM_SRCS) -lbpf -pthread

# The CNI plugin is C: the runtime executes it on every pod start, where Node's start-up would cost.
bin/sluice-cni: cni/sluice-cni.c
	@mkdir -p $(@D)
	$(CC) -O2 -Wall -Wextra -Werror -o $@ $<

build/sl-probe: test/tools/sl-probe.c
	@mkdir -p $(@D)
	$(CC) -O2 -Wall -Wextra -pthread -o $@ $<

# A stand-in for Istio's ztunnel (ZDS client and in-pod proxy) for the ambient tests.
build/zt-standin: test/tools/zt-standin.c
	@mkdir -p $(@D)
	$(CC) -O2 -Wall -Wextra -Werror -pthread -o $@ $<

build/dist/.stamp: $(TS_SRCS) tsconfig.json package.json
	node_modules/.bin/tsc -p tsconfig.json
	@touch $@

# The launcher gives V8 a small young generation (2 MiB per semi-space): objects that outlive one
# scavenge go to the old generation, which the agent grows by a quarter per full GC (agent.ts), so
# that its peak RSS stays low without --optimize-for-size's cost in speed. It cannot be set once V8
# runs, hence here. (`env -S`: coreutils >= 8.30, as on Debian since buster.)
bin/sluice: build/dist/.stamp
	@mkdir -p bin
	printf '#!/usr/bin/env -S node --max-semi-space-size=2\nrequire(require("path").join(__dirname, "../build/dist/cli.js"));\n' > $@
	chmod +x $@

# Prerequisites: Debian packages (only when something is missing) and the locked node modules.
deps: apt-deps npm-deps

apt-deps:
	@missing=""; \
	for f in /usr/bin/clang /usr/bin/llc /usr/sbin/bpftool /usr/include/bpf/libbpf.h \
	         /usr/lib/cni/bridge /sbin/ip /usr/sbin/iptables /usr/bin/podman /usr/sbin/runc /bin/busybox; do \
	  [ -e $$f ] || missing="$$missing $$f"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages (missing:$$missing)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PKGS); \
	fi

npm-deps: node_modules/.package-lock.json

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

# The whole suite, against the real kernel (needs root).
test: deps all
	$(VITEST) run --config test/vitest.config.mts

test-unit: deps all
	$(VITEST) run --config test/vitest.config.mts test/unit

# BENCH_SCALE=1 adds 50,000 and 100,000 Services to the scale benchmark (10,000 alone by default).
bench: deps all
	node_modules/.bin/tsx test/bench/run.ts $(BENCH_ARGS)
	node_modules/.bin/tsx test/bench/api.ts $(BENCH_ARGS)
	node_modules/.bin/tsx test/bench/scale.ts $(BENCH_ARGS)

demo: deps all
	node_modules/.bin/tsx test/demo/run.ts

# `make install DESTDIR=DIR`: the self-contained tree the image ships (deploy/Dockerfile copies
# it to /). The code finds everything from the package root (the directory with package.json):
# build/libsluice.so, build/bpf/*.o, bin/sluice-cni. Production modules only: a copy of the
# locked node_modules pruned of devDependencies, offline (npm prune only removes). sluice-cni
# is linked statically here: the agent copies it to the host's cni-bin-dir and the runtime runs
# it there, on whatever libc the node has.
INSTALL_ROOT = $(DESTDIR)/opt/sluice

install: all
	rm -rf $(INSTALL_ROOT)/build $(INSTALL_ROOT)/node_modules
	install -d $(INSTALL_ROOT)/bin $(INSTALL_ROOT)/build/bpf
	install -m 0644 $(BPF_OBJS) $(INSTALL_ROOT)/build/bpf/
	install -m 0755 build/libsluice.so $(INSTALL_ROOT)/build/libsluice.so
	cp -R build/dist $(INSTALL_ROOT)/build/dist
	rm -f $(INSTALL_ROOT)/build/dist/.stamp
	install -m 0644 package.json package-lock.json $(INSTALL_ROOT)/
	cp -R node_modules $(INSTALL_ROOT)/node_modules
	cd $(INSTALL_ROOT) && npm prune --omit=dev --offline --no-audit --no-fund --loglevel=error
	find $(INSTALL_ROOT)/node_modules -mindepth 1 -maxdepth 1 -type d -empty -delete
	install -m 0755 bin/sluice $(INSTALL_ROOT)/bin/sluice
	$(CC) -O2 -Wall -Wextra -Werror -static -o $(INSTALL_ROOT)/bin/sluice-cni cni/sluice-cni.c

clean:
	rm -rf build bin
