"""Several vchat processes as one service, through Redis (docs/cluster.md)."""
