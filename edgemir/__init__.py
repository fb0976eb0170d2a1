"""edgemir: ultra-light deep music analysis, live on a Raspberry Pi."""

__version__ = "0.1.0"
