"""Run a script (or `-m tokenmill`) with A/B switches: FAST_ACCUM=0 turns torch._scaled_mm's fast accumulation
off; DEEP=0 turns the fp8 GEMV's deep one-wave launch shape off."""
import functools, os, runpy, sys, torch
if os.environ.get("FAST_ACCUM") == "0":
    torch._scaled_mm = functools.partial(torch._scaled_mm, use_fast_accum=False)
if os.environ.get("DEEP") == "0":
    from tokenmill.kernels.triton import fp8_gemv
    fp8_gemv.gemv = functools.partial(fp8_gemv.gemv, deep=False)
if sys.argv[1] == "-m":
    sys.argv = [sys.argv[2], *sys.argv[3:]]
    runpy.run_module(sys.argv[0], run_name="__main__")
else:
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
