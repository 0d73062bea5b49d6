// The cluster tests' app, static and stdlib only, so that it runs in a FROM-scratch image:
// `testapp serve [addr]` answers every request with the pod's hostname and the path;
// `testapp get URL [n]` fetches URL up to n times (1 s apart), prints status and body, exits 0 on a 2xx;
// `testapp fail` exits 1 at once (a release that never becomes ready).
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Println("usage: testapp serve [addr] | get URL [n] | fail")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		addr := ":8080"
		if len(os.Args) > 2 {
			addr = os.Args[2]
		}
		host, _ := os.Hostname()
		http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from %s (%s)\n", host, r.URL.Path)
		})
		fmt.Println("listening on", addr)
		if err := http.ListenAndServe(addr, nil); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
	case "get":
		n := 1
		if len(os.Args) > 3 {
			n, _ = strconv.Atoi(os.Args[3])
		}
		client := &http.Client{Timeout: 3 * time.Second}
		for i := 0; i < n; i++ {
			if i > 0 {
				time.Sleep(time.Second)
			}
			resp, err := client.Get(os.Args[2])
			if err != nil {
				fmt.Println("error:", err)
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			fmt.Printf("%d %s\n", resp.StatusCode, strings.TrimRight(string(body), "\n"))
			if resp.StatusCode/100 == 2 {
				return
			}
		}
		os.Exit(1)
	case "fail":
		fmt.Println("failing on purpose")
		os.Exit(1)
	default:
		fmt.Println("unknown command", os.Args[1])
		os.Exit(2)
	}
}
