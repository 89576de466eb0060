"""vchat-bot: simulated visitors that load-test a vchat server over its real wire protocol.

`behaviour` (random choices) and `visitor` (one visitor's decisions) are pure, as are `fakesdp` and `stats`;
`websocket` is a bot's connection, `fleet` runs many bots on one reactor, and `cli` is the `vchat-bot` command.
"""
