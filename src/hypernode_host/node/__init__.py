"""The node's processes: up's supervisor, its children's entry, signals, the node's own Redis, the demo."""
