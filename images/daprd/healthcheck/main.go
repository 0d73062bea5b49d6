// healthcheck exits 0 when daprd's health endpoint answers 2xx within two seconds: the HEALTHCHECK
// of the FROM-scratch daprd image, which has no shell or curl. The port is $DAPR_HTTP_PORT (3500).
package main

import (
	"net/http"
	"os"
	"time"
)

func main() {
	port := os.Getenv("DAPR_HTTP_PORT")
	if port == "" {
		port = "3500"
	}
	client := http.Client{Timeout: 2 * time.Second}
	response, err := client.Get("http://127.0.0.1:" + port + "/v1.0/healthz")
	if err != nil {
		os.Exit(1)
	}
	response.Body.Close()
	if response.StatusCode >= 300 {
		os.Exit(1)
	}
}
