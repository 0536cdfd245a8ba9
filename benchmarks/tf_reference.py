"""TensorFlow reference step times: the paper's networks in Keras, timed on this machine next to PyTorch.

Korus & Memon ("Neural Imaging Pipelines - the Scourge or Hope of Forensics?") trained their networks with a
TensorFlow toolbox. Its step times as reported on a 2-core CPU (TensorFlow 2.15.1 CPU, 2 threads) are listed
in ``docs/benchmarks.md`` ("The authors' toolbox"). This script re-implements the same networks in
Keras (written for this project from the toolbox's documented architecture and the paper, layer by layer as
``neuralimaging.acquisition.nip`` and ``neuralimaging.forensics.fan`` build them; not the toolbox's code) and
times one Adam step of each inside a ``tf.function`` (the toolbox ran compiled graphs; ``--eager`` times the
same step without it), so PyTorch and TensorFlow can be compared on the same machine and load:

- ``djpeg``: differentiable JPEG q50 (sin rounding, 4:4:4) forward + backward, 20 x 128 x 128 x 3
  (toolbox: 0.042 s compiled);
- ``nip``: NIP training step, batch 20 of 64x64x4 RAW -> 128x128x3, L2 loss on the [0, 255] scale, for INet,
  UNet and DNet (toolbox: 0.022 / 0.46 / 1.37 s);
- ``fan``: FAN training step, batch 100 of 64x64x3, 5 classes, cross-entropy, Bayar-Stamm constrained first
  convolution (constraint applied in the forward pass) (toolbox: 0.59 s);
- ``joint``: NIP (trainable) -> native / sharpen / gaussian / jpeg q80 / resample -> 2x2 average pooling ->
  dJPEG q50 -> FAN, cross-entropy + 0.1 x NIP L2, batch 20 (toolbox: 0.96 / 1.42 / 2.26 s).

Trainable parameter counts are checked against the paper's (INet 321, UNet 7,760,268, DNet 493,976,
FAN 1,341,990); the script stops if one differs.

TensorFlow is not a project dependency: run it from a separate virtual environment, by hand (never in the
test suite)::

    python -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu==2.15.1
    /tmp/tfvenv/bin/python benchmarks/tf_reference.py                          # everything, 2 threads
    /tmp/tfvenv/bin/python benchmarks/tf_reference.py --parts nip --nips unet --steps 20 --json tf.json
    /tmp/tfvenv/bin/python benchmarks/tf_reference.py --steps 1 --warmup 1     # smoke test
    /tmp/tfvenv/bin/python benchmarks/tf_reference.py --eager                  # without tf.function

Prints a table (median and minimum seconds per step over ``--steps`` after ``--warmup``, steps per second,
the toolbox's time and its ratio to ours) and, with ``--json PATH``, writes the rows and the settings as JSON.
Data are random tensors (fixed seed); float32 throughout; NHWC (TensorFlow's CPU layout). The load average
is printed: the dev CPU is shared. ``--onednn on|off`` sets ``TF_ENABLE_ONEDNN_OPTS``; by default TensorFlow
decides (off on CPUs without AVX512, as the dev CPU), and the header and the JSON say which was used. With
oneDNN on, TensorFlow's grappler may log a harmless "remapper failed" line for UNet (it skips one fusion).

Known differences from the toolbox (none of them changes the amount of arithmetic noticeably):
the dJPEG level shift is 128 (the toolbox's 127 was a bug); sharpening rescales RGB by V'/V, i.e. HSV with
H and S kept (the toolbox's HSV round trip disturbed them); borders are replicate-padded as in our PyTorch
code; softmax is applied once (inside the cross-entropy); DNet's batch norm runs in training mode for NIP
training and in inference mode in the joint step (as ``train_manipulation`` does); the optimizer is Keras'
Adam without XLA (``jit_compile=False``), the toolbox's graphs were not XLA-compiled either.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import numpy as np

PAPER_PARAMS = {"inet": 321, "unet": 7_760_268, "dnet": 493_976, "fan": 1_341_990}
TOOLBOX_S = {  # the toolbox's reported step times (docs/benchmarks.md), TF 2.15.1 CPU, 2 threads, medians
    ("djpeg", "-"): 0.042,
    ("nip", "inet"): 0.022,
    ("nip", "unet"): 0.46,
    ("nip", "dnet"): 1.37,
    ("fan", "-"): 0.59,
    ("joint", "inet"): 0.96,
    ("joint", "unet"): 1.42,
    ("joint", "dnet"): 2.26,
}
LEAKY = 0.2
LAMBDA_NIP = 0.1

# INet's initial gamma correction: a 1 -> 4 (tanh) -> 1 network fitted to x ** (1 / 2.2), used per channel
# (the constants of neuralimaging.acquisition.nip.GAMMA_NET).
GAMMA_NET = {
    "w1": [7.320966881339945, 3.4960484420319466, 1.3340248610638543, 4.773641075163849],
    "b1": [0.6567792129925698, 0.4093719839982604, -0.5338750127180936, 0.5208095233730675],
    "w2": [0.45853339020269823, 0.1645249219152519, 0.492695504184548, 0.06684247479743444],
    "b2": [-0.023242458189686017],
}

# Standard IJG (JPEG Annex K) quantization tables, row-major.
IJG_LUMA = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
]
IJG_CHROMA = [
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
]

tf = None  # imported in main(), after the thread settings are known


# ------------------------------------------------------------------------------------------- building blocks


def clip_ste(x):
    """Clip to [0, 1], identity gradient (the later toolbox's straight-through clipping)."""
    return x + tf.stop_gradient(tf.clip_by_value(x, 0.0, 1.0) - x)


def replicate_pad(x, p):
    """Replicate-pad the spatial dimensions of NHWC ``x`` by ``p`` pixels (TF's pad has no 'edge' mode)."""
    x = tf.concat([tf.repeat(x[:, :1], p, axis=1), x, tf.repeat(x[:, -1:], p, axis=1)], axis=1)
    return tf.concat([tf.repeat(x[:, :, :1], p, axis=2), x, tf.repeat(x[:, :, -1:], p, axis=2)], axis=2)


def bayer_weight():
    """Fixed 1x1 conv 4 -> 12 (HWIO) that, followed by ``depth_to_space(2)``, places each RGGB sample at its
    site of a zero-filled RGB mosaic. TF's depth_to_space reads colour ``c`` at sub-pixel ``(dy, dx)`` from
    channel ``(2 dy + dx) * 3 + c``; the stack holds R (0, 0), G (0, 1), G (1, 0), B (1, 1)."""
    w = np.zeros((1, 1, 4, 12), np.float32)
    for k, (c, dy, dx) in {0: (0, 0, 0), 1: (1, 0, 1), 2: (1, 1, 0), 3: (2, 1, 1)}.items():
        w[0, 0, k, (2 * dy + dx) * 3 + c] = 1.0
    return w


def bilinear_weight():
    """The 5x5 demosaicing kernel (HWIO, 3 -> 3) initialized as bilinear interpolation."""
    g = np.array([[0, 0.25, 0], [0.25, 1, 0.25], [0, 0.25, 0]])
    rb = np.array([[0.25, 0.5, 0.25], [0.5, 1, 0.5], [0.25, 0.5, 0.25]])
    w = np.zeros((5, 5, 3, 3), np.float32)
    for c, kernel in enumerate((rb, g, rb)):
        w[1:4, 1:4, c, c] = kernel
    return w


def gamma_weights():
    """Block-diagonal 3 -> 12 -> 3 gamma layers from GAMMA_NET (kernels HWIO and biases)."""
    w1, b1, w2, b2 = (np.array(GAMMA_NET[k], np.float32) for k in ("w1", "b1", "w2", "b2"))
    h = len(w1)
    k1, k2 = np.zeros((1, 1, 3, 3 * h), np.float32), np.zeros((1, 1, 3 * h, 3), np.float32)
    for c in range(3):
        k1[0, 0, c, c * h : (c + 1) * h] = w1
        k2[0, 0, c * h : (c + 1) * h, c] = w2
    return k1, np.tile(b1, 3), k2, np.full(3, b2[0], np.float32)


def trainable_count(model) -> int:
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


def make_models():
    """Define the Keras model classes (needs ``tf`` imported)."""
    layers = tf.keras.layers

    class INet(tf.keras.Model):
        """Fixed sample placement + depth-to-space, 5x5 demosaicing (no bias, mirrored mosaic borders), 1x1
        colour matrix (no bias), 1x1 3 -> 12 tanh, 1x1 12 -> 3, clip. 321 trainable parameters."""

        def __init__(self):
            super().__init__(name="inet")
            self.bayer = tf.constant(bayer_weight())
            k1, b1, k2, b2 = gamma_weights()
            init = tf.keras.initializers.Constant
            self.demosaic = layers.Conv2D(3, 5, use_bias=False, kernel_initializer=init(bilinear_weight()))
            self.color = layers.Conv2D(3, 1, use_bias=False, kernel_initializer=init(np.eye(3).reshape(1, 1, 3, 3)))
            self.gamma_hidden = layers.Conv2D(12, 1, activation="tanh", kernel_initializer=init(k1),
                                              bias_initializer=init(b1))
            self.gamma_out = layers.Conv2D(3, 1, kernel_initializer=init(k2), bias_initializer=init(b2))

        def call(self, x, training=False):
            mosaic = tf.nn.depth_to_space(tf.nn.conv2d(x, self.bayer, 1, "VALID"), 2)
            # reflect padding of 2 at full resolution keeps every site's colour (as nip.mirror_pad_rggb)
            rgb = self.color(self.demosaic(tf.pad(mosaic, [[0, 0], [2, 2], [2, 2], [0, 0]], "REFLECT")))
            return clip_ste(self.gamma_out(self.gamma_hidden(rgb)))

    def double_conv(c):
        return [layers.Conv2D(c, 3, padding="same"), layers.LeakyReLU(LEAKY),
                layers.Conv2D(c, 3, padding="same"), layers.LeakyReLU(LEAKY)]

    class UNet(tf.keras.Model):
        """5 levels of two 3x3 convs + leaky ReLU (0.2), 32..512 channels, 2x2 max pooling; decoder: 2x2
        stride-2 transposed conv (no bias), skip concatenation, two 3x3 convs; 1x1 conv to 12,
        depth-to-space, clip. 7,760,268 trainable parameters (input sides must be multiples of 16)."""

        def __init__(self, width=32):
            super().__init__(name="unet")
            c = [width * 2**i for i in range(5)]
            self.down = [double_conv(c[i]) for i in range(5)]
            self.pool = layers.MaxPool2D(2)
            self.up = [layers.Conv2DTranspose(c[i - 1], 2, strides=2, use_bias=False) for i in range(4, 0, -1)]
            self.dec = [double_conv(c[i - 1]) for i in range(4, 0, -1)]
            self.head = layers.Conv2D(12, 1)

        def call(self, x, training=False):
            skips = []
            for i, block in enumerate(self.down):
                if i:
                    x = self.pool(x)
                for layer in block:
                    x = layer(x)
                skips.append(x)
            skips.pop()
            for up, block in zip(self.up, self.dec):
                x = tf.concat([up(x), skips.pop()], axis=-1)
                for layer in block:
                    x = layer(x)
            return clip_ste(tf.nn.depth_to_space(self.head(x), 2))

    class DNet(tf.keras.Model):
        """14 x (3x3 valid conv 64, no bias, + BN + ReLU + reflection pad 1), a 15th to 12 channels,
        depth-to-space; concatenated with the mosaic as RGB (fixed 1x1 conv 4 -> 12 + depth-to-space); 3x3
        valid conv 64 + ReLU + reflection pad; 1x1 conv to 3 (no bias); clip. 493,976 trainable parameters."""

        def __init__(self, width=64, depth=14):
            super().__init__(name="dnet")
            self.convs = [layers.Conv2D(width, 3, use_bias=False) for _ in range(depth)] + [
                layers.Conv2D(12, 3, use_bias=False)]
            self.bns = [layers.BatchNormalization(epsilon=1e-5, momentum=0.9) for _ in self.convs]
            self.bayer = tf.constant(bayer_weight())
            self.fuse = layers.Conv2D(width, 3, activation="relu")
            self.out = layers.Conv2D(3, 1, use_bias=False)

        @staticmethod
        def _pad(x):
            return tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], "REFLECT")

        def call(self, x, training=False):
            f = x
            for conv, bn in zip(self.convs, self.bns):
                f = self._pad(tf.nn.relu(bn(conv(f), training=training)))
            fconv = tf.nn.depth_to_space(f, 2)
            fbayer = tf.nn.depth_to_space(tf.nn.conv2d(x, self.bayer, 1, "VALID"), 2)
            return clip_ste(self.out(self._pad(self.fuse(tf.concat([fconv, fbayer], axis=-1)))))

    class ConstrainedConv(layers.Layer):
        """Bayar-Stamm residual filters, 5x5 3 -> 3, no bias: the centre tap is ``-scale`` and the others are
        divided by their sum so that they add up to ``scale``, applied to the free weights in every forward
        pass (225 trainable parameters, the centres included, as in the paper's count)."""

        def __init__(self, channels=3, size=5, scale=1.0):
            super().__init__(name="constrained")
            self.channels, self.size, self.scale = channels, size, float(scale)

        def build(self, input_shape):
            k, cin = self.size, int(input_shape[-1])
            self.kernel = self.add_weight("kernel", (k, k, cin, self.channels),
                                          initializer=tf.keras.initializers.RandomUniform(0.5, 1.5))
            mask = np.ones((k, k, 1, 1), np.float32)
            mask[k // 2, k // 2] = 0.0
            self.mask = tf.constant(mask)

        def call(self, x):
            rest = self.kernel * self.mask
            total = tf.reduce_sum(rest, axis=(0, 1), keepdims=True)
            total = tf.where(tf.abs(total) < 1e-6, tf.where(total < 0, -1e-6, 1e-6), total)
            kernel = self.scale * (rest / total - (1.0 - self.mask))
            return tf.nn.conv2d(x, kernel, 1, "SAME")

    class FAN(tf.keras.Model):
        """Constrained 5x5 conv 3 -> 3; 4 x [5x5 conv (32, 64, 128, 256) + leaky ReLU + 2x2 max pool]; 1x1
        conv 256 + leaky ReLU; global average pooling; FC 512, FC 128 (leaky ReLU); FC to logits.
        1,341,990 trainable parameters for 5 classes."""

        def __init__(self, n_classes=5):
            super().__init__(name="fan")
            def he():
                return tf.keras.initializers.HeNormal(seed=0)

            self.residual = ConstrainedConv()
            self.convs = [layers.Conv2D(c, 5, padding="same", kernel_initializer=he()) for c in (32, 64, 128, 256)]
            self.pool = layers.MaxPool2D(2)
            self.mix = layers.Conv2D(256, 1, kernel_initializer=he())
            self.fc = [layers.Dense(512, kernel_initializer=he()), layers.Dense(128, kernel_initializer=he())]
            self.logits = layers.Dense(n_classes, kernel_initializer=he())

        def call(self, x, training=False):
            x = self.residual(x)
            for conv in self.convs:
                x = self.pool(tf.nn.leaky_relu(conv(x), LEAKY))
            x = tf.reduce_mean(tf.nn.leaky_relu(self.mix(x), LEAKY), axis=(1, 2))
            for fc in self.fc:
                x = tf.nn.leaky_relu(fc(x), LEAKY)
            return self.logits(x)

    return {"inet": INet, "unet": UNet, "dnet": DNet, "fan": FAN}


# --------------------------------------------------------------------------------- dJPEG and manipulations


def quant_table(base, quality):
    """libjpeg's quality scaling: s = 5000 / q (q < 50) or 200 - 2q; T = floor((T0 s + 50) / 100) in [1, 255]."""
    s = 5000.0 / quality if quality < 50 else 200.0 - 2.0 * quality
    return np.clip(np.floor((np.array(base, np.float64) * s + 50.0) / 100.0), 1, 255).reshape(8, 8)


class DJPEG:
    """Differentiable JPEG: RGB x255 -> JFIF YCbCr, level shift, 8x8 float DCT as D X D^T, divide by the
    table, sin rounding ``x - sin(2 pi x) / (2 pi)``, multiply back, inverse DCT, RGB, /255, clip. 4:4:4."""

    def __init__(self, quality):
        n = np.arange(8)
        d = np.cos((2 * n[None, :] + 1) * n[:, None] * np.pi / 16) * 0.5
        d[0] /= math.sqrt(2.0)
        self.d = tf.constant(d, tf.float32)
        tables = np.stack([quant_table(IJG_LUMA, quality)] + [quant_table(IJG_CHROMA, quality)] * 2)
        self.q = tf.constant(tables.reshape(1, 1, 1, 3, 8, 8), tf.float32)  # (N, Hb, Wb, C, 8, 8)
        self.to_ycc = tf.constant([[0.299, -0.168735892, 0.5], [0.587, -0.331264108, -0.418687589],
                                   [0.114, 0.5, -0.081312411]], tf.float32)
        self.to_rgb = tf.constant([[1.0, 1.0, 1.0], [0.0, -0.344136286, 1.772], [1.402, -0.714136286, 0.0]],
                                  tf.float32)

    def __call__(self, rgb):
        n, h, w = tf.shape(rgb)[0], rgb.shape[1], rgb.shape[2]
        ycc = tf.tensordot(rgb * 255.0, self.to_ycc, 1) + tf.constant([0.0, 128.0, 128.0]) - 128.0
        blocks = tf.transpose(tf.reshape(ycc, [n, h // 8, 8, w // 8, 8, 3]), [0, 1, 3, 5, 2, 4])
        coef = tf.matmul(tf.matmul(self.d, blocks), self.d, transpose_b=True) / self.q
        coef = (coef - tf.sin(2.0 * math.pi * coef) / (2.0 * math.pi)) * self.q
        blocks = tf.matmul(tf.matmul(self.d, coef, transpose_a=True), self.d)
        ycc = tf.reshape(tf.transpose(blocks, [0, 1, 4, 2, 5, 3]), [n, h, w, 3]) + 128.0
        rgb = tf.tensordot(ycc - tf.constant([0.0, 128.0, 128.0]), self.to_rgb, 1)
        return tf.clip_by_value(rgb / 255.0, 0.0, 1.0)


def depthwise(x, kernel):
    """Same-size depthwise filtering of NHWC ``x`` with a ``(k, k)`` kernel, replicate borders."""
    k, c = kernel.shape[0], x.shape[-1]
    weight = tf.constant(np.tile(kernel.reshape(k, k, 1, 1), (1, 1, c, 1)), tf.float32)
    return tf.nn.depthwise_conv2d(replicate_pad(x, k // 2), weight, [1, 1, 1, 1], "VALID")


def make_manipulations():
    """The paper's classes in order: native, sharpen, gaussian, jpg (q80, sin), resample (1:2 and back)."""
    lap = np.array([[1, 4, 1], [4, -20, 4], [1, 4, 1]], np.float64) / 6.0
    r = np.arange(5) - 2.0
    g = np.exp(-(r**2) / (2 * 0.83**2))
    g = np.outer(g, g) / np.outer(g, g).sum()
    jpeg80 = DJPEG(80)

    def native(x):
        return x

    def gaussian(x):
        return depthwise(x, g)

    def sharpen(x):  # unsharp mask of V = max(R, G, B); RGB rescaled by V'/V (H and S kept)
        v = tf.reduce_max(x, axis=-1, keepdims=True)
        v_new = tf.clip_by_value(v - depthwise(v, lap), 0.0, 1.0)
        dark = v <= 1e-8
        ratio = v_new / tf.where(dark, tf.ones_like(v), v)
        return tf.clip_by_value(tf.where(dark, tf.broadcast_to(v_new, tf.shape(x)), x * ratio), 0.0, 1.0)

    def resample(x):
        h, w = x.shape[1], x.shape[2]
        down = tf.image.resize(x, [h // 2, w // 2], "bilinear")
        return tf.clip_by_value(tf.image.resize(down, [h, w], "bilinear"), 0.0, 1.0)

    return [native, sharpen, gaussian, jpeg80, resample]


# --------------------------------------------------------------------------------------------------- steps


def adam():
    return tf.keras.optimizers.Adam(1e-4, jit_compile=False)


def check_params(name, model):
    count = trainable_count(model)
    if count != PAPER_PARAMS[name]:
        raise SystemExit(f"{name}: {count:,} trainable parameters, the paper's is {PAPER_PARAMS[name]:,}")
    return count


def make_step(part, name, classes, args):
    """A step function (graph or eager) and its inputs for one row, plus the checked parameter counts."""
    rng = np.random.default_rng(0)
    compile_ = (lambda f: f) if args.eager else tf.function
    counts = {}
    if part == "djpeg":
        jpeg = DJPEG(50)
        x = tf.constant(rng.random((args.nip_batch, 2 * args.patch, 2 * args.patch, 3), np.float32))

        @compile_
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(jpeg(x))
            return tape.gradient(loss, x)

        return step, (x,), counts
    if part in ("nip", "joint"):
        nip = classes[name]()
        nip(tf.zeros((1, args.patch, args.patch, 4)))
        counts[name] = check_params(name, nip)
        x = tf.constant(rng.random((args.nip_batch, args.patch, args.patch, 4), np.float32))
        y = tf.constant(rng.random((args.nip_batch, 2 * args.patch, 2 * args.patch, 3), np.float32))
    if part in ("fan", "joint"):
        fan = classes["fan"]()
        fan(tf.zeros((1, args.patch, args.patch, 3)))
        counts["fan"] = check_params("fan", fan)
    if part == "nip":
        opt = adam()

        @compile_
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(nip(x, training=True) - y)) * 255.0**2
            grads = tape.gradient(loss, nip.trainable_variables)
            opt.apply_gradients(zip(grads, nip.trainable_variables))
            return loss

        return step, (x, y), counts
    if part == "fan":
        opt = adam()
        xf = tf.constant(rng.random((args.fan_batch, args.patch, args.patch, 3), np.float32))
        labels = tf.constant(rng.integers(0, 5, args.fan_batch), tf.int32)
        ce = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        @compile_
        def step(x, labels):
            with tf.GradientTape() as tape:
                loss = ce(labels, fan(x, training=True))
            grads = tape.gradient(loss, fan.trainable_variables)
            opt.apply_gradients(zip(grads, fan.trainable_variables))
            return loss

        return step, (xf, labels), counts
    # joint: NIP -> 5 classes -> 2x2 average pooling -> dJPEG q50 -> FAN; CE + lambda * NIP L2 (x 255^2)
    opt = adam()
    manipulations = make_manipulations()
    channel_jpeg = DJPEG(50)
    labels = tf.constant(np.repeat(np.arange(len(manipulations)), args.nip_batch), tf.int32)
    ce = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    variables = nip.trainable_variables + fan.trainable_variables

    @compile_
    def step(x, y):
        with tf.GradientTape() as tape:
            rgb = nip(x, training=False)  # batch norm keeps its statistics, as train_manipulation's eval()
            batch = tf.concat([m(rgb) for m in manipulations], axis=0)
            shared = channel_jpeg(tf.nn.avg_pool2d(batch, 2, 2, "VALID"))
            mse = tf.reduce_mean(tf.square(rgb - y)) * 255.0**2
            loss = ce(labels, fan(shared, training=True)) + LAMBDA_NIP * mse
        grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads, variables))
        return loss

    return step, (x, y), counts


def run(step, inputs, warmup, steps):
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        out = step(*inputs)
        _ = [t.numpy() for t in tf.nest.flatten(out)]  # wait for the result
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    global tf
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="TF intra- and inter-op threads")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--parts", default="djpeg,nip,fan,joint", help="comma-separated: djpeg, nip, fan, joint")
    parser.add_argument("--nips", default="inet,unet,dnet")
    parser.add_argument("--patch", type=int, default=64, help="RAW patch side (RGGB pixels); FAN input side")
    parser.add_argument("--nip-batch", type=int, default=20, help="NIP, dJPEG and joint batch")
    parser.add_argument("--fan-batch", type=int, default=100)
    parser.add_argument("--eager", action="store_true", help="time eagerly instead of in a tf.function")
    parser.add_argument("--onednn", choices=("default", "on", "off"), default="default",
                        help="TF_ENABLE_ONEDNN_OPTS (default: TensorFlow's choice, off on CPUs without AVX512)")
    parser.add_argument("--json", metavar="PATH", help="write the rows and settings as JSON")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.onednn != "default":  # read when TensorFlow loads
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if args.onednn == "on" else "0"
    import tensorflow
    from tensorflow.python.util import _pywrap_util_port

    tf = tensorflow
    onednn = bool(_pywrap_util_port.IsMklEnabled())
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    tf.random.set_seed(0)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    nips = [n.strip().lower() for n in args.nips.split(",") if n.strip()]
    unknown = set(parts) - {"djpeg", "nip", "fan", "joint"} or set(nips) - {"inet", "unet", "dnet"}
    if unknown:
        parser.error(f"unknown part or NIP: {', '.join(sorted(unknown))}")
    if args.patch % 16:
        parser.error("--patch must be a multiple of 16 (UNet's pooling, the FAN's, 8x8 JPEG blocks)")
    classes = make_models()
    mode = "eager" if args.eager else "graph"
    load_before = os.getloadavg()
    print(f"tensorflow {tf.__version__}, {args.threads} threads, {mode}, oneDNN {'on' if onednn else 'off'}, "
          f"load average {load_before[0]:.2f}")
    print(f"{'part':<7}{'net':<6}{'params':>11}{'median s':>10}{'min s':>8}{'it/s':>8}{'toolbox s':>11}"
          f"{'toolbox/ours':>14}", flush=True)
    rows, counts = [], {}
    for part in parts:
        for name in (nips if part in ("nip", "joint") else ["-"]):
            step, inputs, row_counts = make_step(part, name, classes, args)
            counts.update(row_counts)
            times = run(step, inputs, args.warmup, args.steps)
            median = statistics.median(times)
            toolbox = TOOLBOX_S.get((part, name))
            params = sum(row_counts.values()) or None  # joint: NIP + FAN
            rows.append({"part": part, "net": name, "mode": mode, "onednn": onednn, "trainable_params": params,
                         "median_s": median, "min_s": min(times), "it_per_s": 1 / median, "times_s": times,
                         "toolbox_s": toolbox, "toolbox_over_ours": toolbox / median if toolbox else None})
            ptxt = f"{params:,}" if params else "-"
            ttxt = f"{toolbox:11.3f}{toolbox / median:13.2f}x" if toolbox else f"{'-':>11}{'-':>14}"
            print(f"{part:<7}{name:<6}{ptxt:>11}{median:10.3f}{min(times):8.3f}{1 / median:8.2f}{ttxt}", flush=True)
            tf.keras.backend.clear_session()
    load_after = os.getloadavg()
    print("trainable parameters (= the paper's): " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; median over {args.steps} steps "
          f"after {args.warmup} warm-up")
    if args.json:
        meta = {"tensorflow": tf.__version__, "python": sys.version.split()[0], "machine": platform.machine(),
                "threads": args.threads, "mode": mode, "onednn": onednn, "steps": args.steps, "warmup": args.warmup,
                "patch": args.patch, "nip_batch": args.nip_batch, "fan_batch": args.fan_batch,
                "trainable_params": counts, "loadavg_before": load_before, "loadavg_after": load_after}
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
