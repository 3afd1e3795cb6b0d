// Command grpc-go-greeter is the grpc-go peer of micro-bench's scenario R2:
// grpc-go's helloworld server, serving the toolkit's own greeter proto
// (proto/greeter/greeter.proto: /go.micro.srv.greeter.Greeter/Hello) with the
// same trivial handler as the Rust servers, so one load generator (a raw
// tonic client) can call both and only the server differs.
//
// micro-bench builds it at run time, in a temp dir it removes afterwards,
// from Debian's packages in GOPATH mode (no modules, no network):
//
//	protoc -I <tmp>/proto --go_out=plugins=grpc:<tmp>/src/grpc-go-greeter greeter/greeter.proto
//	GO111MODULE=off GOPATH=<tmp>:/usr/share/gocode CGO_ENABLED=0 go build -o <tmp>/grpc-go-greeter grpc-go-greeter
//
// with this file as <tmp>/src/grpc-go-greeter/main.go. The stubs are
// generated, not committed, so they always match the proto.
//
// Like micro-bench's own servers, it listens on 127.0.0.1:0, prints
// "READY <address> GOMAXPROCS=<n>" once it accepts connections, and exits
// when its stdin closes (its parent is gone) or on SIGTERM. Started with
// `taskset -c 0`, the Go runtime sees one CPU, so GOMAXPROCS is 1.
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"runtime"

	"google.golang.org/grpc"

	pb "grpc-go-greeter/greeter"
)

// greeter answers Hello as micro-bench's BenchGreeter does (the benchmarks
// call Hello only; the streaming methods answer Unimplemented).
type greeter struct {
	*pb.UnimplementedGreeterServer
}

func (greeter) Hello(_ context.Context, req *pb.Request) (*pb.Response, error) {
	return &pb.Response{Msg: "Hello " + req.Name}, nil
}

func main() {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatalf("listen: %v", err)
	}
	// Default options, as in grpc-go's helloworld example.
	s := grpc.NewServer()
	pb.RegisterGreeterServer(s, greeter{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		s.Stop()
	}()
	fmt.Printf("READY %s GOMAXPROCS=%d\n", lis.Addr(), runtime.GOMAXPROCS(0))
	if err := s.Serve(lis); err != nil {
		log.Fatalf("serve: %v", err)
	}
}
