// Command gonats is go-micro v2.9.1's NATS broker (broker/nats/nats.go),
// both halves, on Debian's nats.go (golang-github-nats-io-go-nats-dev),
// built at test time in GOPATH mode, offline. go-micro itself cannot be
// built offline; this is its code path, with encoding/json of
// broker.Message{Header map[string]string; Body []byte} as the payload and
// the topic as the subject.
//
//	gonats subscribe -server URL -topic T [-queue Q] [-count N]
//	    nc.Subscribe (nc.QueueSubscribe with -queue), then nc.Flush; prints
//	    "READY". Each message: json.Unmarshal of the payload (on failure
//	    "BAD <error>", the handler not called, as go-micro logs it), else
//	    "MSG topic=<subject> ct=<Content-Type> from=<Micro-From-Service> foo=<Foo> body=<body>".
//	    Exits after -count messages, or when stdin closes.
//
//	gonats publish -server URL -topic T -body B [-ct TYPE] [-from NAME]
//	    The header go-micro's client sends (Content-Type, Micro-Topic,
//	    Micro-From-Service), json.Marshal, nc.Publish(topic, payload),
//	    nc.Flush; prints "SENT".
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/nats-io/nats.go"
)

type brokerMessage struct {
	Header map[string]string
	Body   []byte
}

func connect(server string) *nats.Conn {
	nc, err := nats.Connect(server)
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		os.Exit(1)
	}
	return nc
}

func subscribe(args []string) {
	fs := flag.NewFlagSet("subscribe", flag.ExitOnError)
	server := fs.String("server", nats.DefaultURL, "NATS server")
	topic := fs.String("topic", "", "topic")
	queue := fs.String("queue", "", "queue group")
	count := fs.Int("count", 0, "exit after this many messages (0: until stdin closes)")
	_ = fs.Parse(args)
	nc := connect(*server)
	var mu sync.Mutex
	delivered := 0
	done := make(chan struct{})
	// gm:broker/nats/nats.go Subscribe, 185-240.
	fn := func(msg *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		var m brokerMessage
		if err := json.Unmarshal(msg.Data, &m); err != nil {
			fmt.Printf("BAD %v\n", err)
			return
		}
		fmt.Printf("MSG topic=%s ct=%s from=%s foo=%s body=%s\n", msg.Subject, m.Header["Content-Type"],
			m.Header["Micro-From-Service"], m.Header["Foo"], string(m.Body))
		delivered++
		if *count > 0 && delivered == *count {
			close(done)
		}
	}
	var err error
	if *queue != "" {
		_, err = nc.QueueSubscribe(*topic, *queue, fn)
	} else {
		_, err = nc.Subscribe(*topic, fn)
	}
	if err == nil {
		err = nc.Flush()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "subscribe:", err)
		os.Exit(1)
	}
	fmt.Println("READY")
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	<-done
}

func publish(args []string) {
	fs := flag.NewFlagSet("publish", flag.ExitOnError)
	server := fs.String("server", nats.DefaultURL, "NATS server")
	topic := fs.String("topic", "", "topic")
	body := fs.String("body", "", "message body")
	ct := fs.String("ct", "application/json", "content type")
	from := fs.String("from", "go.micro.srv.gopub", "Micro-From-Service")
	_ = fs.Parse(args)
	nc := connect(*server)
	header := map[string]string{"Content-Type": *ct, "Micro-Topic": *topic, "Micro-From-Service": *from}
	b, err := json.Marshal(&brokerMessage{Header: header, Body: []byte(*body)})
	if err == nil {
		err = nc.Publish(*topic, b)
	}
	if err == nil {
		err = nc.Flush()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "publish:", err)
		os.Exit(1)
	}
	fmt.Println("SENT")
	nc.Close()
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: gonats subscribe ... | gonats publish ...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "subscribe":
		subscribe(os.Args[2:])
	case "publish":
		publish(os.Args[2:])
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", os.Args[1])
		os.Exit(2)
	}
}
