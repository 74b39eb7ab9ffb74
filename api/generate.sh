#!/bin/sh
# Regenerates the Go code for accelpool's protos. Needs protoc (3.21 or
# later) and, on PATH, the plugins:
#   go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12   # google.golang.org/protobuf in go.mod
#   go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
# Run from anywhere: sh api/generate.sh (or go generate ./api/).
set -eu
cd "$(dirname "$0")"
protoc \
	--proto_path=. \
	--go_out=. --go_opt=paths=source_relative \
	--go-grpc_out=. --go-grpc_opt=paths=source_relative \
	inference/grpc_service.proto
