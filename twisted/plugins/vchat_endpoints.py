"""vchat's server endpoint string parsers, found by `serverFromString` as Twisted's own are:
`reuseport:PORT[:interface=ADDR][:backlog=N]` (docs/cluster.md, "Many processes on one machine")."""

from vchat.reuseport import ReusePortParser

reuseport = ReusePortParser()
