"""lipnet: Lipschitz-bounded neural controllers, trained by automatic optimisers, certified and exported."""

__version__ = "0.1.0"
__all__ = ["__version__"]
