"""The fit's tensor path on the device: the batched face choice (:func:`choose_faces_torch`),
the blur windows (:func:`crop_windows_torch`) and the blur measure
(:func:`laplacian_variance_torch`), each the device twin of its :mod:`vox3d.fitting.quality`
reference with the same float64 arithmetic: the same choices and windows (blur sums may
differ in the last bits).

:meth:`vox3d.fitting.fit.Fitter.fit_batch_tensor` runs them on every batch (parity: the module
docstring of :mod:`vox3d.fitting.fit`); the regressor's render cache (:mod:`vox3d.fitting.regressor_cache`)
chooses its faces with :func:`choose_faces_torch`.  torch is imported inside the functions,
so importing this module (with :mod:`vox3d.fitting.fit`, at DAG time) stays light.
"""

from __future__ import annotations

from vox3d.fitting.quality import MIN_BLUR_PIXELS


def choose_faces_torch(dets, keep, min_score: float):
    """Batched :func:`vox3d.fitting.quality.choose_face` on the device.

    dets ``(B, K, 5) float32`` x1, y1, x2, y2 (px), score; keep ``(B, K) bool`` (real
    detections, as :meth:`FaceBoxes.detect_tensor` returns them).  Returns ``index (B,)
    long`` (row of the chosen face, -1 without a detection), ``n_faces (B,) long``
    (detections scoring >= min_score) and ``margin (B,) float64`` (area of the chosen face
    / area of the next largest; inf alone, 0 without a face above min_score).  Same
    arithmetic (float64 areas) and the same order as ``choose_face``: largest area, then
    best score, then first row; without a face above min_score the best-scoring row.
    """
    import torch

    d = dets.double()
    b, k = d.shape[:2]
    area = (d[..., 2] - d[..., 0]).clamp_min(0) * (d[..., 3] - d[..., 1]).clamp_min(0)
    score = d[..., 4]
    good = keep & (score >= min_score)
    n_good = good.sum(1)
    inf = torch.full_like(area, float("inf"))
    # np.lexsort((-score, -area)) as two stable sorts: secondary key first
    o1 = torch.sort(torch.where(good, -score, inf), dim=1, stable=True).indices
    o2 = torch.sort(torch.where(good, -area, inf).gather(1, o1), dim=1, stable=True).indices
    order = o1.gather(1, o2)
    best = order[:, 0]
    any_det = keep.any(1)
    fallback = torch.where(keep, score, torch.full_like(score, -float("inf"))).argmax(1)
    index = torch.where(n_good > 0, best, torch.where(any_det, fallback, torch.full_like(best, -1)))
    rows = torch.arange(b, device=d.device)
    a_best = area[rows, best]
    if k > 1:
        a_second = area[rows, order[:, 1]]
    else:
        a_second = torch.zeros_like(a_best)
    ratio = torch.where(a_second > 0, a_best / a_second, torch.full_like(a_best, float("inf")))
    margin = torch.where(
        n_good >= 2,
        ratio,
        torch.where(n_good == 1, torch.full_like(ratio, float("inf")), torch.zeros_like(ratio)),
    )
    return index, n_good, margin


def crop_windows_torch(roi, image_hw: tuple[int, int], size: int = 120):
    """:func:`vox3d.fitting.quality.crop_windows` on the device: ``roi (N, 4)`` -> ``(N, 4) long``
    r0, r1, c0, c1 (same float64 operations, so the same windows)."""
    import torch

    r = torch.round(roi.double())
    out = []
    for a, b, n in ((r[:, 1], r[:, 3], image_hw[0]), (r[:, 0], r[:, 2], image_hw[1])):
        scale = (b - a) / size
        lo = torch.ceil((0.5 - a) / scale - 0.5)
        hi = torch.floor((n - 0.5 - a) / scale - 0.5) + 1.0
        out += [lo.clamp(0, size), hi.clamp(0, size)]
    return torch.stack(out, 1).long()


def laplacian_variance_torch(crops, windows=None):
    """:func:`vox3d.fitting.quality.laplacian_variance` on the device: ``(N, H, W, 3) uint8`` BGR
    (and optional ``windows (N, 4)`` from :func:`crop_windows_torch`) -> ``(N,) float64``
    (same float64 arithmetic; sums may differ in the last bits)."""
    import torch

    x = crops.double()
    g = 0.114 * x[..., 0] + 0.587 * x[..., 1] + 0.299 * x[..., 2]
    lap = (
        g[:, :-2, 1:-1] + g[:, 2:, 1:-1] + g[:, 1:-1, :-2] + g[:, 1:-1, 2:] - 4.0 * g[:, 1:-1, 1:-1]
    )
    if windows is None:
        lap = lap.reshape(g.shape[0], -1)
        return (lap - lap.mean(1, keepdim=True)).square().mean(1)
    h, w = lap.shape[1:]
    rows = torch.arange(h, device=lap.device)
    cols = torch.arange(w, device=lap.device)
    mr = (rows[None] >= windows[:, :1]) & (rows[None] < windows[:, 1:2] - 2)
    mc = (cols[None] >= windows[:, 2:3]) & (cols[None] < windows[:, 3:4] - 2)
    mask = mr[:, :, None] & mc[:, None, :]
    small = mask.sum((1, 2)) < MIN_BLUR_PIXELS
    mask = mask | small[:, None, None]
    m = mask.double()
    cnt = m.sum((1, 2))
    mean = (lap * m).sum((1, 2)) / cnt
    return ((lap - mean[:, None, None]).square() * m).sum((1, 2)) / cnt
