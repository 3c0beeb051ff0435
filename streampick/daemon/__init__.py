"""The streaming daemon: watch a folder, pick micrographs as they land, publish over ZeroMQ.

``watcher`` and ``completeness`` decide when a file is whole; ``journal`` decides what is new work (exactly
once, across crashes); ``workqueue`` orders it (new arrivals before backlog before re-picks); ``pipeline``
picks one micrograph with the engine; ``publisher`` and ``control`` are the ZeroMQ edges; ``service``
wires them together.
"""
