"""Session 11 call F2 (H200): which part of the review's changes slowed the fused SiLU-and-mul: variants of the
kernel made by text edits of tokenmill/kernels/triton/activation.py, each timed in one CUDA graph (358 tokens, rank 16)."""
import importlib.util, sys, numpy as np, torch
from tokenmill.kernels.lora_mapping import LoRAMapping, LoRAExpand, tiles
from tokenmill.kernels.triton import lora
src = open("tokenmill/kernels/triton/activation.py").read()
WHILE = src[src.index("    slot = tl.maximum(tl.load(token_slots"):src.index("    dtype = out_ptr.dtype.element_ty")]
body_if = WHILE[WHILE.index("        rows = valid"):WHILE.index("        slot += 1")]
def loop(header, bounds, guard, where):
    body = body_if
    if not guard:
        body = body.replace("        if tl.max(rows.to(tl.int32), axis=0) > 0:  # a slot absent from the tile adds nothing, not even 0·B\n", "")
        body = "\n".join(l[4:] if l.startswith("            ") else l for l in body.split("\n"))
    if where:
        body = body.replace("gate += tile_delta(", "gate += tl.where(rows[:, None], tile_delta(").replace("up += tile_delta(", "up += tl.where(rows[:, None], tile_delta(")
        body = body.replace(")  # fmt: skip", "), 0.0)  # fmt: skip")
    if bounds == "reduce":
        b = "    slot = tl.maximum(tl.min(tl.where(valid, slots, 2**30), axis=0), 0)\n    last = tl.max(slots, axis=0)\n"
    else:
        b = WHILE[:WHILE.index("    while")]
    if header == "while":
        return b + "    while slot <= last:\n" + body + "        slot += 1\n"
    return b.replace("    slot = ", "    first = ") + "    for slot in range(first, last + 1):\n" + body
variants = {
    "tree (while, if, scalar bounds)": WHILE,
    "for, if, scalar bounds": loop("for", "scalar", True, False),
    "for, no if, scalar bounds": loop("for", "scalar", False, False),
    "for, no if, reduced bounds (call C)": loop("for", "reduce", False, False),
    "for, where, scalar bounds": loop("for", "scalar", False, True),
    "while, where, scalar bounds": loop("while", "scalar", False, True),
}
mods = {}
for i, (name, code) in enumerate(variants.items()):
    path = f"/tmp/var_act_{i}.py"
    open(path, "w").write(src.replace(WHILE, code))
    spec = importlib.util.spec_from_file_location(f"var_act_{i}", path)
    mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod; spec.loader.exec_module(mod)
    mods[name] = mod
dev = torch.device("cuda"); T, R = 358, 16
def per_launch(fn, n=50):
    fn(); torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(n): fn()
    g.replay(); torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = 1e9
    for _ in range(3):
        s.record()
        for _ in range(10): g.replay()
        e.record(); e.synchronize(); best = min(best, s.elapsed_time(e) * 1000 / (10 * n))
    return best
rng = np.random.default_rng(0)
for slots in (1, 8):
    tok = np.zeros(T, np.int32) if slots == 1 else rng.integers(0, 8, T).astype(np.int32)
    m = LoRAMapping(*(torch.from_numpy(a.astype(np.int32)).to(dev) for a in (tok, *tiles(tok, slots))))
    out = torch.randn(T, 6144 + slots * 2 * R, dtype=torch.bfloat16, device=dev)
    y, h = out[:, :6144], out[:, 6144:].unflatten(1, (slots, 2, R))[None]
    b = torch.randn(slots, 6144, R, dtype=torch.bfloat16, device=dev) * 0.05
    ex = LoRAExpand(h, b, torch.full((slots, 2), R, dtype=torch.int32, device=dev), (3072, 3072), m)
    ref = mods["tree (while, if, scalar bounds)"].silu_and_mul(y, ex)
    for rnd in range(2):
        for name, mod in mods.items():
            err = (mod.silu_and_mul(y, ex).float() - ref.float()).abs().max().item()
            print(f"slots {slots} round {rnd}: {name}: {per_launch(lambda: mod.silu_and_mul(y, ex)):.2f} us (diff {err:.4f})", flush=True)
