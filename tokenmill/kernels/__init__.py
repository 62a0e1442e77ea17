"""Compute kernels, in two backends behind one interface (`ops.Ops`, chosen once by `ops.select_ops`):
PyTorch references (`reference`) that run anywhere, and Triton kernels (`triton/`, imported only when
chosen) that each equal their reference in tests."""
