"""The durable store: what must survive a restart (bans, reports, moderation flags), behind one interface.

`records` holds the plain values (no Twisted), `interface` the `IStore` every implementation provides,
`sqlite` the default implementation in the data directory, `memory` an in-memory one for tests, `service`
the service that opens the store and purges snapshots as they fall due, and `testing` the contract suite
every implementation must pass. This module imports nothing, so that `records` stays pure.
"""
