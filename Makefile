# gmesh. `make help` lists the targets.
GO ?= go
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
BIN := $(CURDIR)/bin

.PHONY: help build test race vet proto proto-tools check-generated bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

build: ## build gmesh and the echo services into ./bin
	$(GO) build -o $(BIN)/ ./cmd/...

test: ## run the tests (the README's test command)
	$(GO) test -race -count=1 -timeout 30m ./...

race: ## run the tests with the race detector
	$(GO) test -race ./...

vet: ## go vet
	$(GO) vet ./...

proto-tools: ## install protoc plugins at the pinned versions into ./bin (protoc itself: apt-get install protobuf-compiler)
	GOBIN=$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

proto: proto-tools ## regenerate the Go code of api/**/*.proto
	PATH=$(BIN):$$PATH protoc -I . --go_out=paths=source_relative:. --go-grpc_out=paths=source_relative:. \
		api/echo/v1/echo.proto api/mesh/v1/admin.proto

check-generated: proto ## fail if the committed generated code is stale
	git diff --exit-code -- api/

bench: ## run the benchmark ladder and rewrite BENCHMARKS.md (about 7 minutes)
	$(GO) run ./cmd/gmesh-bench -out BENCHMARKS.md

bench-deploy: ## a full deploy under load, 1,000,000+ requests (about 8 minutes; figures for BENCHMARKS.md)
	$(GO) test ./internal/e2e -run TestDeployBench -deploy-bench -deploy-bench-rps 2500 -deploy-bench-duration 420s -v -count=1 -timeout 30m
