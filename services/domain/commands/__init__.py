"""Durable commands ("proxied RPC"): a component queues a command for a device with a time to live;
the cloud delivers it whenever the device is online, keeps the device's first result, and expires it
when the device stays away past its TTL.

Lifecycle (every transition is a pure function of the record and `now`, the cloud's clock):
QUEUED -> DELIVERED (published to `{id}/commands/{cmd}`, possibly again) -> SUCCEEDED | FAILED (the
device's first result); QUEUED | DELIVERED -> EXPIRED (at `expiresAt`) | CANCELLED. The last four
are final: a later result, a second result or a cancel changes nothing.

Also here: request validation (400/413), the message a device receives and the result it sends,
the per-device index that lets `sync` find a device's pending commands without a scan, and the due
shards that tell the periodic sweep which devices to look at.
"""
