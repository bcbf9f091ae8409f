"""Where URLs come from: the FIFO, and any other source behind the same interface."""
