"""hiperfifo: fetch the URLs written into a named pipe, libcurl's hiperfifo.c done as a service."""

__version__ = "0.1.0"
