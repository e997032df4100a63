"""The bridge: the WebSocket to the backend on one side, Redis and the workers on the other."""
