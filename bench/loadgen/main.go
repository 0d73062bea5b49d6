// Command loadgen drives simulated devices against an MQTT broker speaking the Twinfleet device
// contract and reports accepted updates/s and publish→accepted latency as JSON. Written in Go so
// the load generator takes little of the CPU the system under test needs.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
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

func (r *recorder) reset() {
	r.mu.Lock()
	r.latencies = nil
	r.mu.Unlock()
	r.sent.Store(0)
	r.accepted.Store(0)
	r.rejected.Store(0)
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

func connect(host string, port int, id, password string, source net.IP, rec *recorder) (*device, error) {
	dev := &device{id: id, replies: make(chan string, 16)}
	opts := mqtt.NewClientOptions().
		AddBroker(fmt.Sprintf("tcp://%s:%d", host, port)).
		SetClientID(id).SetUsername(id).SetPassword(password).
		SetCleanSession(true).SetAutoReconnect(false).SetOrderMatters(false).
		SetKeepAlive(5 * time.Minute).SetConnectTimeout(60 * time.Second)
	if source != nil {
		opts.SetDialer(&net.Dialer{Timeout: 60 * time.Second, LocalAddr: &net.TCPAddr{IP: source}})
	}
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
	active := flag.Int("active", 0, "devices that send (the first N by id; 0: all); the others stay connected, idle")
	sources := flag.Int("sources", 1, "loopback source addresses to spread the connections over (127.0.0.1 .. 127.0.0.N)")
	hello := flag.Bool("hello", false, "every device sends one update once connected (so each has a twin)")
	settle := flag.Float64("settle", 0, "seconds to stay connected and idle before the load (prints a line when connected)")
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
			var source net.IP
			if *sources > 1 {
				source = net.IPv4(127, 0, byte(i%*sources/250), byte(1+i%*sources%250))
			}
			dev, err := connect(*host, *port, id, creds[id], source, rec)
			if err != nil {
				panic(fmt.Sprintf("%s: %v", id, err))
			}
			devices[i] = dev
		}(i, id)
	}
	wg.Wait()
	if *hello {
		for n, dev := range devices {
			wg.Add(1)
			go func(dev *device, n int) {
				defer wg.Done()
				limit <- struct{}{}
				defer func() { <-limit }()
				token := dev.publish(rec, -1-n)
				timeout := time.After(60 * time.Second)
				for {
					select {
					case got := <-dev.replies:
						if got == token {
							return
						}
					case <-timeout:
						return
					}
				}
			}(dev, n)
		}
		wg.Wait()
		rec.reset()
	}
	if *settle > 0 {
		fmt.Fprintf(os.Stdout, "{\"connected\": %d}\n", len(devices))
		time.Sleep(time.Duration(*settle * float64(time.Second)))
	}
	senders := devices
	if *active > 0 && *active < len(devices) {
		senders = devices[:*active]
	}

	duration := time.Duration(*seconds * float64(time.Second))
	start := time.Now()
	deadline := start.Add(duration)
	if *mode == "closed" {
		for _, dev := range senders {
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
			senders[n%len(senders)].publish(rec, n)
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
