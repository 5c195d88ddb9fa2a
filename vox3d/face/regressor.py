"""3DDFA-V2's parameter regressor: MobileNet-V1 on 120x120 BGR crops -> 62 parameters.

Network facts (Howard et al. 2017, MobileNet-V1; 3DDFA-V2's variant and the official
``mb05_120x120.pth`` layout): a 3x3/2 conv to ``32 w`` channels, then 13 depthwise-
separable blocks (3x3 depthwise conv + BN + ReLU, 1x1 conv + BN + ReLU) with output
widths 64, 128, 128, 256, 256, 512 x6, 1024, 1024 (times the widen factor ``w``) and
stride 2 at blocks 2, 4, 6 and 12; global average pooling; a linear layer to 62 values.
BatchNorm eps 1e-5, convolutions without bias.

Input: ``(pixel - 127.5) / 128`` of the BGR crop, NCHW float.  Output: whitened
parameters; ``params = raw * std + mean`` with ``std``/``mean`` from
``param_mean_std_62d_120x120.pkl``.  Parameter layout (3DDFA-V2): 12 pose values (a 3x4
scaled rotation | translation, row major), 40 shape, 10 expression coefficients
(see :mod:`vox3d.params`).

Checkpoint keys (``module.`` prefix stripped): the official file names the final layer
``fc_param`` and also carries ``fc_lm`` (a 136-value landmark head used only in
training).  We load ``fc_param`` as our ``fc`` and ignore ``fc_lm`` - both documented
facts of the official file, the way 3DDFA-V2 itself loads it.  Any other unexpected or
missing key, or a wrong shape, is an error naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vox3d import paths
from vox3d.config import default
from vox3d.face.crop import CROP_SIZE
from vox3d.safeload import BadModelFileError, check_state_dict, load_pickle, load_torch

#: Keys of the official checkpoint that are not part of the inference network.
IGNORED_PREFIXES: tuple[str, ...] = ("fc_lm.",)
#: Official alias of the final layer.
FC_ALIASES: dict[str, str] = {"fc_param.weight": "fc.weight", "fc_param.bias": "fc.bias"}

_PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class _DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv + BN + ReLU, 1x1 pointwise conv + BN + ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False)
        self.bn_dw = nn.BatchNorm2d(cin)
        self.conv_sep = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn_sep = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor, cudnn_relu: bool = False) -> torch.Tensor:
        x = _conv_bn_relu(self.conv_dw, self.bn_dw, x, cudnn_relu)
        return _conv_bn_relu(self.conv_sep, self.bn_sep, x, cudnn_relu)


def _conv_bn_relu(
    conv: nn.Conv2d, bn: nn.Module, x: torch.Tensor, cudnn_relu: bool
) -> torch.Tensor:
    """relu(bn(conv(x))) (ReLU in place: the BN output is not needed for backward); with
    ``cudnn_relu`` (BN already folded into the conv, CUDA) one cuDNN conv+bias+ReLU
    kernel instead of separate passes over the activations."""
    if cudnn_relu:
        return torch.cudnn_convolution_relu(
            x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups
        )
    return F.relu(bn(conv(x)), inplace=True)


#: (name, output width before widening, stride) of the 13 separable blocks.
_BLOCKS: tuple[tuple[str, int, int], ...] = (
    ("dw2_1", 64, 1),
    ("dw2_2", 128, 2),
    ("dw3_1", 128, 1),
    ("dw3_2", 256, 2),
    ("dw4_1", 256, 1),
    ("dw4_2", 512, 2),
    ("dw5_1", 512, 1),
    ("dw5_2", 512, 1),
    ("dw5_3", 512, 1),
    ("dw5_4", 512, 1),
    ("dw5_5", 512, 1),
    ("dw5_6", 1024, 2),
    ("dw6", 1024, 1),
)


class MobileNetV1(nn.Module):
    """MobileNet-V1 as in 3DDFA-V2.  ``(B, C, 120, 120)`` float -> ``(B, num_classes)``."""

    def __init__(
        self, widen_factor: float = 0.5, num_classes: int = 62, input_channels: int = 3
    ) -> None:
        super().__init__()
        self.widen_factor = widen_factor
        c0 = int(32 * widen_factor)
        self.conv1 = nn.Conv2d(input_channels, c0, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c0)
        cin = c0
        for name, width, stride in _BLOCKS:
            cout = int(width * widen_factor)
            setattr(self, name, _DepthwiseSeparable(cin, cout, stride))
            cin = cout
        self.fc = nn.Linear(cin, num_classes)
        #: use cuDNN's fused conv+bias+ReLU (set by :func:`enable_cudnn_relu`)
        self.cudnn_relu = False

    def features(self, x: torch.Tensor) -> torch.Tensor:
        fused = self.cudnn_relu
        x = _conv_bn_relu(self.conv1, self.bn1, x, fused)
        for name, _, _ in _BLOCKS:
            x = getattr(self, name)(x, fused)
        return x.mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))

    def taps(
        self, x: torch.Tensor, names: tuple[str, ...] = ()
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Spatially pooled activations ``(B, C_i)`` after the blocks `names` (in block
        order) and after the last block, and the output ``(B, num_classes)``: the
        features the unsupervised variant distils (:func:`vox3d.voice.distill.pkt_loss`)."""
        fused = self.cudnn_relu
        x = _conv_bn_relu(self.conv1, self.bn1, x, fused)
        out = []
        for name, _, _ in _BLOCKS:
            x = getattr(self, name)(x, fused)
            if name in names:
                out.append(x.mean((2, 3)))
        pooled = x.mean((2, 3))
        return [*out, pooled], self.fc(pooled)


def build_mobilenet(
    widen_factor: float = 0.5, num_classes: int = 62, input_channels: int = 3
) -> nn.Module:
    """A fresh :class:`MobileNetV1` (random weights)."""
    return MobileNetV1(widen_factor, num_classes, input_channels)


def _clean_state(obj, source: str) -> dict[str, torch.Tensor]:
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise BadModelFileError(f"{source}: not a regressor checkpoint (no state_dict of tensors)")
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        k = k[len("module.") :] if k.startswith("module.") else k
        if k.startswith(IGNORED_PREFIXES):
            continue
        out[FC_ALIASES.get(k, k)] = v
    return out


def load_mobilenet(
    weights: str | os.PathLike | Mapping[str, torch.Tensor],
    widen_factor: float = 0.5,
    num_classes: int = 62,
) -> MobileNetV1:
    """Build :class:`MobileNetV1` and load a 3DDFA-V2-style checkpoint (eval mode).

    ``weights``: a checkpoint path, or an already loaded checkpoint / state dict.
    Raises :class:`~vox3d.safeload.BadModelFileError` naming ``weights`` if the file is
    missing, truncated, not a weights file, or its keys/shapes do not fit the network
    (e.g. an mb1 checkpoint loaded with ``widen_factor=0.5``).
    """
    model = MobileNetV1(widen_factor, num_classes)
    if isinstance(weights, Mapping):
        obj, weights = weights, "<in-memory checkpoint>"
    else:
        obj = load_torch(weights)
    state = _clean_state(obj, str(weights))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    try:
        check_state_dict(state, expected, str(weights))
    except BadModelFileError as e:
        raise BadModelFileError(
            f"{e} (network: MobileNet-V1 widen_factor={widen_factor}, {num_classes} outputs)"
        ) from None
    model.load_state_dict(state)
    return model.eval()


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A convolution (with bias) equal to ``bn(conv(x))`` for an eval-mode BatchNorm.

    Weights scaled by ``gamma / sqrt(var + eps)``, bias ``beta - mean * scale`` (+ the
    conv's own bias, scaled); computed in float64, stored in the conv's dtype.
    """
    with torch.no_grad():
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        w = conv.weight.double() * scale.view(-1, 1, 1, 1)
        b = bn.bias.double() - bn.running_mean.double() * scale
        if conv.bias is not None:
            b = b + conv.bias.double() * scale
        fused = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            groups=conv.groups,
            bias=True,
        ).to(conv.weight.device)
        fused.weight.copy_(w.to(conv.weight.dtype))
        fused.bias.copy_(b.to(conv.weight.dtype))
    return fused


def fuse_conv_bn(model: MobileNetV1) -> MobileNetV1:
    """Fold every eval-mode BatchNorm into the convolution before it (in place).

    ``y = gamma (conv(x) - mu) / sqrt(var + eps) + beta`` becomes one convolution
    (:func:`fold_batchnorm`); the BatchNorm becomes the identity.  Fewer kernels and
    memory passes at inference; outputs equal the unfused network up to float rounding
    (about 1e-6 in fp32).
    """
    pairs = [(model, "conv1", "bn1")]
    for name, _, _ in _BLOCKS:
        blk = getattr(model, name)
        pairs += [(blk, "conv_dw", "bn_dw"), (blk, "conv_sep", "bn_sep")]
    for mod, cname, bname in pairs:
        bn = getattr(mod, bname)
        if isinstance(bn, nn.BatchNorm2d):
            setattr(mod, cname, fold_batchnorm(getattr(mod, cname), bn))
            setattr(mod, bname, nn.Identity())
    return model


def enable_cudnn_relu(model: MobileNetV1) -> bool:
    """Switch a BN-folded model on a CUDA device to fused cuDNN conv+bias+ReLU kernels.

    Checks the fused path against the plain one on a small random batch and keeps it only
    when it runs and agrees; returns whether it is on.
    """
    if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        raise ValueError("fold the BatchNorms first (fuse_conv_bn)")
    p = next(model.parameters())
    if p.device.type != "cuda":
        return False
    x = torch.randn(2, model.conv1.in_channels, CROP_SIZE, CROP_SIZE, device=p.device).to(p.dtype)
    with torch.no_grad():
        ref = model(x).float()
        model.cudnn_relu = True
        try:
            got = model(x).float()
            ok = bool(torch.allclose(got, ref, rtol=1e-2, atol=1e-2 * float(ref.abs().max())))
        except RuntimeError:
            ok = False
    model.cudnn_relu = ok
    return ok


def load_param_mean_std(
    path: str | os.PathLike | Mapping | tuple, num_params: int = 62
) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, std)``, each ``(num_params,) float32``, from the whitening pickle
    (or from an in-memory ``{"mean", "std"}`` mapping or ``(mean, std)`` pair)."""
    if isinstance(path, tuple):
        d, path = {"mean": path[0], "std": path[1]}, "<in-memory mean/std>"
    elif isinstance(path, Mapping):
        d, path = path, "<in-memory mean/std>"
    else:
        d = load_pickle(path)
    try:
        mean = np.asarray(d["mean"], dtype=np.float32).reshape(-1)
        std = np.asarray(d["std"], dtype=np.float32).reshape(-1)
    except (KeyError, TypeError, ValueError) as e:
        raise BadModelFileError(
            f"{path}: expected a dict with arrays 'mean' and 'std' ({e})"
        ) from e
    if mean.shape != (num_params,) or std.shape != (num_params,):
        raise BadModelFileError(
            f"{path}: mean/std have shapes {mean.shape}/{std.shape}, expected ({num_params},)"
        )
    return mean, std


def normalize_crops(crops: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(B, 120, 120, 3) uint8`` BGR -> ``(B, 3, 120, 120)`` ``(x - 127.5) / 128``.

    Computed directly in ``dtype``: ``x - 127.5`` is a half-integer of at most 8
    significant bits and 1/128 a power of two, so fp32, fp16 and bf16 are all exact.
    The result has channels-last strides (a permuted view of the NHWC input).
    """
    x = crops.permute(0, 3, 1, 2).to(dtype, copy=True)  # never modify the caller's tensor
    return x.sub_(127.5).mul_(1.0 / 128.0)


#: Input channels of the first convolution with ``pad_input`` (a multiple of 8: fp16/bf16
#: tensor-core convolutions want channel counts that are).
PAD_CHANNELS = 8


def pad_first_conv(model: MobileNetV1, channels: int = PAD_CHANNELS) -> MobileNetV1:
    """Give ``model.conv1`` ``channels`` input channels (in place): the extra weights are
    zero, so the output for an input whose extra channels are anything is unchanged."""
    conv = model.conv1
    if conv.in_channels >= channels:
        return model
    new = nn.Conv2d(
        channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, bias=conv.bias is not None,
    ).to(conv.weight.device, conv.weight.dtype)  # fmt: skip
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : conv.in_channels].copy_(conv.weight)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    model.conv1 = new
    return model


def normalize_crops_padded(
    crops: torch.Tensor, dtype: torch.dtype = torch.float32, channels: int = PAD_CHANNELS
) -> torch.Tensor:
    """:func:`normalize_crops` into ``channels`` channels (the rest zero):
    ``(B, 120, 120, 3) uint8`` -> ``(B, channels, 120, 120)`` with channels-last strides."""
    b, h, w, _ = crops.shape
    x = torch.zeros(b, h, w, channels, dtype=dtype, device=crops.device)
    x[..., :3] = crops
    x[..., :3].sub_(127.5).mul_(1.0 / 128.0)
    return x.permute(0, 3, 1, 2)


class Regressor:
    """3DDFA-V2 regressor on batches of 120x120 BGR uint8 crops.

    ``precision``: ``fp32`` (parity), ``fp16`` / ``bf16`` (GPU speed; weights and
    activations in that type).  ``channels_last`` uses the NHWC memory format.
    ``fuse_bn`` folds the BatchNorms into the convolutions (speed; see
    :func:`fuse_conv_bn`); with ``cudnn_relu`` too, on CUDA, conv+bias+ReLU runs as one
    cuDNN kernel (measured slower on the H100 for this network: bench/results).
    ``pad_input`` feeds the first convolution 8 channels (the 3 colour channels and 5
    zero channels, with zero weights): same output, tensor-core friendly on GPUs.
    ``weights`` / ``param_mean_std`` are paths or already loaded objects (a state dict /
    checkpoint dict; a ``{"mean", "std"}`` dict or ``(mean, std)`` pair).
    """

    def __init__(
        self,
        weights: str | os.PathLike | Mapping[str, torch.Tensor] = paths.MB05_WEIGHTS,
        param_mean_std: str | os.PathLike | Mapping | tuple = paths.PARAM_MEAN_STD,
        widen: float = default("fit.regressor.widen"),
        num_params: int = 62,
        device: str | torch.device = "cpu",
        precision: str = default("fit.precision"),
        channels_last: bool = False,
        fuse_bn: bool = False,
        cudnn_relu: bool = False,
        pad_input: bool = False,
    ) -> None:
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(_PRECISIONS)}, got {precision!r}")
        self.device = torch.device(device)
        self.dtype = _PRECISIONS[precision]
        self.num_params = num_params
        self.channels_last = channels_last
        model = load_mobilenet(weights, widen, num_params)
        if fuse_bn:
            model = fuse_conv_bn(model)
        model = model.to(self.device, self.dtype)
        self.pad_input = bool(pad_input)
        if self.pad_input:
            pad_first_conv(model, PAD_CHANNELS)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.cudnn_relu = bool(fuse_bn and cudnn_relu and enable_cudnn_relu(model))
        self.model: nn.Module = model
        mean, std = load_param_mean_std(param_mean_std, num_params)
        self.mean, self.std = mean, std
        self._mean_t = torch.from_numpy(mean).to(self.device)
        self._std_t = torch.from_numpy(std).to(self.device)

    @torch.inference_mode()
    def raw_tensor(self, crops: torch.Tensor) -> torch.Tensor:
        """Network output ``(B, num_params) float32`` on the device for crops
        ``(B, 120, 120, 3) uint8`` (a tensor on any device)."""
        if crops.ndim != 4 or crops.shape[1:] != (CROP_SIZE, CROP_SIZE, 3):
            raise ValueError(
                f"expected crops (B, {CROP_SIZE}, {CROP_SIZE}, 3), got {tuple(crops.shape)}"
            )
        if crops.dtype != torch.uint8:
            raise ValueError(f"expected uint8 crops, got {crops.dtype}")
        return self._forward(crops.to(self.device, non_blocking=True))

    def cuda_graph(self, batch_size: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """A CUDA-graph runner of :meth:`raw_tensor` for up to ``batch_size`` crops.

        Returns ``run(crops (n, 120, 120, 3) uint8 on the device, n <= batch_size) ->
        (n, num_params) float32`` (whitened).  One graph launch replaces ~100 kernel
        launches: it matters for batches whose kernels are short.
        """
        if self.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        static_in = torch.zeros(
            batch_size, CROP_SIZE, CROP_SIZE, 3, dtype=torch.uint8, device=self.device
        )
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(3):  # warm up (cuDNN autotuning, allocations) off the graph
                self._forward(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.no_grad():
            static_out = self._forward(static_in)

        def run(crops: torch.Tensor) -> torch.Tensor:
            n = crops.shape[0]
            if n > batch_size:
                raise ValueError(f"{n} crops for a graph of batch {batch_size}")
            static_in[:n].copy_(crops, non_blocking=True)
            graph.replay()
            return static_out[:n].clone()

        return run

    def _forward(self, crops: torch.Tensor) -> torch.Tensor:
        if self.pad_input:
            x = normalize_crops_padded(crops, self.dtype, PAD_CHANNELS)
        else:
            x = normalize_crops(crops, self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        else:
            x = x.contiguous()
        return self.model(x).float()

    @torch.inference_mode()
    def predict_tensor(self, crops: torch.Tensor) -> torch.Tensor:
        """De-whitened parameters ``(B, num_params) float32`` on the device."""
        return self.dewhiten(self.raw_tensor(crops))

    def dewhiten(self, raw: torch.Tensor) -> torch.Tensor:
        """Parameters ``raw * std + mean`` ``(B, num_params) float32`` of network outputs on
        the device (e.g. of a :meth:`cuda_graph` runner)."""
        return raw * self._std_t + self._mean_t

    def raw(self, crops_bgr_uint8: np.ndarray) -> np.ndarray:
        """Network output (whitened) ``(B, num_params) float32`` for ``(B, 120, 120, 3)``
        uint8 BGR crops (a single ``(120, 120, 3)`` crop is treated as B = 1)."""
        c = np.asarray(crops_bgr_uint8)
        if c.ndim == 3:
            c = c[None]
        if c.dtype != np.uint8:
            raise ValueError(f"expected uint8 crops, got {c.dtype}")
        return self.raw_tensor(torch.from_numpy(np.ascontiguousarray(c))).cpu().numpy()

    def predict(self, crops_bgr_uint8: np.ndarray) -> np.ndarray:
        """3DDFA-V2 parameters ``(B, num_params) float32`` (``raw * std + mean``)."""
        return self.raw(crops_bgr_uint8) * self.std + self.mean
