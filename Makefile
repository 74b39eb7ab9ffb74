# accelpool — the two commands a newcomer needs are `make up` and `make test`.
GO       ?= go
BIN      := bin/accelpool
# Packages with concurrency run under the race detector in `make test`.
RACE_PKGS := ./agent/... ./oip/... ./internal/auth/... ./server/... ./gateway/... ./store/memory/... ./scheduler/... ./sim/... \
             ./proxy/... ./offload/... ./internal/linkemu/...

.PHONY: all setup setup-test setup-bench build up test vet fmt-check fuzz bench bench-offload clean

all: build

## setup: install the ONNX Runtime library and the demo models into the cache
setup:
	./scripts/setup.sh

## setup-test: setup plus test data and tools (libonnx-testdata, etcd, toxiproxy, photos)
setup-test:
	./scripts/setup.sh --test

## setup-bench: setup plus what benchmarks need (toxiproxy, photographs)
setup-bench:
	./scripts/setup.sh --bench

## bench-offload: the AVEC experiment (needs root for the cgroup CPU quota)
bench-offload: setup-bench build
	./$(BIN) bench offload --plot docs/offload.svg

build:
	$(GO) build -o $(BIN) ./cmd/accelpool

## up: set everything up and run the serving stack with the demo models
up: setup build
	./$(BIN) up

## test: set everything up, then vet, format check, tests, race tests
# Tests over the shared data beside the checkout (Ibis measurements) must
# run where it is present; elsewhere they skip and say so.
test: export ACCELPOOL_REQUIRE_SHARED_DATA := $(if $(wildcard ../shared/data/ibis/trt_ps_validation.csv),1,)
test: setup-test fmt-check vet
	$(GO) test -count=1 ./...
	$(GO) test -count=1 -race $(RACE_PKGS)

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

## fuzz: run each fuzz target for FUZZTIME (default 60s)
FUZZTIME ?= 60s
fuzz:
	$(GO) test ./tensor -run '^$$' -fuzz FuzzDecodeJSONData -fuzztime $(FUZZTIME)
	$(GO) test ./oip/rest -run '^$$' -fuzz FuzzParseInferRequest -fuzztime $(FUZZTIME)

clean:
	rm -rf bin
