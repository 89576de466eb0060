"""The durable store: what must survive a restart (bans, reports, moderation flags), behind one interface.

`records` holds the plain values (no Twisted), `interface` the `IStore` every implementation provides,
`sqlite` the default implementation in the data directory, `redis` the one several nodes share, `memory` an
in-memory one for tests, `service` the service that opens the store and purges snapshots as they fall due,
`migrate` the command that copies a single-node store into Redis,
`testing` the contract suite every implementation must pass, and `redis_testing` a real redis-server for
tests. This module imports nothing, so that `records` stays pure.
"""
