// Command floorgo is the machine-limit floor of the device path: MQTT in → one Redis round trip
// (GET + SET of the device's key, pipelined) → MQTT reply, with no Dapr and no twin logic, in Go
// so the floor measures the broker, Redis and the kernel rather than an interpreter. It takes the
// same shared subscription as the twin-store and answers on the device's /accepted topic, so the
// same load generator drives it.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/redis/go-redis/v9"
)

func main() {
	mqttPort := flag.Int("mqtt-port", 1883, "broker port (loopback)")
	redisPort := flag.Int("redis-port", 6379, "Redis port (loopback)")
	user := flag.String("user", "", "broker user")
	password := flag.String("password", "", "broker password")
	connections := flag.Int("connections", 2, "MQTT connections sharing the subscription")
	flag.Parse()

	store := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", *redisPort), PoolSize: 256})
	ctx := context.Background()
	if err := store.Ping(ctx).Err(); err != nil {
		panic(err)
	}
	clients := make([]mqtt.Client, *connections)
	for i := range clients {
		var client mqtt.Client
		handle := func(_ mqtt.Client, msg mqtt.Message) {
			device, _, _ := strings.Cut(msg.Topic(), "/")
			var body struct {
				ClientToken string `json:"clientToken"`
			}
			_ = json.Unmarshal(msg.Payload(), &body)
			pipe := store.Pipeline()
			pipe.Get(ctx, "floor:"+device)
			pipe.Set(ctx, "floor:"+device, msg.Payload(), 0)
			if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
				fmt.Fprintln(os.Stderr, "redis:", err)
				return
			}
			reply, _ := json.Marshal(map[string]any{"clientToken": body.ClientToken, "version": 1})
			client.Publish(device+"/state/update/accepted", 1, false, reply)
		}
		opts := mqtt.NewClientOptions().
			AddBroker(fmt.Sprintf("tcp://127.0.0.1:%d", *mqttPort)).
			SetClientID(fmt.Sprintf("bench-floorgo-%d", i)).SetUsername(*user).SetPassword(*password).
			SetCleanSession(true).SetOrderMatters(false).SetMaxResumePubInFlight(1000).
			SetWriteTimeout(10 * time.Second)
		client = mqtt.NewClient(opts)
		if token := client.Connect(); token.WaitTimeout(20*time.Second) && token.Error() != nil {
			panic(token.Error())
		}
		if token := client.Subscribe("$share/floor/+/state/update", 1, handle); token.WaitTimeout(20*time.Second) && token.Error() != nil {
			panic(token.Error())
		}
		clients[i] = client
	}
	fmt.Println("ready")
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	for _, client := range clients {
		client.Disconnect(100)
	}
}
