"""A STUN responder (RFC 8489 Binding, RFC 3489 clients, RFC 5780 NAT behaviour discovery).

`message` is the pure codec, `responder` the pure decision, `limiter` the per-source rate limit, `udp` and
`tcp` the thin Twisted protocols, `service` the service that owns the listeners, `config` its settings and
`tap` the `twistd vchat-stun` plugin. Nothing here depends on signaling.
"""
