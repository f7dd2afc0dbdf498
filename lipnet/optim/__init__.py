"""Automatic optimisers (each a `torch.optim.Optimizer`) chosen by name, and the path-lifting rescaling."""
