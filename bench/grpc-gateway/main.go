// Command grpc-gateway-user is the grpc-gateway peer of micro-bench's
// scenario R4: grpc-gateway v1's reverse proxy (JSON over HTTP/1.1 → gRPC)
// in front of the same user-srv as `micro api --handler=rpc`, serving the
// same route, POST /user/user/query-user-by-name with a JSON body, mapped to
// /go.micro.srv.user.User/QueryUserByName (rule in user.yaml).
//
// micro-bench builds it at run time, in a temp dir it removes afterwards,
// from Debian's packages in GOPATH mode (no modules, no network):
//
//	go build -o <tmp>/protoc-gen-grpc-gateway github.com/grpc-ecosystem/grpc-gateway/protoc-gen-grpc-gateway
//	protoc -I <tmp>/proto --go_out=plugins=grpc:<tmp>/src/grpc-gateway-user \
//	  --grpc-gateway_out=grpc_api_configuration=<tmp>/user.yaml:<tmp>/src/grpc-gateway-user user/user.proto
//	GO111MODULE=off GOPATH=<tmp>:/usr/share/gocode CGO_ENABLED=0 go build -o <tmp>/grpc-gateway-user grpc-gateway-user
//
// with this file as <tmp>/src/grpc-gateway-user/main.go. The stubs and the
// gateway's handlers are generated, not committed, so they match the proto.
//
// It dials user-srv at the address given with -upstream (one HTTP/2
// connection, as grpc-gateway's RegisterXHandlerFromEndpoint makes), listens
// on 127.0.0.1:0, prints "READY <address> GOMAXPROCS=<n>" once it accepts
// connections, and exits when its stdin closes (its parent is gone).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"runtime"

	gw "github.com/grpc-ecosystem/grpc-gateway/runtime"
	"google.golang.org/grpc"

	pb "grpc-gateway-user/user"
)

func main() {
	upstream := flag.String("upstream", "", "user-srv's gRPC address (host:port)")
	flag.Parse()
	if *upstream == "" {
		log.Fatal("-upstream is required")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// grpc-gateway's defaults: JSONPb with the proto's field names (the
	// user proto's names are already lowerCamelCase) and no zero values.
	mux := gw.NewServeMux()
	opts := []grpc.DialOption{grpc.WithInsecure()}
	if err := pb.RegisterUserHandlerFromEndpoint(ctx, mux, *upstream, opts); err != nil {
		log.Fatalf("register: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatalf("listen: %v", err)
	}
	server := &http.Server{Handler: mux}
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		_ = server.Close()
	}()
	fmt.Printf("READY %s GOMAXPROCS=%d\n", lis.Addr(), runtime.GOMAXPROCS(0))
	if err := server.Serve(lis); err != nil && err != http.ErrServerClosed {
		log.Fatalf("serve: %v", err)
	}
}
