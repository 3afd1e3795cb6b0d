// go-micro v2.9.1's http broker (broker/http.go), both halves, for the
// broker interop tests. go-micro itself cannot be built offline (its
// dependencies are not packaged), so this is its code path for path, with
// only the standard library: the envelope is encoding/json of
// broker.Message{Header map[string]string; Body []byte}.
//
//	gopeer broker-subscribe -topic T [-queue Q] [-count N]
//	    ServeHTTP of go-micro's http broker on 127.0.0.1:0: 405 for anything
//	    but POST, json.Unmarshal of the body (500 on failure), the
//	    Micro-Topic header (500 "Topic not found"), the ?id= query, then the
//	    handler, and 200 whatever it did. Prints "READY <address> <node id>"
//	    (node id <topic>-<uuid>; the test registers that node as go-micro
//	    would), then one line per message delivered:
//	    "MSG topic=<t> ct=<content type> from=<Micro-From-Service> foo=<Foo> body=<body>".
//	    Exits after -count messages, or when stdin closes.
//
//	gopeer broker-publish -topic T -body B [-ct TYPE] [-node ID@ADDRESS@VERSION]...
//	    Publish of go-micro's http broker over the nodes given (what its
//	    registry lookup of micro.http.broker returns): the header with
//	    Micro-Topic set, json.Marshal of the message, then for each version
//	    ff.http.broadcast a POST to every node, for each other version (a
//	    queue group) a POST to one random node, as
//	    POST http://<address>/?id=<url.QueryEscape(id)> with Content-Type
//	    application/json. go-micro ignores the answer; this prints
//	    "SENT <id> <status>" for each, for the test to see.
package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	mrand "math/rand"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// brokerMessage is go-micro's broker.Message.
type brokerMessage struct {
	Header map[string]string
	Body   []byte
}

// brokerError is go-micro's errors.Error JSON (fields in declaration order).
func brokerError(code int, detail string) string {
	d, _ := json.Marshal(detail)
	s, _ := json.Marshal(http.StatusText(code))
	return fmt.Sprintf(`{"id":"go.micro.broker","code":%d,"detail":%s,"status":%s}`, code, d, s)
}

func uuid4() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = (b[6] & 0x0f) | 0x40
	b[8] = (b[8] & 0x3f) | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func brokerSubscribe(args []string) {
	fs := flag.NewFlagSet("broker-subscribe", flag.ExitOnError)
	topic := fs.String("topic", "", "topic")
	count := fs.Int("count", 0, "exit after this many messages (0: until stdin closes)")
	_ = fs.String("queue", "", "queue (registered by the test)")
	_ = fs.Parse(args)
	id := *topic + "-" + uuid4()

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}
	var mu sync.Mutex
	delivered := 0
	done := make(chan struct{})
	out := bufio.NewWriter(os.Stdout)
	handler := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		// gm:broker/http.go ServeHTTP, 293-348.
		if req.Method != "POST" {
			http.Error(w, brokerError(400, "Method not allowed"), http.StatusMethodNotAllowed)
			return
		}
		defer req.Body.Close()
		req.ParseForm()
		b, err := io.ReadAll(req.Body)
		if err != nil {
			w.WriteHeader(500)
			w.Write([]byte(brokerError(500, "Error reading request body: "+err.Error())))
			return
		}
		var m *brokerMessage
		if err = json.Unmarshal(b, &m); err != nil {
			w.WriteHeader(500)
			w.Write([]byte(brokerError(500, "Error parsing request body: "+err.Error())))
			return
		}
		t := m.Header["Micro-Topic"]
		if len(t) == 0 {
			w.WriteHeader(500)
			w.Write([]byte(brokerError(500, "Topic not found")))
			return
		}
		if t != *topic || req.Form.Get("id") != id {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, "MSG topic=%s ct=%s from=%s foo=%s body=%s\n", t, m.Header["Content-Type"],
			m.Header["Micro-From-Service"], m.Header["Foo"], string(m.Body))
		out.Flush()
		delivered++
		if *count > 0 && delivered == *count {
			close(done)
		}
	})
	go http.Serve(lis, handler)
	fmt.Printf("READY %s %s\n", lis.Addr().String(), id)
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	<-done
	// The last answer goes out before the process ends.
	time.Sleep(100 * time.Millisecond)
}

func brokerPublish(args []string) {
	fs := flag.NewFlagSet("broker-publish", flag.ExitOnError)
	topic := fs.String("topic", "", "topic")
	body := fs.String("body", "", "message body")
	ct := fs.String("ct", "application/json", "content type")
	from := fs.String("from", "go.micro.srv.gopub", "Micro-From-Service")
	var nodes []string
	fs.Func("node", "ID@ADDRESS@VERSION", func(s string) error { nodes = append(nodes, s); return nil })
	_ = fs.Parse(args)

	// gm:client/grpc/grpc.go Publish: Content-Type, Micro-Topic, the
	// context's metadata (Micro-From-Service from the service wrapper).
	header := map[string]string{"Content-Type": *ct, "Micro-Topic": *topic, "Micro-From-Service": *from}
	b, err := json.Marshal(&brokerMessage{Header: header, Body: []byte(*body)})
	if err != nil {
		fmt.Fprintln(os.Stderr, "marshal:", err)
		os.Exit(1)
	}
	type node struct{ id, address string }
	byVersion := map[string][]node{}
	var versions []string
	for _, n := range nodes {
		parts := strings.SplitN(n, "@", 3)
		if len(parts) != 3 {
			fmt.Fprintln(os.Stderr, "bad -node", n)
			os.Exit(2)
		}
		if _, ok := byVersion[parts[2]]; !ok {
			versions = append(versions, parts[2])
		}
		byVersion[parts[2]] = append(byVersion[parts[2]], node{parts[0], parts[1]})
	}
	client := &http.Client{Timeout: 10 * time.Second}
	pub := func(n node) {
		uri := "http://" + n.address + "/?id=" + url.QueryEscape(n.id)
		r, err := client.Post(uri, "application/json", bytes.NewReader(b))
		if err != nil {
			fmt.Printf("SENT %s error %v\n", n.id, err)
			return
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		fmt.Printf("SENT %s %d\n", n.id, r.StatusCode)
	}
	mrand.Seed(time.Now().UnixNano())
	for _, version := range versions {
		ns := byVersion[version]
		if version == "ff.http.broadcast" {
			for _, n := range ns {
				pub(n)
			}
			continue
		}
		pub(ns[mrand.Int()%len(ns)])
	}
}

// The broker modes run before peer.go's main (which knows the others).
func init() {
	if len(os.Args) < 2 {
		return
	}
	switch os.Args[1] {
	case "broker-subscribe":
		brokerSubscribe(os.Args[2:])
		os.Exit(0)
	case "broker-publish":
		brokerPublish(os.Args[2:])
		os.Exit(0)
	}
}
