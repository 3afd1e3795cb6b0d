// Command gopeer is the go-micro-style peer of the interop tests: plain
// grpc-go (Debian's golang-google-grpc-dev) with go-micro v2's json codec
// (server/grpc/codec.go: jsonpb with OrigName, registered under the
// content-subtype "json"), built at test time in GOPATH mode, offline.
//
//	gopeer greeter
//	    Serves go.micro.srv.greeter Greeter.Hello, Stream and PingPong
//	    (the shapes of go-micro's example service) on 127.0.0.1:0 WITHOUT
//	    gRPC reflection, as every go-micro v2 service: JSON callers reach it
//	    only with application/grpc+json. Prints "READY <address>"; exits when
//	    stdin closes. The reply names the caller's authorization metadata,
//	    so tests see headers arrive as metadata.
//
//	gopeer call -address A -path P -body JSON [-H 'Name: value']... [-check user.Response]
//	    Calls as go-micro's rpc handler and `micro call` do: the JSON body as
//	    the message, content-type application/grpc+json, the HTTP headers as
//	    metadata (keys lowercased, as grpc-go sends them). Prints the reply
//	    JSON as received; with -check, also decodes it with jsonpb into the
//	    generated type and prints "CHECK <go struct>". On failure prints
//	    "ERROR <grpc code> <message>" and exits 1.
//
//	gopeer stream -address A -path P -body JSON [-send JSON]... [-close]
//	    Opens a stream as go-micro v2's grpc client does (every stream
//	    bidirectional, content-type application/grpc+json), sends the body
//	    and each -send message, half-closes only with -close (go-micro's
//	    client never does), and prints each reply JSON as received, one a
//	    line, then "END OK"; on an error status "ERROR <code> <message>" and
//	    exits 1.
//
//	gopeer web
//	    Serves HTTP with net/http alone on 127.0.0.1:0, as a go-micro v2
//	    web service (web.NewService) serves its http.Handler: every path
//	    answers JSON naming the method, path, query, the
//	    X-Micro-Web-Base-Path header the dashboard sends, and the body.
//	    Prints "READY <address>"; exits when stdin closes. Its registry
//	    record (go-micro's web record) is written by the test.
//
//	gopeer indent
//	    Prints the JSON reply on stdin as go-micro v2's `micro call` prints
//	    one (micro v2's CallService: json.Indent(&out, response, "", "\t"),
//	    then Print's fmt.Printf("%s\n", ...)), for tests to compare with.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/golang/protobuf/jsonpb"
	"github.com/golang/protobuf/proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	greeter "gopeer/greeter"
	user "gopeer/user"
)

// jsonCodec is go-micro v2's server/grpc jsonCodec.
type jsonCodec struct{}

var jsonpbMarshaler = &jsonpb.Marshaler{OrigName: true, EmitDefaults: false}

func (jsonCodec) Marshal(v interface{}) ([]byte, error) {
	if pb, ok := v.(proto.Message); ok {
		s, err := jsonpbMarshaler.MarshalToString(pb)
		return []byte(s), err
	}
	return json.Marshal(v)
}

func (jsonCodec) Unmarshal(data []byte, v interface{}) error {
	if len(data) == 0 {
		return nil
	}
	if pb, ok := v.(proto.Message); ok {
		return jsonpb.Unmarshal(bytes.NewReader(data), pb)
	}
	return json.Unmarshal(data, v)
}

func (jsonCodec) Name() string { return "json" }

type hello struct {
	*greeter.UnimplementedGreeterServer
}

func (hello) Hello(ctx context.Context, req *greeter.Request) (*greeter.Response, error) {
	msg := "Hello " + req.Name + " from go"
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if auth := md.Get("authorization"); len(auth) > 0 {
			msg += " (authorization: " + auth[0] + ")"
		}
	}
	return &greeter.Response{Msg: msg}, nil
}

// Stream answers count messages "Hello <name> <i>", as go-micro's example.
func (hello) Stream(req *greeter.Request, srv greeter.Greeter_StreamServer) error {
	if req.Count < 0 || req.Count > 10000 {
		return status.Errorf(codes.InvalidArgument, "count must be between 0 and 10000, not %d", req.Count)
	}
	for i := int32(1); i <= req.Count; i++ {
		if err := srv.Send(&greeter.Response{Msg: fmt.Sprintf("Hello %s %d", req.Name, i)}); err != nil {
			return err
		}
	}
	return nil
}

// PingPong answers each request with "pong <name>" until the caller half-closes.
func (hello) PingPong(srv greeter.Greeter_PingPongServer) error {
	for {
		req, err := srv.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := srv.Send(&greeter.Response{Msg: "pong " + req.Name}); err != nil {
			return err
		}
	}
}

func serve() {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}
	s := grpc.NewServer()
	greeter.RegisterGreeterServer(s, hello{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		s.Stop()
	}()
	fmt.Printf("READY %s\n", lis.Addr())
	if err := s.Serve(lis); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(1)
	}
}

func web() {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"peer":   "go",
			"method": r.Method,
			"path":   r.URL.Path,
			"query":  r.URL.RawQuery,
			"base":   r.Header.Get("X-Micro-Web-Base-Path"),
			"body":   string(body),
		})
	})
	srv := &http.Server{Handler: mux}
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		_ = srv.Close()
	}()
	fmt.Printf("READY %s\n", lis.Addr())
	if err := srv.Serve(lis); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(1)
	}
}

type headers []string

func (h *headers) String() string     { return strings.Join(*h, ", ") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

func call(args []string) {
	fs := flag.NewFlagSet("call", flag.ExitOnError)
	address := fs.String("address", "", "host:port")
	path := fs.String("path", "", "/service.Handler/Method")
	body := fs.String("body", "{}", "the JSON request")
	check := fs.String("check", "", "decode the reply with jsonpb as this type (user.Response, user.LoginResponse)")
	var hs headers
	fs.Var(&hs, "H", "an HTTP header 'Name: value' to send as metadata (repeatable)")
	_ = fs.Parse(args)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// go-micro's util/ctx.FromRequest + its grpc client: every header.
	md := metadata.MD{}
	for _, h := range hs {
		parts := strings.SplitN(h, ":", 2)
		if len(parts) != 2 {
			fmt.Println("ERROR bad header", h)
			os.Exit(2)
		}
		md.Append(strings.ToLower(strings.TrimSpace(parts[0])), strings.TrimSpace(parts[1]))
	}
	ctx = metadata.NewOutgoingContext(ctx, md)
	conn, err := grpc.DialContext(ctx, *address, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		fmt.Println("ERROR dial", err)
		os.Exit(1)
	}
	defer conn.Close()
	var out json.RawMessage
	err = conn.Invoke(ctx, *path, json.RawMessage(*body), &out, grpc.CallContentSubtype("json"))
	if err != nil {
		st := status.Convert(err)
		fmt.Printf("ERROR %s %s\n", st.Code(), st.Message())
		os.Exit(1)
	}
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	fmt.Fprintln(w, string(out))
	var typed proto.Message
	switch *check {
	case "":
		return
	case "user.Response":
		typed = &user.Response{}
	case "user.LoginResponse":
		typed = &user.LoginResponse{}
	default:
		fmt.Fprintln(w, "ERROR unknown -check type", *check)
		w.Flush()
		os.Exit(2)
	}
	if err := jsonpb.Unmarshal(bytes.NewReader(out), typed); err != nil {
		fmt.Fprintln(w, "ERROR jsonpb", err)
		w.Flush()
		os.Exit(1)
	}
	fmt.Fprintf(w, "CHECK %+v\n", typed)
}

func stream(args []string) {
	fs := flag.NewFlagSet("stream", flag.ExitOnError)
	address := fs.String("address", "", "host:port")
	path := fs.String("path", "", "/service.Handler/Method")
	body := fs.String("body", "{}", "the first JSON message")
	closeSend := fs.Bool("close", false, "half-close after the messages")
	var more headers
	fs.Var(&more, "send", "a further JSON message (repeatable)")
	_ = fs.Parse(args)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, *address, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		fmt.Println("ERROR dial", err)
		os.Exit(1)
	}
	defer conn.Close()
	// gm:client/grpc/grpc.go stream(): every stream bidirectional.
	desc := &grpc.StreamDesc{StreamName: *path, ClientStreams: true, ServerStreams: true}
	st, err := conn.NewStream(ctx, desc, *path, grpc.CallContentSubtype("json"))
	if err != nil {
		s := status.Convert(err)
		fmt.Printf("ERROR %s %s\n", s.Code(), s.Message())
		os.Exit(1)
	}
	for _, m := range append([]string{*body}, more...) {
		// A failed send shows as the status RecvMsg returns.
		if err := st.SendMsg(json.RawMessage(m)); err != nil {
			break
		}
	}
	if *closeSend {
		_ = st.CloseSend()
	}
	for {
		var out json.RawMessage
		err := st.RecvMsg(&out)
		if err == io.EOF {
			fmt.Println("END OK")
			return
		}
		if err != nil {
			s := status.Convert(err)
			fmt.Printf("ERROR %s %s\n", s.Code(), s.Message())
			os.Exit(1)
		}
		fmt.Println(string(out))
	}
}

// indent: micro v2's `micro call` output for the reply on stdin.
func indent() {
	response, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "read:", err)
		os.Exit(1)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, response, "", "\t"); err != nil {
		fmt.Fprintln(os.Stderr, "indent:", err)
		os.Exit(1)
	}
	fmt.Printf("%s\n", out.String())
}

func main() {
	encoding.RegisterCodec(jsonCodec{})
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: gopeer greeter | gopeer call ... | gopeer stream ... | gopeer web | gopeer indent")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "greeter":
		serve()
	case "call":
		call(os.Args[2:])
	case "stream":
		stream(os.Args[2:])
	case "indent":
		indent()
	case "web":
		web()
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", os.Args[1])
		os.Exit(2)
	}
}
