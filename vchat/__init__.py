"""vchat: a server for random one-to-one video chat."""

__version__ = "0.1.0"
