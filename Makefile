# gmesh. `make help` lists the targets.
GO ?= go
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
# controller-gen of the release built against k8s.io v0.34 (the cluster's 1.34).
CONTROLLER_GEN_VERSION := v0.19.0
CONTROLLER_GEN := $(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VERSION)
BIN := $(CURDIR)/bin

.PHONY: help build test race vet proto proto-tools generate check-generated bench bench-mtls test-k8s k8s-binaries k8s-up k8s-cleanup images

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

build: ## build gmesh and the echo services into ./bin
	$(GO) build -o $(BIN)/ ./cmd/...

test: ## run the tests (the README's test command); the real-cluster tests in internal/k8stest need root and cgroup v1 (GMESH_K8S=off skips them on purpose)
	$(GO) test -race -count=1 -timeout 30m ./...

test-k8s: ## only the real-cluster tests (root, cgroup v1; builds the cluster binaries if missing, ~7 min cold)
	$(GO) test -count=1 -timeout 30m -v ./internal/k8stest/

k8s-binaries: ## build and cache the cluster's binaries (etcd, kube-*, kubectl) under ~/.cache/gmesh-k8s
	$(GO) run ./cmd/gmesh-k8stest build

k8s-up: ## start a cluster for hand testing; Ctrl-C tears it down (tests reuse it with GMESH_K8S_KUBECONFIG)
	$(GO) run ./cmd/gmesh-k8stest up -kubeconfig $(CURDIR)/_output/kubeconfig

k8s-cleanup: ## undo a cluster run that was killed (processes, mounts, cgroups, chains, bridge, sysctls, paths)
	$(GO) run ./cmd/gmesh-k8stest cleanup

images: ## OCI image tarballs of gmesh, echo-server (0.9, and 1.0 to deploy) and echo-client under _output/images/ (no Docker)
	$(GO) run ./cmd/gmesh-k8stest image -pkg ./cmd/gmesh -ref gmesh.local/gmesh:dev -out _output/images/gmesh.tar
	$(GO) run ./cmd/gmesh-k8stest image -pkg ./cmd/echo-server -ref gmesh.local/echo-server:0.9 -out _output/images/echo-server.tar
	$(GO) run ./cmd/gmesh-k8stest image -pkg ./cmd/echo-server -ldflags "-X main.stampedVersion=1.0" -ref gmesh.local/echo-server:1.0 -out _output/images/echo-server-1.0.tar
	$(GO) run ./cmd/gmesh-k8stest image -pkg ./cmd/echo-client -ref gmesh.local/echo-client:dev -out _output/images/echo-client.tar

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

generate: ## regenerate the App Mesh and gmesh CRD types' deepcopy code and the CRDs under deploy/kubernetes/crds
	$(CONTROLLER_GEN) object paths=./api/appmesh/... paths=./api/gmesh/...
	$(CONTROLLER_GEN) crd paths=./api/appmesh/... paths=./api/gmesh/... output:crd:artifacts:config=deploy/kubernetes/crds

check-generated: proto generate ## fail if the committed generated code is stale
	git diff --exit-code -- api/ deploy/kubernetes/crds/
	@test -z "$$(git status --porcelain -- api/ deploy/kubernetes/crds/)" || { git status --porcelain -- api/ deploy/kubernetes/crds/; echo 'untracked generated files'; exit 1; }

bench: ## run the benchmark ladder and rewrite BENCHMARKS.md (about 7 minutes)
	$(GO) run ./cmd/gmesh-bench -out BENCHMARKS.md

bench-mtls: ## mTLS beside plaintext (issue 14): rewrite that section of BENCHMARKS.md (about 5 minutes)
	$(GO) run ./cmd/gmesh-bench -mtls -out BENCHMARKS.md

bench-deploy: ## a full deploy under load, 1,000,000+ requests (about 8 minutes; figures for BENCHMARKS.md)
	$(GO) test ./internal/e2e -run TestDeployBench -deploy-bench -deploy-bench-rps 2500 -deploy-bench-duration 420s -v -count=1 -timeout 30m
