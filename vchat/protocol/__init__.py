"""The vchat wire protocol: codecs, message validation and the WebSocket endpoint."""
