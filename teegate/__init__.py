"""teegate: release secrets only to workloads that prove, with hardware-signed evidence, what they are."""

__version__ = "0.1.0"
__all__ = ["__version__"]
