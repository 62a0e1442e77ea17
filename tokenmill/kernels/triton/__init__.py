"""The Triton kernel backend. Importing this package imports `triton`, so only `ops.select_ops` does,
and only when that backend is chosen; each kernel's PyTorch reference is in `kernels.reference`."""
