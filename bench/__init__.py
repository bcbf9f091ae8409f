"""The peer benchmark of issue 6: hiperfifo against pycurl, aiohttp, httpx and curl.

`make bench` (or `python -m bench.run`) starts a private loopback nginx, runs
every contender as its own process on each workload and writes the tables to
bench/README.md. Not part of the test suite.
"""
