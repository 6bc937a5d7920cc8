"""alexnet-cli: the 2012 AlexNet paper end to end (prep, train, eval, predict)."""

__version__ = "0.1.0"
