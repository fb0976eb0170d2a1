"""edgemir's offline train-and-trim module (run from a checkout: ``python -m train ...``)."""
