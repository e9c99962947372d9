"""Generate the Swin window-attention reference that tests/test_swin_windows.py checks.

NOT run by the tests. Needs timm and transformers (throwaway venv), from the repository root::

    /work/refvenv/bin/python tests/data/make_swin_window_reference.py

Two small Swins with random weights (random LayerNorm weights too, as make_reference.py):

* timm ``SwinTransformer(img_size=(48, 40), patch_size=4, embed_dim=24, depths=(2, 2, 2),
  num_heads=(2, 4, 4), window_size=4, num_classes=5, strict_img_size=False)`` -> the state_dict in
  ``tests/data/lib_timm_swin_windows.safetensors``. Stage grids at 48 x 40: 12 x 10 (padded to
  12 x 12), 6 x 5 (padded to 8 x 8), 3 x 3 (window narrowed to 3, no shift); odd blocks shifted by 2.
* transformers ``SwinForImageClassification`` (the same with two stages, ``depths=(2, 2)``,
  ``attn_implementation="eager"``) -> ``tests/data/hf_swin_windows/`` (``save_pretrained``). Two
  stages: transformers 5.24 narrows a layer's window to a smaller grid but not its relative position
  bias table, so its forward fails on a 3 x 3 stage with window 4.

Everything the reference computes comes from the libraries' own code or by hand, never from the
auditor: each block's window layout (which token sits in which window slot, -1 for padding) is read
by running the library's own partition code on token indices (timm: the block's ``_attn`` with its
``attn`` replaced by a recorder; transformers: the layer's ``maybe_pad``, ``cyclic_shift`` and
``window_partition``), the shift mask is the one the library passed to its attention, and the
probabilities are ``softmax(q k^T * scale + relative position bias + shift mask)`` by hand from each
attention's input (checked against timm's non-fused softmax and transformers' ``output_attentions``).
The expected window-attention map is then computed in numpy (:func:`excess_map`): the attention each
token receives from its window's real queries, minus and divided by the uniform share
(``softmax(mask)``), mean over heads, each stage's token repeated over the ``2**s x 2**s`` patches it
merged. Written to ``tests/data/swin_window_reference.npz`` per ``{timm,hf}/{native,big}`` (48 x 40,
and 120 x 80: a 30 x 20 patch grid): ``shape``, ``logits``, ``per_layer`` ``[B, L, 12, 10]`` and per
block ``i``: ``windows.i``, ``mask.i`` (empty without shift), ``probs.i`` ``[B, nW, heads, N, N]``,
``grid.i``, ``window.i`` (window height, width, shift height, width as the library ran them),
for transformers also ``own_attention.i`` (its ``output_attentions`` of each stage's last block ``i``);
plus the versions.
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

DATA = Path(__file__).resolve().parent
sys.path.insert(0, str(DATA))

import timm  # noqa: E402
import transformers  # noqa: E402
from timm.models.swin_transformer import SwinTransformer  # noqa: E402
from transformers.models.swin.modeling_swin import window_partition as hf_window_partition  # noqa: E402

from make_library_reference import randomise_hf  # noqa: E402
from make_reference import levels_to_input, randomise, save_weights  # noqa: E402
from make_vit_variants_reference import pattern_levels  # noqa: E402

SIZES = {"native": (2, 3, 48, 40), "big": (1, 3, 120, 80)}
TIMM_CFG = dict(img_size=(48, 40), patch_size=4, embed_dim=24, depths=(2, 2, 2), num_heads=(2, 4, 4), window_size=4,
                num_classes=5, strict_img_size=False)


def excess_map(probs: list[np.ndarray], windows: list[np.ndarray], masks: list[np.ndarray | None],
               grids: list[tuple[int, int]], patch: tuple[int, int]) -> np.ndarray:
    """``[B, L, H, W]``: per block, received attention beyond the uniform share, mean over heads, on the patch grid."""
    out = []
    for p, win, mask, grid in zip(probs, windows, masks, grids):
        b, nw, heads, n, _ = p.shape
        uniform = np.zeros((nw, n, n)) if mask is None else mask.astype(np.float64)
        uniform = np.exp(uniform - uniform.max(-1, keepdims=True))
        uniform /= uniform.sum(-1, keepdims=True)
        received = np.zeros((b, heads, grid[0] * grid[1]))
        share = np.zeros(grid[0] * grid[1])
        for w in range(nw):
            real = win[w] >= 0
            for k in range(n):
                t = win[w, k]
                if t < 0:
                    continue
                received[:, :, t] += p[:, w][:, :, real, k].sum(-1)
                share[t] += uniform[w, real, k].sum()
        excess = ((received - share) / share).mean(1).reshape(b, *grid)
        stride = 1  # patch cells per token: the grid halved (rounding up) until it is this stage's
        while -(-patch[0] // stride) != grid[0] or -(-patch[1] // stride) != grid[1]:
            stride *= 2
        up = np.kron(excess, np.ones((stride, stride)))[:, :patch[0], :patch[1]]
        out.append(up)
    return np.stack(out, 1).astype(np.float32)


def manual_probs(q_in: torch.Tensor, qk: tuple[torch.Tensor, torch.Tensor], heads: int, bias: torch.Tensor,
                 mask: torch.Tensor | None) -> torch.Tensor:
    """``softmax(q k^T * scale + bias + mask)`` ``[B*nW, heads, N, N]`` from the windows ``[B*nW, N, C]``."""
    q, k = qk
    bw, n, c = q_in.shape
    q = q.reshape(bw, n, heads, -1).transpose(1, 2)
    k = k.reshape(bw, n, heads, -1).transpose(1, 2)
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1) + bias
    if mask is not None:
        nw = mask.shape[0]
        scores = (scores.view(bw // nw, nw, heads, n, n) + mask[None, :, None]).view(bw, heads, n, n)
    return scores.softmax(-1)


class WindowRecorder(nn.Module):
    """Stands in for a timm block's ``attn``: keeps the windows and mask it is given, returns the windows."""

    def forward(self, x, mask=None):
        self.x, self.mask = x, mask
        return x


def timm_layout(block: nn.Module, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """The block's own ``_attn`` on token indices + 1 (0 = its padding)."""
    attn, rec = block.attn, WindowRecorder()
    block.attn = rec
    try:
        block._attn(torch.arange(1, grid[0] * grid[1] + 1, dtype=torch.float32).view(1, *grid, 1))
    finally:
        block.attn = attn
    windows = rec.x[..., 0].round().long().numpy() - 1
    return windows, None if rec.mask is None else rec.mask.numpy()


def timm_reference(model: nn.Module, x: torch.Tensor, out: dict, key: str) -> None:
    seen = []
    hooks = [blk.attn.register_forward_pre_hook(lambda m, a, kw: seen.append((a[0], kw.get("mask"))), with_kwargs=True)
             for st in model.layers for blk in st.blocks]
    softmaxes = []
    hooks += [blk.attn.softmax.register_forward_hook(lambda m, a, o: softmaxes.append(o))
              for st in model.layers for blk in st.blocks]
    with torch.no_grad():
        logits = model(x)
    for h in hooks:
        h.remove()
    patch = (x.shape[-2] // 4, x.shape[-1] // 4)
    blocks = [blk for st in model.layers for blk in st.blocks]
    grids, probs, windows, masks = [], [], [], []
    g = patch
    for s, st in enumerate(model.layers):
        if s:
            g = (-(-g[0] // 2), -(-g[1] // 2))
        grids += [g] * len(st.blocks)
    for i, (blk, (xw, mask), own) in enumerate(zip(blocks, seen, softmaxes)):
        a = blk.attn
        with torch.no_grad():
            q, k, _ = a.qkv(xw).chunk(3, dim=-1)
            bias = a.relative_position_bias_table[a.relative_position_index.view(-1)].view(a.window_area, a.window_area, -1)
            p = manual_probs(xw, (q, k), a.num_heads, bias.permute(2, 0, 1)[None], mask)
        assert torch.allclose(p, own, atol=1e-6), "manual softmax differs from timm's"
        win, m = timm_layout(blk, grids[i])
        assert (mask is None) == (m is None) and (m is None or np.array_equal(m, mask.numpy()))
        nw = win.shape[0]
        probs.append(p.numpy().reshape(-1, nw, *p.shape[1:]))
        windows.append(win)
        masks.append(m)
    sizes = [(*map(int, b.window_size), *map(int, b.shift_size)) for b in blocks]
    store(out, key, x, logits, probs, windows, masks, grids, patch, sizes)


def store(out, key, x, logits, probs, windows, masks, grids, patch, sizes) -> None:
    out[f"{key}/shape"] = np.array(x.shape)
    out[f"{key}/logits"] = logits.numpy()
    out[f"{key}/per_layer"] = excess_map(probs, windows, masks, grids, patch)
    for i, (p, w, m, g) in enumerate(zip(probs, windows, masks, grids)):
        out[f"{key}/probs.{i}"] = p.astype(np.float32)
        out[f"{key}/windows.{i}"] = w.astype(np.int32)
        out[f"{key}/mask.{i}"] = np.zeros(0, np.float32) if m is None else m.astype(np.float32)
        out[f"{key}/grid.{i}"] = np.array(g)
        out[f"{key}/window.{i}"] = np.array(sizes[i])


def hf_reference(hf: nn.Module, x: torch.Tensor, out: dict, key: str) -> None:
    layers = [blk for st in hf.swin.encoder.layers for blk in st.blocks]
    seen = []
    hooks = [blk.attention.register_forward_pre_hook(lambda m, a, kw: seen.append((a[0], a[1] if len(a) > 1 else None)),
                                                     with_kwargs=True) for blk in layers]
    with torch.no_grad():
        res = hf(pixel_values=x, output_attentions=True)
    for h in hooks:
        h.remove()
    patch = (-(-x.shape[-2] // 4), -(-x.shape[-1] // 4))
    grids, probs, windows, masks = [], [], [], []
    g = patch
    for s, st in enumerate(hf.swin.encoder.layers):
        if s:
            g = (-(-g[0] // 2), -(-g[1] // 2))
        grids += [g] * len(st.blocks)
    last = np.cumsum([len(st.blocks) for st in hf.swin.encoder.layers]) - 1
    for i, (blk, (xw, mask)) in enumerate(zip(layers, seen)):
        a = blk.attention
        with torch.no_grad():
            p = manual_probs(xw, (a.q_proj(xw), a.k_proj(xw)), a.num_attention_heads, a.relative_position_bias(), mask)
        if i in last:  # transformers returns the last block's attention of each stage
            assert torch.allclose(p, res.attentions[list(last).index(i)], atol=1e-6), "manual softmax differs from HF's"
        idx = torch.arange(1, grids[i][0] * grids[i][1] + 1, dtype=torch.float32).view(1, *grids[i], 1)
        padded, _ = blk.maybe_pad(idx, *grids[i])
        win = hf_window_partition(blk.cyclic_shift(padded), blk.window_size).reshape(-1, blk.window_size ** 2)
        m = blk.get_attn_mask(padded.shape[1], padded.shape[2], dtype=torch.float32, device=torch.device("cpu"))
        assert (mask is None) == (m is None) and (m is None or torch.equal(m, mask))
        windows.append(win.round().long().numpy() - 1)
        masks.append(None if m is None else m.numpy())
        probs.append(p.numpy().reshape(-1, windows[-1].shape[0], *p.shape[1:]))
    for stage, i in enumerate(last):  # transformers' own output_attentions, as returned
        out[f"{key}/own_attention.{i}"] = res.attentions[stage].numpy().reshape(probs[i].shape)
    sizes = [(int(b.window_size),) * 2 + (int(b.shift_size),) * 2 for b in layers]
    store(out, key, x, res.logits, probs, windows, masks, grids, patch, sizes)


def main() -> None:
    torch.set_num_threads(1)
    out: dict[str, np.ndarray] = {}
    model = SwinTransformer(**TIMM_CFG).eval()
    randomise(model, seed=90)
    save_weights(model, DATA / "lib_timm_swin_windows.safetensors")
    cfg = transformers.SwinConfig(image_size=48, patch_size=4, embed_dim=24, depths=[2, 2], num_heads=[2, 4],
                                  window_size=4, num_labels=5, attn_implementation="eager")
    hf = transformers.SwinForImageClassification(cfg).eval()
    randomise_hf(hf, seed=91)
    hf.config.architectures = [type(hf).__name__]
    hf.save_pretrained(DATA / "hf_swin_windows")
    for size, shape in SIZES.items():
        x = levels_to_input(pattern_levels(shape))
        timm_reference(model, x, out, f"timm/{size}")
        hf_reference(hf, x, out, f"hf/{size}")
    out["versions"] = np.array([f"{n}=={version(n)}" for n in ("torch", "timm", "transformers", "numpy")])
    np.savez_compressed(DATA / "swin_window_reference.npz", **out)
    print({k: v.shape for k, v in out.items() if k.endswith("per_layer")})


if __name__ == "__main__":
    main()
