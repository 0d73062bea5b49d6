// Command loadgen drives simulated devices against an MQTT broker speaking the Twinfleet device
// contract and reports accepted updates/s and publish→accepted latency as JSON. Written in Go so
// the load generator takes little of the CPU the system under test needs.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

type result struct {
	Sent     int64   `json:"sent"`
	Accepted int64   `json:"accepted"`
	Rejected int64   `json:"rejected"`
	Elapsed  float64 `json:"elapsed"`
	Rate     float64 `json:"rate"`
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
}

type device struct {
	id      string
	client  mqtt.Client
	replies chan string // clientTokens of /accepted (prefix "+") and /rejected (prefix "-")
}

type recorder struct {
	mu        sync.Mutex
	latencies []time.Duration
	started   sync.Map // clientToken -> time.Time
	sent      atomic.Int64
	accepted  atomic.Int64
	rejected  atomic.Int64
}

func (r *recorder) reply(token string, ok bool) {
	value, found := r.started.LoadAndDelete(token)
	if !found {
		return
	}
	if !ok {
		r.rejected.Add(1)
		return
	}
	r.accepted.Add(1)
	r.mu.Lock()
	r.latencies = append(r.latencies, time.Since(value.(time.Time)))
	r.mu.Unlock()
}

func (r *recorder) percentile(p float64) float64 {
	if len(r.latencies) == 0 {
		return 0
	}
	sort.Slice(r.latencies, func(i, j int) bool { return r.latencies[i] < r.latencies[j] })
	index := int(p / 100 * float64(len(r.latencies)))
	if index >= len(r.latencies) {
		index = len(r.latencies) - 1
	}
	return float64(r.latencies[index].Microseconds()) / 1000
}

func connect(host string, port int, id, password string, rec *recorder) (*device, error) {
	dev := &device{id: id, replies: make(chan string, 1024)}
	opts := mqtt.NewClientOptions().
		AddBroker(fmt.Sprintf("tcp://%s:%d", host, port)).
		SetClientID(id).SetUsername(id).SetPassword(password).
		SetCleanSession(true).SetAutoReconnect(false).SetOrderMatters(false)
	dev.client = mqtt.NewClient(opts)
	if token := dev.client.Connect(); token.WaitTimeout(30*time.Second) && token.Error() != nil {
		return nil, token.Error()
	}
	handler := func(ok bool) mqtt.MessageHandler {
		return func(_ mqtt.Client, msg mqtt.Message) {
			var body struct {
				ClientToken string `json:"clientToken"`
			}
			if json.Unmarshal(msg.Payload(), &body) == nil && body.ClientToken != "" {
				rec.reply(body.ClientToken, ok)
				select {
				case dev.replies <- body.ClientToken:
				default:
				}
			}
		}
	}
	filters := map[string]mqtt.MessageHandler{
		id + "/state/update/accepted": handler(true),
		id + "/state/update/rejected": handler(false),
	}
	for topic, h := range filters {
		if token := dev.client.Subscribe(topic, 1, h); token.WaitTimeout(30*time.Second) && token.Error() != nil {
			return nil, token.Error()
		}
	}
	return dev, nil
}

func (d *device) publish(rec *recorder, seq int) string {
	token := d.id + "-" + strconv.Itoa(seq)
	payload := fmt.Sprintf(`{"state":{"reported":{"seq":%d,"temperature":%d}},"clientToken":%q}`, seq, 20+seq%10, token)
	rec.started.Store(token, time.Now())
	rec.sent.Add(1)
	d.client.Publish(d.id+"/state/update", 1, false, payload)
	return token
}

func main() {
	host := flag.String("host", "127.0.0.1", "broker host")
	port := flag.Int("port", 1883, "broker port")
	credsPath := flag.String("creds", "", "JSON file: device id -> password")
	mode := flag.String("mode", "closed", "closed (next update once the previous is answered) or open (fixed rate)")
	rate := flag.Float64("rate", 1000, "updates/s in open mode")
	seconds := flag.Float64("seconds", 10, "duration")
	flag.Parse()

	raw, err := os.ReadFile(*credsPath)
	if err != nil {
		panic(err)
	}
	creds := map[string]string{}
	if err := json.Unmarshal(raw, &creds); err != nil {
		panic(err)
	}
	ids := make([]string, 0, len(creds))
	for id := range creds {
		ids = append(ids, id)
	}
	sort.Strings(ids)

	rec := &recorder{}
	devices := make([]*device, len(ids))
	var wg sync.WaitGroup
	limit := make(chan struct{}, 50)
	for i, id := range ids {
		wg.Add(1)
		go func(i int, id string) {
			defer wg.Done()
			limit <- struct{}{}
			defer func() { <-limit }()
			dev, err := connect(*host, *port, id, creds[id], rec)
			if err != nil {
				panic(fmt.Sprintf("%s: %v", id, err))
			}
			devices[i] = dev
		}(i, id)
	}
	wg.Wait()

	duration := time.Duration(*seconds * float64(time.Second))
	start := time.Now()
	deadline := start.Add(duration)
	if *mode == "closed" {
		for _, dev := range devices {
			wg.Add(1)
			go func(dev *device) {
				defer wg.Done()
				for seq := 0; time.Now().Before(deadline); seq++ {
					token := dev.publish(rec, seq)
					timeout := time.After(30 * time.Second)
				wait:
					for {
						select {
						case got := <-dev.replies:
							if got == token {
								break wait
							}
						case <-timeout:
							break wait
						}
					}
				}
			}(dev)
		}
		wg.Wait()
	} else {
		total := int(*rate * *seconds)
		for n := 0; n < total; n++ {
			target := start.Add(time.Duration(float64(n) / *rate * float64(time.Second)))
			if wait := time.Until(target); wait > 0 {
				time.Sleep(wait)
			}
			devices[n%len(devices)].publish(rec, n)
		}
		grace := time.Now().Add(30 * time.Second)
		for rec.accepted.Load()+rec.rejected.Load() < rec.sent.Load() && time.Now().Before(grace) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	elapsed := time.Since(start).Seconds()
	for _, dev := range devices {
		dev.client.Disconnect(100)
	}
	out := result{
		Sent: rec.sent.Load(), Accepted: rec.accepted.Load(), Rejected: rec.rejected.Load(), Elapsed: elapsed,
		P50ms: rec.percentile(50), P99ms: rec.percentile(99),
	}
	if *mode == "closed" {
		out.Rate = float64(out.Accepted) / elapsed
	} else {
		out.Rate = float64(out.Accepted) / duration.Seconds()
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
}
